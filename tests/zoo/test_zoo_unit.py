"""``medrobust.zoo`` piece by piece: ids, entry files, the cache, the probe, ``add``'s fields, each refusal by its
exact message. Models come from the shipped entry ``mitdb-intra/cnn1-ce`` (a 54 k-parameter CNN: fast)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import medrobust.zoo as Z
from medrobust import zoo
from medrobust.errors import CheckpointError, ConfigError

SRC = zoo.get("mitdb-intra/cnn1-ce")
SHA = SRC.weights_sha256


def entry_json(**changes: Any) -> dict[str, Any]:
    d = {"format": "medrobust-zoo-entry/1", "id": "t/a", "task": "t", "architecture": "cnn1", "defence": "ce",
         "parameters": 10, "budget": "b", "weights_sha256": "ab" * 32, "source": "shipped", "notes": "n"}
    d.update(changes)
    return {k: v for k, v in d.items() if v is not ...}


def write_entry(root: Path, entry_id: str, **changes: Any) -> Path:
    folder = root / entry_id
    folder.mkdir(parents=True, exist_ok=True)
    changes = {"id": entry_id, "task": entry_id.split("/")[0], **changes}
    (folder / "zoo.json").write_text(json.dumps(entry_json(**changes)))
    return folder


def checkpoint(tmp_path: Path) -> Path:
    """A checkpoint folder (card.json + model.safetensors) copied from the shipped entry."""
    ck = tmp_path / "ck"
    ck.mkdir(exist_ok=True)
    for name in ("card.json", "model.safetensors"):
        shutil.copyfile(SRC.folder / name, ck / name)
    return ck


# ---------------------------------------------------------------------------------------------- places
def test_zoo_root_is_the_packages_entries_folder() -> None:
    assert Z.zoo_root() == Path(Z.__file__).resolve().parent / "entries"
    assert (Z.zoo_root() / "mitdb-intra" / "cnn1-ce" / "zoo.json").is_file()


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDROBUST_ZOO_CACHE", str(tmp_path / "c"))
    assert Z.cache_dir() == tmp_path / "c"
    monkeypatch.setenv("MEDROBUST_ZOO_CACHE", "~/zc")
    assert Z.cache_dir() == tmp_path / "home" / "zc"
    for unset in ("", None):
        if unset is None:
            monkeypatch.delenv("MEDROBUST_ZOO_CACHE")
        else:
            monkeypatch.setenv("MEDROBUST_ZOO_CACHE", unset)
        assert Z.cache_dir() == tmp_path / "home" / ".cache" / "medrobust" / "zoo"


# ---------------------------------------------------------------------------------------------- ids
def test_ids_are_task_slash_name() -> None:
    for ok in ("t/a", "mitdb-intra/cnn1-ce", "A_1/b.c-d", "x/y.", "0/9"):
        assert Z._check_id(ok) == tuple(ok.split("/"))
    for bad in ("t", "t/a/b", "/a", "t/", "", ".t/a", "t/.a", "t/..", "t/a b", "t/a!", "t\\a/b", None, 3,
                ["t", "a"]):
        with pytest.raises(ConfigError) as exc:
            Z._check_id(bad)   # type: ignore[arg-type]
        assert str(exc.value) == (f"zoo id {bad!r} must be 'TASK/NAME' (letters, digits, '-', '_', '.'), e.g. "
                                  "'mitdb-intra/cnn1-ce'.")


# ---------------------------------------------------------------------------------------------- entry files
def test_read_entry_fields(tmp_path: Path) -> None:
    folder = write_entry(tmp_path, "t/a", parameters=12)
    e = Z._read_entry(folder)
    assert e == Z.ZooEntry(id="t/a", task="t", architecture="cnn1", defence="ce", parameters=12, budget="b",
                           weights_sha256="ab" * 32, source="shipped", folder=folder, notes="n")
    assert e.shipped and e.eval_card is None
    e = Z._read_entry(write_entry(tmp_path, "t/b", notes=..., source={"url": "u", "sha256": "s"}))
    assert e.notes == "" and e.source == {"url": "u", "sha256": "s"} and not e.shipped


def test_unreadable_entries_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "t" / "a"
    folder.mkdir(parents=True)
    path = folder / "zoo.json"
    with pytest.raises(CheckpointError, match=r"^zoo entry .*zoo.json is unreadable \(.*No such file.*\); re-add it "
                                              r"with `medrobust zoo add`.$"):
        Z._read_entry(folder)
    for text in (b"{", b"\xff\xfe{}"):
        path.write_bytes(text)
        with pytest.raises(CheckpointError, match=r"is unreadable \("):
            Z._read_entry(folder)
    for d in ([1], {"format": "medrobust-zoo-entry/2"}, {}):
        path.write_text(json.dumps(d))
        with pytest.raises(CheckpointError) as exc:
            Z._read_entry(folder)
        assert str(exc.value) == (f"{path} is not a medrobust-zoo-entry/1 file; re-add the entry with "
                                  "`medrobust zoo add`.")
    for src in (None, "url", {"url": "u"}, {"sha256": "s"}, {"url": 1, "sha256": "s"}, {"url": "u", "sha256": 2},
                ["u", "s"]):
        write_entry(tmp_path, "t/a", source=src)
        with pytest.raises(CheckpointError) as exc:
            Z._read_entry(folder)
        assert str(exc.value) == f"{path}: source must be \"shipped\" or {{url, sha256}}, got {src!r}."
    for key in ("id", "task", "architecture", "defence", "parameters", "budget", "weights_sha256"):
        write_entry(tmp_path, "t/a", **{key: ...})
        with pytest.raises(CheckpointError) as exc:
            Z._read_entry(folder)
        assert str(exc.value) == f"{path}: missing field '{key}'; re-add the entry with `medrobust zoo add`."


def test_to_dict_and_eval_card(tmp_path: Path) -> None:
    folder = write_entry(tmp_path, "t/a")
    e = Z._read_entry(folder)
    want = {**entry_json(), "card": "card.json", "eval_card": None}
    assert e.to_dict() == want and list(e.to_dict())[0] == "format"
    (folder / "eval").mkdir()
    assert e.eval_card is None                       # a folder without the card
    (folder / "eval" / "card.json").write_text("{}")
    assert e.eval_card == folder / "eval" / "card.json"
    assert e.to_dict()["eval_card"] == "eval/card.json"


def test_list_and_get(tmp_path: Path) -> None:
    for eid in ("u/b", "t/b", "t/a"):
        write_entry(tmp_path, eid)
    (tmp_path / "t" / "empty").mkdir()
    (tmp_path / "stray.json").write_text("{}")
    assert [e.id for e in zoo.list(root=tmp_path)] == ["t/a", "t/b", "u/b"]
    assert [e.id for e in zoo.list_entries("t", root=str(tmp_path))] == ["t/a", "t/b"]
    assert zoo.list("v", root=tmp_path) == [] and zoo.list is zoo.list_entries
    assert zoo.get("u/b", root=tmp_path).folder == tmp_path / "u" / "b"
    for missing in ("t/c", "t/empty", "v/a"):
        with pytest.raises(ConfigError) as exc:
            zoo.get(missing, root=tmp_path)
        assert str(exc.value) == f"no zoo entry {missing!r}; known entries: ['t/a', 't/b', 'u/b']."
    with pytest.raises(ConfigError, match="must be 'TASK/NAME'"):
        zoo.get("t/a/b", root=tmp_path)
    # without root: the shipped entries
    assert zoo.get("mitdb-intra/cnn1-ce").folder == Z.zoo_root() / "mitdb-intra" / "cnn1-ce"
    assert [e.id for e in zoo.list()] == sorted(f"{p.parent.parent.name}/{p.parent.name}"
                                                for p in Z.zoo_root().glob("*/*/zoo.json"))


# ---------------------------------------------------------------------------------------------- probe
def test_probe_input_is_seeded_uniform() -> None:
    x = Z.probe_input([1, 5])
    assert x.shape == (2, 1, 5) and x.dtype == torch.float32
    assert torch.equal(x, torch.rand((2, 1, 5), generator=torch.Generator().manual_seed(0)))
    assert torch.equal(Z.probe_input((1, 5), seed=3, n=4),
                       torch.rand((4, 1, 5), generator=torch.Generator().manual_seed(3)))
    assert torch.equal(Z.probe_input([np.int64(2), 3.0], seed=1.0, n=1),
                       torch.rand((1, 2, 3), generator=torch.Generator().manual_seed(1)))
    assert (Z.PROBE_SEED, Z.PROBE_N, Z.PROBE_ATOL) == (0, 2, 1e-4)


def test_probe_logits_in_eval_mode_without_gradient() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(6, 3)).train()
    got = Z.probe_logits(model, [2, 3], seed=5, n=3)
    x = torch.rand((3, 2, 3), generator=torch.Generator().manual_seed(5))
    assert not model.training and not got.requires_grad and got.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(got, model(x))


class _Double(nn.Module):
    """A model whose logits come out in float64: the probe gives them as float32."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1)).double()


