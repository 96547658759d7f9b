"""`study create`: sources, stratified seeded selection, balanced sides, tokens only as digests, schema and errors."""

from __future__ import annotations

import json
import sqlite3
import stat
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medrobust.errors import ConfigError, DataError
from medrobust.study.create import StudySpec, create_study, load_sources, noise_controls, write_invitations
from medrobust.study.schema import SCHEMA_VERSION, connect, token_hash

from .conftest import make_pairs, token_of


@pytest.fixture
def quick_render(monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray, np.ndarray]]:
    """Selection and assignment tests need no pixels: a pair becomes two 1-byte "strips" (test_render draws).

    Returns the list of the (clean, adversarial) signals handed to the renderer, in order.
    """
    from medrobust.study import create
    from medrobust.study.render import Strips

    calls: list[tuple[np.ndarray, np.ndarray]] = []

    def fake(x: np.ndarray, xa: np.ndarray, *, fs: float, units: str, lead: str, uv_scale: float | None,
             uv_offset: float | None) -> Strips:
        calls.append((np.asarray(x), np.asarray(xa)))
        return Strips(b"c", b"a", len(x) / fs, f"{units} {lead}", 1, 1)

    monkeypatch.setattr(create, "render_pair", fake)
    return calls


def _q(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_band_folder_study(built: tuple[Path, dict]) -> None:
    db, result = built
    assert _q(db, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert _q(db, "PRAGMA journal_mode") == [("wal",)]
    items = _q(db, "SELECT attack, label_name, record_id, lead, seconds FROM items ORDER BY id")
    assert Counter(a for a, *_ in items) == {"sap": 5, "pgd": 5}
    # stratified among the 7 successful pairs (4 N, 3 A; record A00007 failed): 5 -> 3 N + 2 A per attack
    for attack in ("sap", "pgd"):
        assert Counter(lab for a, lab, *_ in items if a == attack) == {"N": 3, "A": 2}
    assert all(rid != "A00007" for _, _, rid, *_ in items)
    assert {(lead, sec) for *_, lead, sec in items} == {("I", 2.5)}
    assert _q(db, "SELECT kind, COUNT(*) FROM strips GROUP BY kind ORDER BY kind") == [("adversarial", 10),
                                                                                         ("clean", 10)]
    assert result["items"] == 10 and len(result["invitations"]) == 2


def test_every_rater_gets_every_item_once_with_balanced_sides(built: tuple[Path, dict]) -> None:
    db, _ = built
    for rater in (1, 2):
        rows = _q(db, f"SELECT position, item_id, adv_side FROM assignments WHERE rater_id = {rater} ORDER BY position")
        assert [p for p, *_ in rows] == list(range(10))
        assert sorted(i for _, i, _ in rows) == list(range(1, 11))
        assert Counter(s for *_, s in rows) == {"left": 5, "right": 5}
    orders = [[i for (i,) in _q(db, f"SELECT item_id FROM assignments WHERE rater_id = {r} ORDER BY position")]
              for r in (1, 2)]
    assert orders[0] != orders[1]  # randomised per rater
    # the left/right slots point to the adversarial/clean strip as the key says
    bad = _q(db, "SELECT COUNT(*) FROM slots sl JOIN assignments a ON a.id = sl.assignment_id JOIN strips st "
                 "ON st.id = sl.strip_id WHERE (sl.side = a.adv_side) != (st.kind = 'adversarial')")
    assert bad == [(0,)]
    assert len({p for (p,) in _q(db, "SELECT public_id FROM slots")}) == 40


def test_seeded_and_tokens_stored_as_digests(pairs_dir: Path, built: tuple[Path, dict], tmp_path: Path,
                                             quick_render: list) -> None:
    db, result = built
    again = create_study(pairs_dir, tmp_path / "again.db", StudySpec(raters=2, per_attack=5, seed=3, lead_name="I"))
    key = "SELECT a.rater_id, a.position, i.record_id, i.attack, a.adv_side FROM assignments a JOIN items i " \
          "ON i.id = a.item_id ORDER BY a.rater_id, a.position"
    assert _q(db, key) == _q(tmp_path / "again.db", key)
    other = create_study(pairs_dir, tmp_path / "other.db", StudySpec(raters=2, per_attack=5, seed=4))
    assert _q(db, key) != _q(tmp_path / "other.db", key)
    # fresh secrets every time, never in the file: only their SHA-256 digests
    assert set(again["invitations"].values()).isdisjoint(result["invitations"].values())
    raw = db.read_bytes()
    for url in result["invitations"].values():
        assert token_of(url).encode() not in raw
        assert token_hash(token_of(url)).encode() in raw
    assert result["admin_token"].encode() not in raw
    inv = tmp_path / "inv.txt"
    write_invitations(inv, result)
    assert stat.S_IMODE(inv.stat().st_mode) == 0o600
    assert result["admin_token"] in inv.read_text()


def test_attack_folder_single_design(tmp_path: Path) -> None:
    from medrobust.evaluation.export import save_npz

    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 120)) * 0.3
    y = np.array([0, 1, 2, 0, 1, 2])
    save_npz(tmp_path / "adv" / "adversarial.npz", x=x, x_adv=x + 0.01, y=y, clean_pred=y,
             adv_pred=(y + 1) % 3, success=np.ones(6, bool),
             extra={"ids": np.array([f"r{i}" for i in range(6)]), "classes": np.array(["N", "S", "V"]),
                    "fs": np.array(360.0), "units": np.array("mV"), "attack": np.array("fgsm")})
    (tmp_path / "adv" / "attack.json").write_text(json.dumps({"data": {"leads": ["MLII", "V5"]}}))
    create_study(tmp_path / "adv", tmp_path / "s.db", StudySpec(raters=3, per_attack=3, design="single", lead=1))
    assert _q(tmp_path / "s.db", "SELECT DISTINCT attack, lead FROM items") == [("fgsm", "V5")]
    assert Counter(lab for (lab,) in _q(tmp_path / "s.db", "SELECT label_name FROM items")) == {"N": 1, "S": 1, "V": 1}
    rows = _q(tmp_path / "s.db", "SELECT a.shown_kind, sl.side, st.kind FROM assignments a JOIN slots sl "
                                 "ON sl.assignment_id = a.id JOIN strips st ON st.id = sl.strip_id")
    assert len(rows) == 9 and all(side == "single" and shown == kind for shown, side, kind in rows)
    for rater in (1, 2, 3):  # 3 items: one kind once, the other twice
        kinds = sorted(Counter(k for (k,) in _q(tmp_path / "s.db", "SELECT shown_kind FROM assignments "
                                                                    f"WHERE rater_id = {rater}")).values())
        assert kinds == [1, 2]


