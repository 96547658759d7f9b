"""``medrobust.zoo``: every shipped entry loads to the logits it was measured with; tampering is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from medrobust import zoo
from medrobust.errors import CheckpointError, ConfigError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = [e.id for e in zoo.list()]


def test_zoo_lists_the_shipped_entries() -> None:
    assert {"mitdb-intra/cnn1-ce12", "cinc2017/resnet1d-ce"} <= set(SHIPPED)
    assert SHIPPED == sorted(SHIPPED)
    for e in zoo.list():
        assert e.shipped and e.id == f"{e.task}/{e.folder.name}" and e.parameters > 0
        assert e.task in __import__("medrobust.leaderboard", fromlist=["task_names"]).task_names()
    assert [e.id for e in zoo.list("cinc2017")] == ["cinc2017/resnet1d-ce"]


@pytest.mark.parametrize("entry_id", SHIPPED)
def test_shipped_entry_round_trips_to_its_probe_logits(entry_id: str) -> None:
    from medrobust.models import load_checkpoint

    entry = zoo.get(entry_id)
    model = zoo.load(entry_id)
    probe = json.loads((entry.folder / "probe.json").read_text())
    x = torch.rand((probe["n"], *probe["input_shape"]), generator=torch.Generator().manual_seed(probe["seed"]))
    with torch.no_grad():
        got = model(x)
    assert torch.allclose(got, torch.tensor(probe["logits"]), atol=1e-4, rtol=0)
    assert model.card["weights_sha256"] == entry.weights_sha256 and model.card["weights_verified"] is True
    assert sum(p.numel() for p in model.parameters()) == entry.parameters
    # the probe discriminates: the two classes' logits differ between the two probe inputs
    assert not torch.allclose(got[0], got[1], atol=1e-3)
    # and the eval card (when present) measured these weights
    if entry.eval_card is not None:
        card = json.loads(entry.eval_card.read_text())
        assert card["model"]["card"]["weights_sha256"] == entry.weights_sha256
    origin = {"mitdb-intra/cnn1-ce12": "mitdb_cnn1_intra", "cinc2017/resnet1d-ce": "cinc2017_resnet1d"}.get(entry_id)
    if origin:   # the zoo copy is the committed benchmark checkpoint
        ref = load_checkpoint(REPO / "benchmarks" / "checkpoints" / origin)
        with torch.no_grad():
            assert torch.equal(ref(x), got)


@pytest.fixture()
def local_zoo(tmp_path: Path) -> Path:
    root = tmp_path / "zoo"
    shutil.copytree(zoo.get("mitdb-intra/cnn1-ce12").folder, root / "mitdb-intra" / "cnn1-ce12")
    return root


def test_replaced_weights_are_refused(local_zoo: Path) -> None:
    w = local_zoo / "mitdb-intra" / "cnn1-ce12" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"entry 'mitdb-intra/cnn1-ce12': .* has SHA-256 .* the entry records"):
        zoo.load("mitdb-intra/cnn1-ce12", root=local_zoo)


def test_changed_probe_is_refused(local_zoo: Path) -> None:
    p = local_zoo / "mitdb-intra" / "cnn1-ce12" / "probe.json"
    probe = json.loads(p.read_text())
    probe["logits"][1][2] += 1e-3
    p.write_text(json.dumps(probe))
    with pytest.raises(CheckpointError, match=r"logits on the probe input differ from .* by 0.001"):
        zoo.load("mitdb-intra/cnn1-ce12", root=local_zoo)
    assert zoo.load("mitdb-intra/cnn1-ce12", root=local_zoo, verify_probe=False) is not None
    p.unlink()
    with pytest.raises(CheckpointError, match="probe.json is missing or unreadable"):
        zoo.load("mitdb-intra/cnn1-ce12", root=local_zoo)


def test_bad_and_unknown_ids(local_zoo: Path) -> None:
    for bad in ("cnn1-ce12", "a/b/c", "../x/y", "mitdb-intra/"):
        with pytest.raises(ConfigError, match="must be 'TASK/NAME'"):
            zoo.get(bad, root=local_zoo)
    with pytest.raises(ConfigError, match=r"no zoo entry 'mitdb-intra/nope'; known entries: \['mitdb-intra/cnn1-ce12"):
        zoo.load("mitdb-intra/nope", root=local_zoo)


def test_add_computes_probe_and_refuses_overwrite(tmp_path: Path) -> None:
    src = REPO / "benchmarks" / "checkpoints" / "mitdb_cnn1_intra"
    e = zoo.add(src, entry_id="t/x", root=tmp_path, budget="b", defence="d")
    assert (e.defence, e.budget, e.shipped, e.eval_card) == ("d", "b", True, None)
    ref = json.loads((zoo.get("mitdb-intra/cnn1-ce12").folder / "probe.json").read_text())
    assert json.loads((tmp_path / "t" / "x" / "probe.json").read_text())["logits"] == ref["logits"]
    with pytest.raises(ConfigError, match="exists .* pass --overwrite"):
        zoo.add(src, entry_id="t/x", root=tmp_path)
    e = zoo.add(src, entry_id="t/x", root=tmp_path, overwrite=True)
    assert e.defence == "ce" and e.budget.startswith("12 epochs, best epoch 11, batch 128")


def test_url_entry_is_never_downloaded(tmp_path: Path, monkeypatch: Any) -> None:
    src = REPO / "benchmarks" / "checkpoints" / "mitdb_cnn1_intra"
    root, cache = tmp_path / "zoo", tmp_path / "cache"
    monkeypatch.setenv("MEDROBUST_ZOO_CACHE", str(cache))
    e = zoo.add(src, entry_id="mitdb-intra/big", root=root, url="https://example.org/big.safetensors")
    assert not (e.folder / "model.safetensors").exists() and e.source["sha256"] == e.weights_sha256
    where = cache / "mitdb-intra" / "big" / "model.safetensors"
    with pytest.raises(CheckpointError) as exc:
        zoo.load("mitdb-intra/big", root=root)
    assert f"save it as {where}" in str(exc.value) and "never downloads" in str(exc.value)
    where.parent.mkdir(parents=True)
    where.write_bytes(b"not the weights")
    with pytest.raises(CheckpointError, match="the download is truncated or another file"):
        zoo.load("mitdb-intra/big", root=root)
    shutil.copyfile(src / "model.safetensors", where)
    model = zoo.load("mitdb-intra/big", root=root)
    assert model.card["weights_sha256"] == e.weights_sha256


def test_add_copies_the_eval_card_and_compresses_per_sample(tmp_path: Path) -> None:
    import numpy as np

    from medrobust.evaluation.card import read_npz

    src = REPO / "benchmarks" / "checkpoints" / "mitdb_cnn1_intra"
    run = tmp_path / "run"
    run.mkdir()
    (run / "card.json").write_text('{"format": "medrobust-result-card/1"}')
    arrays = {"index": np.arange(500), "ids": np.asarray([f"100:{i}" for i in range(500)]),
              "adv_pred": np.zeros((3, 500), dtype=np.int64)}
    np.savez(run / "per_sample.npz", **arrays)
    e = zoo.add(src, entry_id="t/x", root=tmp_path / "zoo", eval_card=run / "card.json")
    assert e.eval_card is not None and e.eval_card.read_bytes() == (run / "card.json").read_bytes()
    copied = e.folder / "eval" / "per_sample.npz"
    back = read_npz(copied)
    assert set(back) == set(arrays) and all(np.array_equal(back[k], arrays[k]) for k in arrays)
    assert copied.stat().st_size < (run / "per_sample.npz").stat().st_size / 4
    with pytest.raises(ConfigError, match="--eval-card .*: no card.json there"):
        zoo.add(src, entry_id="t/y", root=tmp_path / "zoo", eval_card=tmp_path)
    assert not (tmp_path / "zoo" / "t" / "y").exists()