def test_probe_logits_are_float32() -> None:
    model = _Double()
    out = Z.probe_logits(model, [2, 3])
    assert out.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(out, model(Z.probe_input([2, 3])).float())


def _probe(tmp_path: Path, **rec: Any) -> tuple[nn.Module, Z.ZooEntry]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    logits = Z.probe_logits(model, [1, 4], seed=2, n=3)
    d = {"seed": 2, "n": 3, "input_shape": [1, 4], "logits": logits.tolist()}
    d.update(rec)
    folder = write_entry(tmp_path, "t/p")
    (folder / "probe.json").write_text(json.dumps({k: v for k, v in d.items() if v is not ...}))
    return model, Z._read_entry(folder)


def test_check_probe_returns_the_largest_difference(tmp_path: Path) -> None:
    model, e = _probe(tmp_path)
    assert Z.check_probe(model, e) == 0.0
    with torch.no_grad():
        model[1].bias[1] += 5e-5
    assert Z.check_probe(model, e) == pytest.approx(5e-5, rel=1e-2)
    with torch.no_grad():
        model[1].bias[1] += 1e-4          # now 1.5e-4 off: refused
    with pytest.raises(CheckpointError) as exc:
        Z.check_probe(model, e)
    assert str(exc.value) == (f"zoo entry 't/p': logits on the probe input differ from {e.folder / 'probe.json'} by "
                              f"{float(str(exc.value).split(' by ')[1].split(' ')[0]):.3g} (> 0.0001); the weights or "
                              "the architecture's code changed since the entry was made: restore them, or re-add the "
                              "entry (and re-evaluate it).")
    assert " by 0.00015 (" in str(exc.value)


