"""Property: a damaged checkpoint (card.json or model.safetensors truncated, byte-flipped, or a card field
replaced by any JSON value) loads the saved model exactly, or gives a CheckpointError naming the file; never
another exception, and never weights other than the saved ones without trust_unverified."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from medrobust.errors import CheckpointError
from medrobust.models import build_model, load_checkpoint, save_checkpoint

from ._fuzz import accepted, assert_names, fuzz_settings, mutate, mutations

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
CARD_KEYS = ["format", "architecture", "kwargs", "classes", "fs", "input_shape", "weights_sha256", "units",
             "training", "data"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("cnn1", in_channels=1, input_length=187, num_classes=3)
    folder = save_checkpoint(model, tmp_path_factory.mktemp("ck") / "ck", classes=["a", "b", "c"], fs=100.0,
                             input_shape=(1, 187))
    x = torch.randn(2, 1, 187)
    with torch.no_grad():
        logits = model.eval()(x)
    files = {n: (folder / n).read_bytes() for n in ("card.json", "model.safetensors")}
    return files, x, logits


def _load(files: dict[str, bytes], trust: bool) -> torch.nn.Module:
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_checkpoint(tmp, trust_unverified=trust)


def _check(files: dict[str, bytes], saved_x: torch.Tensor, saved_logits: torch.Tensor, trust: bool) -> None:
    try:
        model = _load(files, trust)
    except Exception as exc:  # noqa: BLE001 - the property is about which exceptions escape
        assert isinstance(exc, CheckpointError) or not trust, exc
        assert_names(exc, "card.json", "model.safetensors", "checkpoint")
        return
    accepted()
    if model.card["weights_verified"]:  # verified: exactly the saved model
        with torch.no_grad():
            assert torch.equal(model(saved_x), saved_logits)
    else:
        assert trust


@fuzz_settings(10)
@given(name=st.sampled_from(["card.json", "model.safetensors"]), ops=mutations(), trust=st.booleans())
def test_damaged_checkpoint_file(saved, name: str, ops: list, trust: bool) -> None:
    files, x, logits = saved
    _check({**files, name: mutate(files[name], ops, head=512 if ops[0][1] < 0.5 else None)}, x, logits, trust)


@fuzz_settings(15)
@given(key=st.sampled_from(CARD_KEYS), value=json_values, trust=st.booleans())
def test_card_field_replaced_by_any_json_value(saved, key: str, value: object, trust: bool) -> None:
    files, x, logits = saved
    card = json.loads(files["card.json"])
    card[key] = value
    _check({**files, "card.json": json.dumps(card).encode()}, x, logits, trust)