def test_noise_controls_match_the_perturbation_energy(pairs_dir: Path, tmp_path: Path, quick_render: list) -> None:
    src = next(s for s in load_sources(pairs_dir) if s.attack == "pgd")
    ctl = noise_controls(src, k=4, seed=0)
    assert ctl.attack == "noise" and len(ctl.y) == 4
    for i, rid in enumerate(ctl.ids):
        j = src.ids.index(rid)
        np.testing.assert_allclose(np.linalg.norm(ctl.x_adv[i] - ctl.x[i]), np.linalg.norm(src.x_adv[j] - src.x[j]),
                                   rtol=1e-9)
        assert not np.allclose(ctl.x_adv[i] - ctl.x[i], src.x_adv[j] - src.x[j])
    create_study(pairs_dir, tmp_path / "n.db", StudySpec(raters=1, per_attack=1, noise_controls=2))
    assert Counter(a for (a,) in _q(tmp_path / "n.db", "SELECT attack FROM items")) == {"sap": 1, "pgd": 1,
                                                                                        "noise": 2}


def test_include_failed(tmp_path: Path, quick_render: list) -> None:
    d = make_pairs(tmp_path / "band", n=3)
    create_study(d, tmp_path / "a.db", StudySpec(raters=1, per_attack=3))
    create_study(d, tmp_path / "b.db", StudySpec(raters=1, per_attack=3, include_failed=True))
    assert len(_q(tmp_path / "a.db", "SELECT id FROM items WHERE attack = 'sap'")) == 2
    assert len(_q(tmp_path / "b.db", "SELECT id FROM items WHERE attack = 'sap'")) == 3