def test_check_probe_refuses_nan_and_other_shapes(tmp_path: Path) -> None:
    model, e = _probe(tmp_path)
    rec = json.loads((e.folder / "probe.json").read_text())
    rec["logits"][0][0] = float("nan")
    (e.folder / "probe.json").write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match=r"differ from .* by nan \(> 0.0001\)"):
        Z.check_probe(model, e)
    model, e = _probe(tmp_path, n=2)   # the record's n differs from its logits' rows
    with pytest.raises(CheckpointError) as exc:
        Z.check_probe(model, e)
    assert str(exc.value) == (f"zoo entry 't/p': probe logits have shape (2, 2), {e.folder / 'probe.json'} records "
                              "(3, 2); the model is not the one the entry was made from.")


@pytest.mark.parametrize("rec", [{"seed": ...}, {"n": ...}, {"input_shape": ...}, {"logits": ...}, {"n": "two"},
                                 {"logits": "x"}, {"seed": None}])
def test_check_probe_refuses_a_broken_record(tmp_path: Path, rec: dict[str, Any]) -> None:
    model, e = _probe(tmp_path, **rec)
    with pytest.raises(CheckpointError) as exc:
        Z.check_probe(model, e)
    msg = str(exc.value)
    assert msg.startswith(f"zoo entry 't/p': {e.folder / 'probe.json'} is missing or unreadable (")
    assert msg.endswith("); re-add the entry with `medrobust zoo add`.")


