"""`medrobust study create | serve | analyze` on the command line: outputs, one-line errors with exit status 2."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from medrobust.cli.main import main


def test_create_and_analyze(pairs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    assert main(["study", "create", str(pairs_dir), "--out", str(db), "--raters", "3", "--per-attack", "1",
                 "--design", "sameclass", "--rater-names", "ann, bob,cy", "--lead-name", "I",
                 "--base-url", "http://10.0.0.5:9000/"]) == 0
    out = capsys.readouterr().out
    assert "2 items, 3 raters (sameclass)" in out and "  bob: http://10.0.0.5:9000/r/" in out
    inv = (tmp_path / "s.db.invitations.txt").read_text()
    assert inv.splitlines()[0].startswith("admin token: ") and inv.count("http://10.0.0.5:9000/r/") == 3
    con = sqlite3.connect(db)
    con.execute("INSERT INTO answers (assignment_id, rater_id, choice, same_class, confidence, comment, shown_at, "
                "answered_at) SELECT id, rater_id, NULL, 1, NULL, '', 10.0, 14.0 FROM assignments")
    con.commit()
    con.close()
    assert main(["study", "analyze", str(db), "--out", str(tmp_path / "rep")]) == 0
    card = json.loads((tmp_path / "rep" / "study.json").read_text())
    assert card["design"] == "sameclass" and card["same_class"]["pooled"]["k"] == 6
    assert card["same_class"]["agreement"]["measure"] == "fleiss" and card["response_times"]["pooled"]["median_s"] == 4
    assert "admin_hash" not in card["study"]
    assert "| pooled | 6/6 | 100.0 % |" in (tmp_path / "rep" / "study.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["create", "{missing}", "--out", "{tmp}/x.db"], "SRC"),
    (["create", "{pairs}", "--out", "{tmp}/x.db", "--per-attack", "0"], "--per-attack must be an integer"),
    (["create", "{pairs}", "--out", "{tmp}/x.db", "--raters", "2", "--rater-names", "a,a"], "distinct"),
    (["serve", "{tmp}/none.db"], "not found"),
    (["serve", "{tmp}/junk.db"], "not a study database"),
    (["serve", "{tmp}/none.db", "--port", "70000"], "--port 70000"),
    (["analyze", "{tmp}/none.db", "--out", "{tmp}/rep"], "not found"),
])
def test_one_line_errors(argv: list[str], message: str, pairs_dir: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.db").write_bytes(b"junk" * 1000)
    args = [a.format(missing=tmp_path / "missing", tmp=tmp_path, pairs=pairs_dir) for a in argv]
    assert main(["study", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medrobust: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "x.db").exists()


def test_serve_runs_the_app_on_the_given_address(built: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    from .conftest import require

    require("fastapi", "uvicorn")
    from medrobust.study import app

    seen = {}
    monkeypatch.setattr(app, "serve", lambda db, *, host, port: seen.update(db=db, host=host, port=port))
    assert main(["study", "serve", str(built[0]), "--port", "8123"]) == 0
    assert seen == {"db": str(built[0]), "host": "127.0.0.1", "port": 8123}


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["study", "create", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 2afc)" in text and "--allow-change" in text and "(default: 10)" in text
