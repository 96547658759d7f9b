"""Issue 21: weights are loaded only when their SHA-256 matches the card, unless trust is explicit and recorded."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
import torch

from medrobust.errors import CheckpointError
from medrobust.models import build_model, load_checkpoint, save_checkpoint
from medrobust.models.checkpoint import UnverifiedWeightsWarning


def _tampered_without_hash(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A checkpoint whose weights were replaced by other (valid) weights and whose card hash was removed."""
    torch.manual_seed(0)
    ck = save_checkpoint(build_model("mlp1"), tmp_path / "ck", classes="NSVFQ", fs=125.0, input_shape=(1, 187))
    torch.manual_seed(1)
    other = build_model("mlp1")
    save_checkpoint(other, tmp_path / "other", classes="NSVFQ", fs=125.0, input_shape=(1, 187))
    (ck / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    card = json.loads((ck / "card.json").read_text())
    del card["weights_sha256"]
    (ck / "card.json").write_text(json.dumps(card))
    return ck, other


def test_tampered_weights_without_hash_are_refused(tmp_path: Path) -> None:
    ck, _ = _tampered_without_hash(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ck)
    msg = str(info.value)
    assert "\n" not in msg and "card.json" in msg and "records no weights_sha256" in msg
    assert "trust_unverified=True" in msg and "--trust-unverified" in msg


def test_trusted_unverified_load_warns_and_records_the_actual_hash(tmp_path: Path) -> None:
    ck, other = _tampered_without_hash(tmp_path)
    with pytest.warns(UnverifiedWeightsWarning, match="UNVERIFIED"):
        model = load_checkpoint(ck, trust_unverified=True)
    actual = hashlib.sha256((ck / "model.safetensors").read_bytes()).hexdigest()
    assert model.card["weights_verified"] is False
    assert model.card["weights_sha256"] == actual
    assert model.card["weights_sha256_recorded"] is None
    x = torch.randn(3, 1, 187)
    assert torch.equal(model(x), other.eval()(x))  # what was loaded is the replacement, and the card says so


def test_hash_mismatch_refused_then_trusted_records_both_hashes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ck = save_checkpoint(build_model("mlp1"), tmp_path / "ck", classes="NSVFQ", fs=125.0, input_shape=(1, 187))
    recorded = json.loads((ck / "card.json").read_text())["weights_sha256"]
    torch.manual_seed(2)
    save_checkpoint(build_model("mlp1"), tmp_path / "b", classes="NSVFQ", fs=125.0, input_shape=(1, 187))
    (ck / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="does not match its card"):
        load_checkpoint(ck)
    with pytest.warns(UnverifiedWeightsWarning):
        model = load_checkpoint(ck, trust_unverified=True)
    assert model.card["weights_verified"] is False
    assert model.card["weights_sha256_recorded"] == recorded != model.card["weights_sha256"]


def test_verified_load_records_verified_and_issues_no_warning(tmp_path: Path) -> None:
    ck = save_checkpoint(build_model("mlp1"), tmp_path / "ck", classes="NSVFQ", fs=125.0, input_shape=(1, 187))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_checkpoint(ck, trust_unverified=True)  # trust is not needed and changes nothing
    assert model.card["weights_verified"] is True
    assert model.card["weights_sha256"] == hashlib.sha256((ck / "model.safetensors").read_bytes()).hexdigest()
    assert "weights_sha256_recorded" not in model.card


@pytest.mark.parametrize("key, value, what", [
    ("kwargs", [1, 2], "'kwargs' must be a mapping"),
    ("input_shape", "1x187", "'input_shape' must be a list of positive integers"),
    ("classes", "NSVFQ", "'classes' must be a list"),
    ("fs", "125", "'fs' must be a sampling rate"),
    ("weights_sha256", 12, "'weights_sha256' must be a SHA-256"),
])
def test_card_field_types_are_checked(tmp_path: Path, key: str, value: object, what: str) -> None:
    ck = save_checkpoint(build_model("mlp1"), tmp_path / "ck", classes="NSVFQ", fs=125.0, input_shape=(1, 187))
    card = json.loads((ck / "card.json").read_text())
    card[key] = value
    (ck / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=what):
        load_checkpoint(ck)


def test_card_kwargs_that_break_the_constructor_are_a_checkpoint_error(tmp_path: Path) -> None:
    ck = save_checkpoint(build_model("cnn1"), tmp_path / "ck", classes="NSVFQ", fs=125.0, input_shape=(1, 187))
    card = json.loads((ck / "card.json").read_text())
    card["kwargs"] = {"input_length": -5}
    (ck / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="card.json"):
        load_checkpoint(ck)


@pytest.mark.parametrize("kwargs, match", [
    ({"channels": -1}, r"model 'cnn1': invalid arguments \{'channels': -1\}"),   # torch's error, named
    ({"num_classes": 0}, r"model 'cnn1': num_classes must be an integer >= 1, got 0"),
    ({"input_length": "187"}, r"input_length must be an integer >= 1, got '187'"),
])
def test_build_model_bad_arguments_are_one_config_error(kwargs: dict, match: str) -> None:
    from medrobust.errors import ConfigError

    with pytest.raises(ConfigError, match=match) as info:
        build_model("cnn1", **kwargs)
    assert "\n" not in str(info.value)