def test_check_probe_refuses_unreadable_json(tmp_path: Path) -> None:
    model, e = _probe(tmp_path)
    (e.folder / "probe.json").write_text("{")
    with pytest.raises(CheckpointError, match="is missing or unreadable"):
        Z.check_probe(model, e)


# ---------------------------------------------------------------------------------------------- load
def _local(tmp_path: Path) -> Path:
    root = tmp_path / "zoo"
    shutil.copytree(SRC.folder, root / "mitdb-intra" / "cnn1-ce")
    return root


def test_load_returns_the_model_in_eval_mode_with_its_card(tmp_path: Path) -> None:
    root = _local(tmp_path)
    m = zoo.load("mitdb-intra/cnn1-ce", root=root)
    assert not m.training and m.card["weights_sha256"] == SHA and m.card["architecture"] == "cnn1"
    assert next(m.parameters()).device.type == "cpu"
    probe = json.loads((root / "mitdb-intra" / "cnn1-ce" / "probe.json").read_text())
    assert torch.allclose(Z.probe_logits(m, [1, 187]), torch.tensor(probe["logits"]), atol=1e-4, rtol=0)
    m2 = zoo.load("mitdb-intra/cnn1-ce", root=root, map_location="meta")
    assert next(m2.parameters()).device.type == "meta"


def test_load_checks_the_weights_and_the_probe(tmp_path: Path) -> None:
    root = _local(tmp_path)
    folder = root / "mitdb-intra" / "cnn1-ce"
    probe = folder / "probe.json"
    rec = json.loads(probe.read_text())
    rec["logits"][0][0] += 1.0
    probe.write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match=r"logits on the probe input differ from .* by 1 \(> 0.0001\)"):
        zoo.load("mitdb-intra/cnn1-ce", root=root)
    assert zoo.load("mitdb-intra/cnn1-ce", root=root, verify_probe=False).card["weights_sha256"] == SHA
    d = json.loads((folder / "zoo.json").read_text())
    d["weights_sha256"] = "0123456789ab" + "0" * 52
    (folder / "zoo.json").write_text(json.dumps(d))
    w = folder / "model.safetensors"
    with pytest.raises(CheckpointError) as exc:
        zoo.load("mitdb-intra/cnn1-ce", root=root, verify_probe=False)
    assert str(exc.value) == (f"zoo entry 'mitdb-intra/cnn1-ce': {w} has SHA-256 {SHA[:12]}..., the entry records "
                              "0123456789ab...; the file was replaced or is corrupt: restore it (git checkout) or "
                              "re-add the entry with `medrobust zoo add`.")
    w.unlink()
    with pytest.raises(CheckpointError) as exc:
        zoo.load("mitdb-intra/cnn1-ce", root=root)
    assert str(exc.value) == (f"zoo entry 'mitdb-intra/cnn1-ce': {w} is missing; re-add it with `medrobust zoo add`.")


