"""``medrobust.leaderboard.tasks`` field by field on hand-written task mappings: what each field becomes, and
the one-line error naming the file and field for each malformed one."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from medrobust.errors import ConfigError
from medrobust.leaderboard import tasks as T
from medrobust.leaderboard.tasks import (COMPARED_PROTOCOL_KEYS, ThreatRow, evaluate_config, indices_sha256,
                                         load_task, parse_task)

PROTO = {"attacks": ["pgd"], "eps": [0.2, 0.1], "seed": 4}
BASE: dict[str, Any] = {
    "task": "t1", "version": 2, "protocol_version": 3, "title": "Tiny",
    "dataset": {"name": "synthetic", "split": "test", "options": {"n_per_class": 2}},
    "subset": {"limit": 5, "seed": 7},
    "threats": [{"id": "linf", "title": "L∞", "status": "open", "units": "u", "uv": "1 u = 1 mV",
                 "uv_per_unit": 1000, "protocol": PROTO},
                {"id": "snr", "status": "open", "protocol": {"attacks": ["sap"], "eps": [20], "eps_mode": "snr_db"}},
                {"id": "uap", "status": "not-evaluated", "reason": "  no card yet \n"},
                {"id": "na", "title": "N/A", "status": "not-applicable", "reason": "single lead"}]}


def base(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    d.update(changes)
    return d


def refused(d: Any, source: str = "t.yaml") -> str:
    with pytest.raises(ConfigError) as exc:
        parse_task(d, source=source)
    return str(exc.value)


# ---------------------------------------------------------------------------------------------- parse
def test_parse_task_fields() -> None:
    t = parse_task(base(), source="s.yaml")
    assert (t.name, t.version, t.protocol_version, t.title, t.source) == ("t1", 2, 3, "Tiny", "s.yaml")
    assert t.dataset == {"name": "synthetic", "split": "test", "options": {"n_per_class": 2}}
    assert t.subset == {"limit": 5, "seed": 7} and t.raw == BASE
    assert [r.id for r in t.threats] == ["linf", "snr", "uap", "na"]
    assert [r.id for r in t.open_rows] == ["linf", "snr"]
    linf, snr, uap, na = t.threats
    assert (linf.title, linf.status, linf.units, linf.uv, linf.uv_per_unit, linf.reason) == (
        "L∞", "open", "u", "1 u = 1 mV", 1000.0, "")
    assert type(linf.uv_per_unit) is float and linf.protocol_version == 3 and na.protocol_version == 3
    assert linf.protocol.name == "custom" and linf.protocol.eps == (0.1, 0.2) and linf.protocol.seed == 4
    assert [a.name for a in linf.protocol.attacks] == ["pgd"]
    assert snr.title == "snr" and snr.units == "" and snr.uv == "" and snr.uv_per_unit is None
    assert snr.protocol.eps_mode == "snr_db"
    assert (uap.title, uap.status, uap.protocol, uap.reason) == ("uap", "not-evaluated", None, "no card yet")
    assert (na.title, na.status, na.reason) == ("N/A", "not-applicable", "single lead")
    # defaults: no title, no options
    d = base()
    del d["title"], d["dataset"]["options"]
    t = parse_task(d)
    assert t.title == "" and t.dataset["options"] == {} and t.source == "<task>"


def test_the_task_data_is_copied_not_shared() -> None:
    d = base()
    t = parse_task(d)
    d["dataset"]["name"] = "x"
    d["subset"]["seed"] = 99
    assert t.dataset["name"] == "synthetic" and t.subset["seed"] == 7


def test_a_task_must_be_a_mapping_with_its_fields() -> None:
    assert refused([1, 2]) == "t.yaml: a task file must be a YAML mapping."
    assert refused(None, "x.yaml") == "x.yaml: a task file must be a YAML mapping."
    for key in ("version", "protocol_version", "dataset", "subset", "threats", "task"):
        d = base()
        del d[key]
        assert refused(d) == f"t.yaml: missing '{key}'; see docs/leaderboard.md for the task format."
    for key in ("name", "split"):
        d = base()
        del d["dataset"][key]
        assert refused(d) == f"t.yaml dataset: missing '{key}'; see docs/leaderboard.md for the task format."
    d = base()
    del d["subset"]["seed"]
    assert refused(d) == "t.yaml subset: missing 'seed'; see docs/leaderboard.md for the task format."


def test_field_types_are_checked_with_the_type_named() -> None:
    assert refused(base(version="1")) == "t.yaml: 'version' must be int, got '1'."
    assert refused(base(version=True)) == "t.yaml: 'version' must be int, got True."
    assert refused(base(version=1.0)) == "t.yaml: 'version' must be int, got 1.0."
    assert refused(base(protocol_version=False)) == "t.yaml: 'protocol_version' must be int, got False."
    assert refused(base(dataset=["synthetic"])) == "t.yaml: 'dataset' must be dict, got ['synthetic']."
    assert refused(base(threats={"id": "x"})) == "t.yaml: 'threats' must be list, got {'id': 'x'}."
    assert refused(base(task=3)) == "t.yaml: 'task' must be str, got 3."
    d = base()
    d["dataset"]["split"] = 1
    assert refused(d) == "t.yaml dataset: 'split' must be str, got 1."
    d = base()
    d["subset"]["seed"] = True
    assert refused(d) == "t.yaml subset: 'seed' must be int, got True."
    # a non-int kind accepts its own type whatever it is, and names a tuple of kinds as given
    assert T._need({"k": True}, "k", object, "w") is True
    assert T._need({"k": "a"}, "k", (int, str), "w") == "a"
    with pytest.raises(ConfigError, match=r"^w: 'k' must be \(<class 'int'>, <class 'str'>\), got 1.5.$"):
        T._need({"k": 1.5}, "k", (int, str), "w")


def test_version_and_limit_bounds() -> None:
    assert parse_task(base(version=1)).version == 1
    assert refused(base(version=0)) == "t.yaml: version must be an integer >= 1, got 0."
    assert refused(base(version=-3)) == "t.yaml: version must be an integer >= 1, got -3."
    assert parse_task(base(protocol_version=0)).protocol_version == 0   # only the task version is bounded here
    for ok in (1, None):
        assert parse_task(base(subset={"limit": ok, "seed": 0})).subset["limit"] == ok
    assert parse_task(base(subset={"seed": 0})).subset == {"seed": 0}
    for bad in (0, -1, True, 2.0, "5"):
        assert refused(base(subset={"limit": bad, "seed": 0})) == (
            f"t.yaml: subset.limit must be a positive integer or null, got {bad!r}.")


def test_threat_rows_are_checked() -> None:
    def rows(*r: Any) -> str:
        return refused(base(threats=list(r)))
    assert rows("linf") == "t.yaml threats[0]: each threat row must be a mapping with id, title, status."
    assert rows(BASE["threats"][0], ["x"]) == ("t.yaml threats[1]: each threat row must be a mapping with id, title, "
                                               "status.")
    assert rows({"status": "open"}) == "t.yaml threats[0]: missing 'id'; see docs/leaderboard.md for the task format."
    assert rows({"id": "x"}) == "t.yaml threats[0]: missing 'status'; see docs/leaderboard.md for the task format."
    assert rows({"id": "x", "status": "closed"}) == (
        "t.yaml threats[0] row 'x': status must be one of ('open', 'not-evaluated', 'not-applicable'), got 'closed'.")
    assert rows({"id": "x", "status": "open"}) == (
        "t.yaml threats[0] row 'x': missing 'protocol'; see docs/leaderboard.md for the task format.")
    assert rows({"id": "x", "status": "open", "protocol": ["pgd"]}) == (
        "t.yaml threats[0] row 'x': 'protocol' must be dict, got ['pgd'].")
    for status in ("not-evaluated", "not-applicable"):
        for reason in ({}, {"reason": ""}):
            assert rows(BASE["threats"][0], {"id": "x", "status": status, **reason}) == (
                f"t.yaml threats[1] row 'x' is {status}: give the 'reason'.")
    # a protocol setting ProtocolConfig does not know is refused by it (one line)
    msg = rows({"id": "x", "status": "open", "protocol": {**PROTO, "speed": 1}})
    assert msg.startswith("unknown protocol settings ['speed']") and "\n" not in msg


def test_row_ids_are_unique_and_one_row_is_open() -> None:
    d = base()
    d["threats"][1]["id"] = "linf"
    assert refused(d) == ("t.yaml: threat row ids must be unique and at least one row open, got ['linf', 'linf', "
                          "'uap', 'na'].")
    assert refused(base(threats=BASE["threats"][2:])) == (
        "t.yaml: threat row ids must be unique and at least one row open, got ['uap', 'na'].")
    assert refused(base(threats=[])) == "t.yaml: threat row ids must be unique and at least one row open, got []."
    t = parse_task(base(threats=BASE["threats"][1:]))   # one open row is enough
    assert [r.id for r in t.open_rows] == ["snr"]


# ---------------------------------------------------------------------------------------------- rows and task
def test_expected_is_the_compared_settings_with_the_tasks_protocol_version() -> None:
    t = parse_task(base())
    e = t.threat("linf").expected()
    assert list(e) == list(COMPARED_PROTOCOL_KEYS)
    assert e["version"] == 3 and e["eps"] == [0.1, 0.2] and e["seed"] == 4 and e["eps_mode"] == "abs"
    assert e["attacks"] == [{"name": "pgd", "label": "pgd", "kwargs": {}, "restarts": 1, "optional": False}]
    assert "batch_size" not in e and "name" not in e
    with pytest.raises(ConfigError, match=r"^threat row 'uap' is not-evaluated: no card yet$"):
        t.threat("uap").expected()
    assert ThreatRow(id="r", title="r", status="open", protocol=t.threat("snr").protocol).expected()["version"] == 1


def test_threat_lookup() -> None:
    t = parse_task(base())
    assert t.threat("uap") is t.threats[2] and t.threat("na") is t.threats[3]
    with pytest.raises(ConfigError) as exc:
        t.threat("l2")
    assert str(exc.value) == "task 't1' has no threat row 'l2'; rows: ['linf', 'snr', 'uap', 'na']."


def test_summary() -> None:
    s = parse_task(base()).summary()
    assert {k: s[k] for k in ("task", "version", "protocol_version", "title")} == {
        "task": "t1", "version": 2, "protocol_version": 3, "title": "Tiny"}
    assert s["dataset"] == BASE["dataset"] and s["subset"] == BASE["subset"]
    linf, snr, uap, na = s["threats"]
    assert set(linf) == {"id", "title", "status", "units", "protocol", "uv", "eps_uv"}
    assert (linf["id"], linf["title"], linf["status"], linf["units"], linf["uv"]) == ("linf", "L∞", "open", "u",
                                                                                      "1 u = 1 mV")
    assert linf["protocol"] == parse_task(base()).threat("linf").expected()
    assert linf["eps_uv"] == pytest.approx([100.0, 200.0])
    assert snr == {"id": "snr", "title": "snr", "status": "open", "units": "",
                   "protocol": parse_task(base()).threat("snr").expected()}
    assert uap == {"id": "uap", "title": "uap", "status": "not-evaluated", "units": "", "reason": "no card yet"}
    assert na == {"id": "na", "title": "N/A", "status": "not-applicable", "units": "", "reason": "single lead"}
    # a closed row with a µV factor has no radii to convert
    d = base()
    d["threats"][2]["uv_per_unit"] = 2.0
    assert parse_task(d).summary()["threats"][2]["eps_uv"] is None
    d["threats"][0]["uv_per_unit"] = 0.5
    assert parse_task(d).summary()["threats"][0]["eps_uv"] == [0.05, 0.1]


# ---------------------------------------------------------------------------------------------- files
def test_load_task_by_name_and_path(tmp_path: Path) -> None:
    t = load_task("mitdb-intra")
    assert t.name == "mitdb-intra" and Path(t.source) == T._builtin_dir() / "mitdb-intra.yaml"
    assert T.task_names() == sorted(p.stem for p in T._builtin_dir().glob("*.yaml"))
    assert [x.name for x in T.builtin_tasks()] == T.task_names()
    with pytest.raises(ConfigError) as exc:
        load_task("nope")
    assert str(exc.value) == (f"unknown leaderboard task 'nope'; built-in tasks: {T.task_names()} (or pass a task "
                              "YAML file).")
    missing = tmp_path / "none.yaml"
    with pytest.raises(ConfigError) as exc:
        load_task(missing)
    assert str(exc.value) == (f"task file {missing} does not exist; pass a built-in task name ({T.task_names()}) "
                              "or a YAML file.")
    p = tmp_path / "other-name.yaml"       # a file outside the built-in folder may be named anything
    p.write_text(yaml.safe_dump(BASE, allow_unicode=True))
    t = load_task(str(p))
    assert t.name == "t1" and t.source == str(p) and t.raw == BASE
    p.write_text("task: [unclosed\nversion: 1\n")
    with pytest.raises(ConfigError) as exc:
        load_task(p)
    assert str(exc.value).startswith(f"task file {p} is not valid YAML: ") and "\n" not in str(exc.value)
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"other-name.yaml: a task file must be a YAML mapping.$"):
        load_task(p)


def test_a_builtin_task_is_named_as_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T, "_builtin_dir", lambda: tmp_path)
    (tmp_path / "t1.yaml").write_text(yaml.safe_dump(BASE, allow_unicode=True))
    (tmp_path / "t2.yaml").write_text(yaml.safe_dump(BASE, allow_unicode=True))
    assert T.task_names() == ["t1", "t2"]
    assert load_task("t1").name == "t1" and load_task(tmp_path / "t1.yaml").name == "t1"
    for how in ("t2", tmp_path / "t2.yaml"):
        with pytest.raises(ConfigError) as exc:
            load_task(how)
        assert str(exc.value) == f"{tmp_path / 't2.yaml'}: 'task: t1' differs from the file name; rename one of them."


# ---------------------------------------------------------------------------------------------- data
def test_indices_hash_is_sha256_of_int64_bytes() -> None:
    want = hashlib.sha256(bytes([3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2] + [0] * 7)).hexdigest()
    assert indices_sha256([3, 1, 2]) == want
    assert indices_sha256(np.array([3, 1, 2], dtype=np.int32)) == want   # any integer dtype: int64 bytes
    assert indices_sha256(np.array([3, 2, 1])) != want
    assert indices_sha256([]) == hashlib.sha256(b"").hexdigest()


def test_load_task_data_and_subset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    t = parse_task(base())
    ds = T.load_task_data(t)
    assert len(ds) == 2 * len(ds.meta.classes) and ds.meta.name == "synthetic"
    idx = T.subset_indices(t, ds)
    from medrobust.evaluation.inputs import select_indices
    assert idx.tolist() == select_indices(len(ds), 5, 7, labels=ds.y.numpy()).tolist() and len(idx) == 5
    assert idx.tolist() != select_indices(len(ds), 5, 8, labels=ds.y.numpy()).tolist()
    whole = parse_task(base(subset={"limit": None, "seed": 7}))
    assert T.subset_indices(whole, ds).tolist() == list(range(len(ds)))
    pinned = T.pin(t)
    assert pinned == {"fingerprint": ds.meta.fingerprint, "n_total": len(ds), "indices_sha256": indices_sha256(idx),
                      "n_evaluated": 5}
    # the loader gets the name, the split, the root and every option
    import medrobust.data

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(medrobust.data, "load_dataset", lambda *a, **k: calls.append((a, k)) or "data")
    assert T.load_task_data(t, root=tmp_path) == "data"
    assert calls == [(("synthetic",), {"root": tmp_path, "split": "test", "n_per_class": 2})]
    d = base()
    d["dataset"]["options"] = None
    T.load_task_data(parse_task(d))
    assert calls[-1] == (("synthetic",), {"root": None, "split": "test"})
    # pin reads the task's data from the root it is given
    real = ds
    monkeypatch.setattr(medrobust.data, "load_dataset", lambda *a, **k: calls.append((a, k)) or real)
    assert T.pin(t, root=tmp_path) == pinned and calls[-1][1]["root"] == tmp_path


def test_evaluate_config() -> None:
    t = parse_task(base())
    assert evaluate_config(t) == {"dataset": {"name": "synthetic", "split": "test", "options": {"n_per_class": 2},
                                              "limit": 5}, "protocol": {**PROTO}}
    cfg = evaluate_config(t, threat="snr", checkpoint="ck", out="o", data_dir="/d")
    assert cfg == {"checkpoint": "ck", "dataset": {"name": "synthetic", "split": "test", "options": {"n_per_class": 2},
                                                   "limit": 5, "root": "/d"},
                   "protocol": {"attacks": ["sap"], "eps": [20], "eps_mode": "snr_db", "seed": 7},
                   "out": "o"}
    assert list(cfg) == ["checkpoint", "dataset", "protocol", "out"]
    cfg["dataset"]["options"]["n_per_class"] = 9
    cfg["protocol"]["eps"] = [1]
    assert t.dataset["options"]["n_per_class"] == 2 and BASE["threats"][1]["protocol"]["eps"] == [20]
    assert t.raw["threats"][1]["protocol"] == {"attacks": ["sap"], "eps": [20], "eps_mode": "snr_db"}
    whole = parse_task(base(subset={"limit": None, "seed": 1}))
    assert evaluate_config(whole, threat="snr")["dataset"] == {"name": "synthetic", "split": "test",
                                                               "options": {"n_per_class": 2}}
    assert evaluate_config(whole, threat="snr")["protocol"]["seed"] == 1
    with pytest.raises(ConfigError) as exc:
        evaluate_config(t, threat="uap")
    assert str(exc.value) == "threat row 'uap' of task t1 is not-evaluated: no card yet"
    with pytest.raises(ConfigError, match="has no threat row 'l2'"):
        evaluate_config(t, threat="l2")


def test_optional_fields_are_checked_when_given() -> None:
    """Bug fixed: a task with ``uv_per_unit: mV`` raised ValueError from float(); a non-mapping ``options``, a
    non-integer ``n_total`` or a non-string fingerprint / indices hash was accepted and failed later, deep in
    validate or evaluate_config."""
    def with_(section: str, key: str, value: Any) -> str:
        d = base()
        d[section][key] = value
        return refused(d)
    for bad in (["x"], "kachuee", 3):
        assert with_("dataset", "options", bad) == f"t.yaml: dataset.options must be a mapping or null, got {bad!r}."
    for bad in (0, -5, True, 2.0, "40"):
        assert with_("dataset", "n_total", bad) == (
            f"t.yaml: dataset.n_total must be a positive integer or null, got {bad!r}.")
    for bad in (123, ["ab"], True):
        assert with_("dataset", "fingerprint", bad) == (
            f"t.yaml: dataset.fingerprint must be a string or null, got {bad!r}.")
        assert with_("subset", "indices_sha256", bad) == (
            f"t.yaml: subset.indices_sha256 must be a string or null, got {bad!r}.")
    d = base()
    d["dataset"].update(options=None, n_total=1, fingerprint="ab" * 32)
    d["subset"].update(indices_sha256="cd" * 32)
    t = parse_task(d)
    assert t.dataset["n_total"] == 1 and t.dataset["options"] is None and t.subset["indices_sha256"] == "cd" * 32
    for bad in ("mV", True, 0, -1.0, float("nan"), float("inf"), [1000]):
        d = base()
        d["threats"][0]["uv_per_unit"] = bad
        assert refused(d) == ("t.yaml threats[0] row 'linf': uv_per_unit must be a positive number (µV per data "
                              f"unit) or null, got {bad!r}.")
    d = base()
    d["threats"][0]["uv_per_unit"] = 1e-3
    assert parse_task(d).threat("linf").uv_per_unit == 1e-3