def test_errors(pairs_dir: Path, built: tuple[Path, dict], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exists"):
        create_study(pairs_dir, built[0], StudySpec())
    with pytest.raises(ConfigError, match="SRC .*not a folder"):
        create_study(tmp_path / "nope", tmp_path / "x.db", StudySpec())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="neither adversarial.npz, examples.npz nor pairs_"):
        create_study(tmp_path / "empty", tmp_path / "x.db", StudySpec())
    with pytest.raises(ConfigError, match="--lead 1: .* 1 lead"):
        create_study(pairs_dir, tmp_path / "x.db", StudySpec(lead=1))
    assert not (tmp_path / "x.db").exists()  # a failed create leaves no half-built database
    with pytest.raises(ConfigError, match="--design"):
        create_study(pairs_dir, tmp_path / "x.db", StudySpec(design="3afc"))
    with pytest.raises(ConfigError, match="--raters"):
        create_study(pairs_dir, tmp_path / "x.db", StudySpec(raters=0))
    with pytest.raises(ConfigError, match="--rater-names gives 1 names"):
        create_study(pairs_dir, tmp_path / "x.db", StudySpec(raters=2, rater_names=("a",)))
    bad = tmp_path / "bad"
    bad.mkdir()
    np.savez(bad / "pairs_sap.npz", x=np.zeros((2, 1, 10)))
    with pytest.raises(DataError, match="lacks"):
        create_study(bad, tmp_path / "x.db", StudySpec())
    d = make_pairs(tmp_path / "one", n=1)  # its only record failed
    with pytest.raises(DataError, match="--include-failed"):
        create_study(d, tmp_path / "x.db", StudySpec())
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(DataError, match="not a study database"):
        connect(tmp_path / "junk.db")
    sqlite3.connect(tmp_path / "old.db").executescript("CREATE TABLE schema_version (version INTEGER); "
                                                       "INSERT INTO schema_version VALUES (99);")
    with pytest.raises(DataError, match="version 99"):
        connect(tmp_path / "old.db")


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `medrobust evaluate` run (committed MIT-BIH CNN1 on synthetic beats, PGD and SAP at 2 radii)."""
    from medrobust.data import load_dataset
    from medrobust.evaluation import ProtocolConfig, evaluate
    from medrobust.models import load_checkpoint

    model = load_checkpoint(Path(__file__).resolve().parents[2] / "benchmarks/checkpoints/mitdb_cnn1_intra")
    beats = load_dataset("synthetic", split="test", n_per_class=2, seed=0)
    out = tmp_path_factory.mktemp("eval") / "run"
    cfg = ProtocolConfig(attacks=[{"name": "pgd", "steps": 5}, {"name": "sap", "steps": 5}], eps=(0.05, 0.1),
                         mode="individual", n_examples=4, large_eps_steps=2)
    evaluate(model, beats, cfg, out_dir=out, model_card=model.card, checkpoint="mitdb_cnn1_intra", progress=False)
    return out


def test_evaluation_run_examples(eval_run: Path, tmp_path: Path, quick_render: list) -> None:
    z = np.load(eval_run / "examples.npz")
    ok = (z["adv_pred"][:, 1] != z["y"]) & (z["clean_pred"] == z["y"])  # successes at ε = 0.1, per attack
    create_study(eval_run, tmp_path / "e.db", StudySpec(raters=1, per_attack=50, eps=0.1))
    rows = _q(tmp_path / "e.db", "SELECT attack, record_id, label, lead, source_index FROM items ORDER BY id")
    for (attack, *_, i), (x, xa) in zip(rows, quick_render, strict=True):  # the ε = 0.1 signals, not ε = 0.05
        m = ["pgd", "sap"].index(attack)
        np.testing.assert_allclose(xa, z["x_adv"][m, 1, i, 0], rtol=0, atol=1e-7)
        np.testing.assert_allclose(x, z["x"][i, 0], rtol=0, atol=1e-7)
        assert np.abs(xa - z["x_adv"][m, 0, i, 0]).max() > 1e-4
    for m, attack in enumerate(["pgd", "sap"]):
        got = sorted(rid for a, rid, *_ in rows if a == attack)
        assert got
        assert got == sorted(str(v) for v in z["ids"][ok[m]])  # every success at that radius, nothing else
    assert {lead for *_, lead, _ in rows} == {"synthetic"}
    with pytest.raises(ConfigError, match=r"--eps: .* holds examples at ε = \[0.05, 0.1\]"):
        create_study(eval_run, tmp_path / "x.db", StudySpec())
    with pytest.raises(ConfigError, match="--eps 0.3"):
        create_study(eval_run, tmp_path / "x.db", StudySpec(eps=0.3))
    with pytest.raises(ConfigError, match="--eps must be"):
        create_study(eval_run, tmp_path / "x.db", StudySpec(eps=-1.0))


def test_recorded_uv_scale_draws_beats_in_mv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.clip(rng.random((2, 1, 150)), 0, 1)
    d = tmp_path / "src"
    d.mkdir()
    np.savez(d / "pairs_pgd.npz", x=x, x_adv=x + 0.01, y=np.array([0, 1]), clean_pred=np.array([0, 1]),
             adv_pred=np.array([1, 0]), fs=np.array(125.0), units=np.array("normalized [0, 1]"),
             uv_scale=np.array([1500.0, 2000.0]), uv_offset=np.array([-400.0, -700.0]))
    create_study(d, tmp_path / "u.db", StudySpec(raters=1, per_attack=2))
    notes = [n for (n,) in _q(tmp_path / "u.db", "SELECT axis_note FROM items ORDER BY source_index")]
    assert "× 1500 µV − 400 µV" in notes[0] and "× 2000 µV − 700 µV" in notes[1]
    assert all("10 mm/mV" in n for n in notes)