def test_url_entry_weights_come_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = tmp_path / "zoo", tmp_path / "cache"
    monkeypatch.setenv("MEDROBUST_ZOO_CACHE", str(cache))
    e = zoo.add(checkpoint(tmp_path), entry_id="mitdb-intra/big", root=root, url="https://example.org/w")
    assert e.source == {"url": "https://example.org/w", "sha256": SHA} and not e.shipped
    assert sorted(p.name for p in e.folder.iterdir()) == ["card.json", "probe.json", "zoo.json"]
    where = cache / "mitdb-intra" / "big" / "model.safetensors"
    with pytest.raises(CheckpointError) as exc:
        zoo.load("mitdb-intra/big", root=root)
    assert str(exc.value) == (f"zoo entry 'mitdb-intra/big' is not shipped: download https://example.org/w (SHA-256 "
                              f"{SHA}) yourself and save it as {where} (or set MEDROBUST_ZOO_CACHE to the folder "
                              "holding mitdb-intra/big/model.safetensors); medrobust never downloads weights.")
    where.parent.mkdir(parents=True)
    where.write_bytes(b"x")
    with pytest.raises(CheckpointError) as exc:
        zoo.load("mitdb-intra/big", root=root)
    bad = "2d711642b726"   # sha256(b"x")
    assert str(exc.value) == (f"{where} (zoo entry 'mitdb-intra/big') has SHA-256 {bad}..., not the entry's "
                              f"{SHA[:12]}...: the download is truncated or another file; download "
                              "https://example.org/w again.")
    shutil.copyfile(SRC.folder / "model.safetensors", where)
    m = zoo.load("mitdb-intra/big", root=root)
    assert m.card["weights_sha256"] == SHA and (where.parent / "card.json").read_bytes() == (
        e.folder / "card.json").read_bytes()
    # a stale card in the cache is replaced by the entry's
    (where.parent / "card.json").write_text("{}")
    assert zoo.load("mitdb-intra/big", root=root).card["architecture"] == "cnn1"
    assert (where.parent / "card.json").read_bytes() == (e.folder / "card.json").read_bytes()


def test_the_cache_card_is_written_only_when_it_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = tmp_path / "zoo", tmp_path / "cache"
    monkeypatch.setenv("MEDROBUST_ZOO_CACHE", str(cache))
    e = zoo.add(checkpoint(tmp_path), entry_id="mitdb-intra/big", root=root, url="u")
    (cache / "mitdb-intra" / "big").mkdir(parents=True)
    shutil.copyfile(SRC.folder / "model.safetensors", cache / "mitdb-intra" / "big" / "model.safetensors")
    writes: list[Path] = []
    real = Z.atomic_write_bytes
    monkeypatch.setattr(Z, "atomic_write_bytes", lambda p, b: (writes.append(p), real(p, b))[1])
    assert Z._weights_folder(e) == cache / "mitdb-intra" / "big"
    assert writes == [cache / "mitdb-intra" / "big" / "card.json"]
    assert Z._weights_folder(e) == cache / "mitdb-intra" / "big" and len(writes) == 1
    assert Z._weights_folder(zoo.get("mitdb-intra/cnn1-ce")) == SRC.folder   # shipped: its own folder


# ---------------------------------------------------------------------------------------------- add
def test_defence_and_budget_from_the_training_record() -> None:
    assert Z._defence({}) == "unknown" and Z._defence({"training": None}) == "unknown"
    assert Z._defence({"training": {"trainer": "ce"}}) == "ce"
    assert Z._defence({"training": {"trainer": "ce", "defence": "nsr"}}) == "nsr"
    assert Z._defence({"training": {"trainer": "ce", "defence": "nsr", "defense": "trades"}}) == "trades"
    assert Z._defence({"training": {"trainer": "ce", "defense": ""}}) == "ce"
    assert Z._budget({}) == "not recorded" and Z._budget({"training": {"config": None}}) == "not recorded"
    full = {"training": {"best_epoch": 7, "config": {"epochs": 12, "batch_size": 64, "max_batches_per_epoch": 5,
                                                     "device": "cuda"}}}
    assert Z._budget(full) == "12 epochs, best epoch 7, batch 64, ≤ 5 batches/epoch, cuda"
    assert Z._budget({"training": {"best_epoch": 0, "config": {"epochs": 0, "batch_size": 1,
                                                               "max_batches_per_epoch": 0, "device": ""}}}) == (
        "0 epochs, best epoch 0, batch 1")
    assert Z._budget({"training": {"config": {"max_batches_per_epoch": None, "device": None, "epochs": None}}}) == (
        "not recorded")
    assert Z._budget({"training": {"best_epoch": 3}}) == "best epoch 3"


def test_add_writes_the_entry(tmp_path: Path) -> None:
    ck = checkpoint(tmp_path)
    root = tmp_path / "zoo"
    e = zoo.add(ck, entry_id="t/x", root=root, notes="hello")
    folder = root / "t" / "x"
    assert e.folder == folder and e.id == "t/x" and e.task == "t" and e.architecture == "cnn1"
    assert (e.defence, e.budget, e.notes, e.source, e.weights_sha256) == (
        "ce", "10 epochs, best epoch 10, batch 128, cpu", "hello", "shipped", SHA)
    assert e.parameters == 53957 == SRC.parameters
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.safetensors", "probe.json", "zoo.json"]
    assert (folder / "model.safetensors").read_bytes() == (ck / "model.safetensors").read_bytes()
    assert (folder / "card.json").read_bytes() == (ck / "card.json").read_bytes()
    assert json.loads((folder / "zoo.json").read_text()) == e.to_dict()
    assert zoo.get("t/x", root=root) == e
    probe = json.loads((folder / "probe.json").read_text())
    ref = json.loads((SRC.folder / "probe.json").read_text())
    assert {k: probe[k] for k in ("seed", "n", "input_shape", "logits", "atol")} == {
        "seed": 0, "n": 2, "input_shape": [1, 187], "logits": ref["logits"], "atol": 1e-4}
    assert probe["input"] == "torch.rand((n, *input_shape), generator=torch.Generator().manual_seed(seed))"
    assert zoo.load("t/x", root=root).card["weights_sha256"] == SHA
    # the checkpoint given by its weights file, explicit defence and budget
    e = zoo.add(ck / "model.safetensors", entry_id="t/y", root=root, defence="d", budget="b")
    assert (e.defence, e.budget) == ("d", "b") and (root / "t" / "y" / "model.safetensors").is_file()


def test_add_refuses_an_existing_entry_unless_overwritten(tmp_path: Path) -> None:
    ck = checkpoint(tmp_path)
    root = tmp_path / "zoo"
    zoo.add(ck, entry_id="t/x", root=root, defence="first")
    (root / "t" / "x" / "extra.txt").write_text("old")
    with pytest.raises(ConfigError) as exc:
        zoo.add(ck, entry_id="t/x", root=root)
    assert str(exc.value) == f"zoo entry 't/x' exists ({root / 't' / 'x'}); pass --overwrite to replace it."
    assert zoo.get("t/x", root=root).defence == "first"
    e = zoo.add(ck, entry_id="t/x", root=root, overwrite=True)
    assert e.defence == "ce" and not (root / "t" / "x" / "extra.txt").exists()
    with pytest.raises(ConfigError, match="must be 'TASK/NAME'"):
        zoo.add(ck, entry_id="x", root=root)


def test_add_copies_the_evaluation(tmp_path: Path) -> None:
    ck = checkpoint(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "card.json").write_text('{"a": 1}')
    (run / "report.html").write_text("<p>r</p>")
    (run / "other.txt").write_text("not copied")
    arrays = {"index": np.arange(300, dtype=np.int64), "y": np.zeros(300, dtype=np.int64)}
    np.savez(run / "per_sample.npz", **arrays)
    for i, given in enumerate((run, run / "card.json")):
        e = zoo.add(ck, entry_id=f"t/x{i}", root=tmp_path / "zoo", eval_card=given)
        ev = e.folder / "eval"
        assert sorted(p.name for p in ev.iterdir()) == ["card.json", "per_sample.npz", "report.html"]
        assert (ev / "card.json").read_text() == '{"a": 1}' and (ev / "report.html").read_text() == "<p>r</p>"
        with np.load(ev / "per_sample.npz") as z:
            assert sorted(z.files) == ["index", "y"] and all(np.array_equal(z[k], arrays[k]) for k in arrays)
        assert (ev / "per_sample.npz").stat().st_size < (run / "per_sample.npz").stat().st_size / 4
        assert e.eval_card == ev / "card.json" and e.to_dict()["eval_card"] == "eval/card.json"
    (run / "per_sample.npz").unlink()          # a file missing: the ones after it are still copied
    e = zoo.add(ck, entry_id="t/x8", root=tmp_path / "zoo", eval_card=run)
    assert sorted(p.name for p in (e.folder / "eval").iterdir()) == ["card.json", "report.html"]
    (run / "report.html").unlink()
    e = zoo.add(ck, entry_id="t/x9", root=tmp_path / "zoo", eval_card=run)
    assert sorted(p.name for p in (e.folder / "eval").iterdir()) == ["card.json"]
    (tmp_path / "x.json").write_text("{}")   # a file in a folder without card.json
    for bad in (tmp_path / "nothing", tmp_path / "nothing" / "card.json", tmp_path / "x.json"):
        with pytest.raises(ConfigError) as exc:
            zoo.add(ck, entry_id="t/z", root=tmp_path / "zoo", eval_card=bad)
        assert str(exc.value) == (f"--eval-card {bad}: no card.json there; pass the evaluation's card.json or its run "
                                  "folder (medrobust evaluate --out).")
    assert not (tmp_path / "zoo" / "t" / "z").exists()


def test_a_parameter_count_that_is_not_a_count_is_refused(tmp_path: Path) -> None:
    """Bug fixed: ``parameters: "many"`` in zoo.json raised ValueError from int() (and ``"12"`` or ``3.7`` were
    silently converted); now one CheckpointError line."""
    folder = tmp_path / "t" / "a"
    for bad in ("many", "12", 3.7, -1, True, [1]):
        write_entry(tmp_path, "t/a", parameters=bad)
        with pytest.raises(CheckpointError) as exc:
            Z._read_entry(folder)
        assert str(exc.value) == (f"{folder / 'zoo.json'}: parameters must be a count (an integer >= 0), got "
                                  f"{bad!r}; re-add the entry with `medrobust zoo add`.")
    write_entry(tmp_path, "t/a", parameters=0)
    assert Z._read_entry(folder).parameters == 0


def test_a_probe_the_model_cannot_run_is_refused(tmp_path: Path) -> None:
    """Bug fixed: a probe.json whose input_shape the model cannot take (or with a negative size, or not numbers)
    raised RuntimeError/ValueError from inside torch; now one CheckpointError line."""
    model, e = _probe(tmp_path, input_shape=[1, 5])
    path = e.folder / "probe.json"
    with pytest.raises(CheckpointError) as exc:
        Z.check_probe(model, e)
    msg = str(exc.value)
    assert msg.startswith(f"zoo entry 't/p': the probe input (n=3, shape (1, 5)) recorded in {path} does not run "
                          "through the model (")
    assert msg.endswith("); the model is not the one the entry was made from.") and "\n" not in msg
    model, e = _probe(tmp_path, n=-1)
    with pytest.raises(CheckpointError) as exc:
        Z.check_probe(model, e)
    assert f"the probe input (n=-1, shape (1, 4)) recorded in {e.folder / 'probe.json'} does not run through the " \
           "model (Trying to create tensor with negative dimension -1" in str(exc.value)
    model, e = _probe(tmp_path, input_shape="ab")
    with pytest.raises(CheckpointError, match="is missing or unreadable"):
        Z.check_probe(model, e)


def test_a_per_sample_file_that_is_not_plain_arrays_is_refused_before_writing(tmp_path: Path) -> None:
    """Bug fixed: a per_sample.npz holding object (pickled) arrays, or not an .npz at all, raised numpy's
    ValueError / BadZipFile from ``zoo add`` after the entry folder was half written; now one ConfigError line
    and nothing written."""
    ck = checkpoint(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "card.json").write_text("{}")
    ps = run / "per_sample.npz"
    np.savez(ps, index=np.arange(3), meta=np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "ok.npz", index=np.arange(3))
    for content, why in ((ps.read_bytes(), "Object arrays cannot be loaded when allow_pickle=False"),
                         (b"not an npz", "pickled (object) data"),
                         ((tmp_path / "ok.npz").read_bytes()[:40], "File is not a zip file")):
        ps.write_bytes(content)
        with pytest.raises(ConfigError) as exc:
            zoo.add(ck, entry_id="t/x", root=tmp_path / "zoo", eval_card=run)
        msg = str(exc.value)
        assert msg.startswith(f"--eval-card: {ps} is not an .npz file of plain arrays (") and why in msg
        assert msg.endswith("); pass the run folder written by medrobust evaluate.") and "\n" not in msg
        assert not (tmp_path / "zoo" / "t" / "x").exists()


def test_add_without_root_writes_into_the_package_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Z, "zoo_root", lambda: tmp_path / "pkg")
    e = zoo.add(checkpoint(tmp_path), entry_id="t/x")
    assert e.folder == tmp_path / "pkg" / "t" / "x" and (e.folder / "zoo.json").is_file()
    assert e.notes == "" and zoo.get("t/x").notes == "" and [x.id for x in zoo.list()] == ["t/x"]


def test_the_probe_does_not_depend_on_the_default_dtype(tmp_path: Path) -> None:
    """probe_input is float32 and the record is compared in float32 whatever torch's default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        x = Z.probe_input([1, 4])
        assert x.dtype == torch.float32
        torch.set_default_dtype(old)
        assert torch.equal(x, Z.probe_input([1, 4]))
        torch.set_default_dtype(torch.float64)
        # a model whose logits are 0: a record 1e-4 + 1e-12 rounds to float32 9.99999974e-05 <= PROBE_ATOL
        model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1)).float()
        with torch.no_grad():
            model[1].weight.zero_()
            model[1].bias.zero_()
        folder = write_entry(tmp_path, "t/z")
        (folder / "probe.json").write_text(json.dumps({"seed": 0, "n": 1, "input_shape": [1, 4],
                                                       "logits": [[1e-4 + 1e-12]]}))
        assert Z.check_probe(model, Z._read_entry(folder)) == float(np.float32(1e-4 + 1e-12))
    finally:
        torch.set_default_dtype(old)


def test_add_refuses_a_model_constant_on_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that gives both probe inputs the same logits (a BreastMNIST Jacobian-regularised CNN did: dead units)
    cannot have its loading checked by the probe: refused before anything is written."""
    ck = checkpoint(tmp_path)
    same = torch.tensor([[-0.1048, 0.0926], [-0.1048, 0.0926 + 5e-4]])
    monkeypatch.setattr(Z, "probe_logits", lambda model, shape: same)
    with pytest.raises(ConfigError, match=r"the model gives both probe inputs the same logits \[-0\.1048"
                                          r"\d*, 0\.0926\d*\], so the probe could not check that load\(\) restores "
                                          r"these weights; a model constant on random inputs \(dead units, a "
                                          r"collapsed training\) is not shipped: inspect or retrain it\.$"):
        Z.add(ck, entry_id="t/flat", root=tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()
    monkeypatch.setattr(Z, "probe_logits", lambda model, shape: same + torch.tensor([[0.0, 0.0], [0.0, 1.2e-3]]))
    assert Z.add(ck, entry_id="t/ok", root=tmp_path / "zoo").id == "t/ok"        # 1.7e-3 apart: a working probe
    big = torch.tensor([[100.0, 0.0], [100.0015, 0.0]])                          # absolute, not relative, tolerance
    monkeypatch.setattr(Z, "probe_logits", lambda model, shape: big)
    assert Z.add(ck, entry_id="t/big", root=tmp_path / "zoo").id == "t/big"
