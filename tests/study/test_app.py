"""The web app in-process (Starlette TestClient): the rater flow, blinding of payloads, and the security rules."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from .conftest import require, token_of

require("fastapi", "httpx")

from fastapi.testclient import TestClient  # noqa: E402

from medrobust.study.app import create_app  # noqa: E402

ORIGIN = "http://testserver"


def _q(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


class Rater:
    """A browser-like client for one invitation: page (cookie + CSRF token), state, images, answers."""

    def __init__(self, app: Any, url: str) -> None:
        self.c, self.token = TestClient(app), token_of(url)
        page = self.c.get(f"/r/{self.token}")
        assert page.status_code == 200
        self.page = page.text
        self.csrf = page.text.split("name='csrf-token' content='")[1].split("'")[0]
        self.sid = page.cookies["mr_sid"]

    def state(self) -> dict[str, Any]:
        r = self.c.get(f"/api/r/{self.token}/state")
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, body: Any, *, origin: str | None = ORIGIN, csrf: str | None = "", sid: str | None = "",
             raw: bytes | None = None, **headers: str) -> Any:
        h = {"Content-Type": "application/json", **headers}
        if origin is not None:
            h["Origin"] = origin
        if csrf is not None:
            h["X-CSRF-Token"] = csrf or self.csrf
        self.c.cookies.clear()
        if sid is not None:
            self.c.cookies.set("mr_sid", sid or self.sid)
        return self.c.post(f"/api/r/{self.token}/answer", content=raw if raw is not None else json.dumps(body),
                           headers=h)


@pytest.fixture
def app_study(study: tuple[Path, dict]) -> tuple[Any, Path, dict]:
    db, result = study
    return create_app(db), db, result


def _answer(pos: int, **kw: Any) -> dict[str, Any]:
    return {"position": pos, "choice": "left", "same_class": True, "confidence": 3, "comment": "", **kw}


def test_rater_flow_resume_and_final_answers(app_study: tuple[Any, Path, dict]) -> None:
    app, db, result = app_study
    client = TestClient(app)
    r = Rater(app, result["invitations"]["rater01"])
    s = r.state()
    assert (s["answered"], s["total"], s["done"], s["item"]["position"]) == (0, 10, False, 0)
    assert s["item"]["lead"] == "I" and s["item"]["seconds"] == 2.5 and "10 mm/mV" in s["item"]["axis_note"]
    shown = _q(db, "SELECT shown_at FROM assignments WHERE rater_id = 1 AND position = 0")[0][0]
    assert shown is not None and r.state()["item"]["position"] == 0
    # the first showing counts: a second state request does not move it
    assert _q(db, "SELECT shown_at FROM assignments WHERE rater_id = 1 AND position = 0")[0][0] == shown
    assert _q(db, "SELECT COUNT(*) FROM assignments WHERE shown_at IS NOT NULL") == [(1,)]
    ok = r.post(_answer(0, comment="looks fine"))
    assert ok.status_code == 200 and ok.json()["stored"] is True
    assert ok.json()["state"]["item"]["position"] == 1 and ok.json()["state"]["answered"] == 1
    assert r.post(_answer(0, comment="looks fine")).json()["duplicate"] is True  # a retry is idempotent
    changed = r.post(_answer(0, choice="right"))
    assert changed.status_code == 409 and "cannot be changed" in changed.json()["detail"]
    ahead = r.post(_answer(2))
    assert ahead.status_code == 409 and "not your current item" in ahead.json()["detail"]
    # a new page load (another session) resumes at the first unanswered item
    again = Rater(app, result["invitations"]["rater01"])
    assert again.state()["item"]["position"] == 1 and again.csrf != r.csrf
    rows = _q(db, "SELECT a.position, s.choice, s.same_class, s.confidence, s.comment FROM answers s "
                  "JOIN assignments a ON a.id = s.assignment_id")
    assert rows == [(0, "left", 1, 3, "looks fine")]
    (t_shown, t_answered), = _q(db, "SELECT shown_at, answered_at FROM answers")
    assert t_shown == shown and t_answered >= shown
    for pos in range(1, 10):
        assert again.post(_answer(pos)).status_code == 200
    final = again.state()
    assert final["done"] is True and final["item"] is None and final["answered"] == 10
    # the other rater is untouched
    assert Rater(app, result["invitations"]["rater02"]).state()["answered"] == 0


def test_payloads_of_the_two_strips_are_identical_but_for_pixels(app_study: tuple[Any, Path, dict]) -> None:
    app, db, result = app_study
    client = TestClient(app)
    r = Rater(app, result["invitations"]["rater01"])
    states = []
    for pos in range(10):
        s = r.state()
        strips = s["item"]["strips"]
        assert [st["side"] for st in strips] == ["left", "right"] and all(set(st) == {"side", "src"} for st in strips)
        imgs = [client.get(st["src"]) for st in strips]
        assert [i.status_code for i in imgs] == [200, 200]
        assert dict(imgs[0].headers) == dict(imgs[1].headers)  # same header names and values, length included
        assert imgs[0].content != imgs[1].content and len(imgs[0].content) == len(imgs[1].content)
        assert len({len(st["src"]) for st in strips}) == 1
        states.append(s)
        r.post(_answer(pos))
    # the state of an item with the altered strip on the left has the same shape as one with it on the right
    key = dict(_q(db, "SELECT position, adv_side FROM assignments WHERE rater_id = 1"))
    left = [s for s in states if key[s["item"]["position"]] == "left"]
    right = [s for s in states if key[s["item"]["position"]] == "right"]
    assert left and right

    def shape(s: dict) -> Any:
        it = s["item"]
        return sorted(s), sorted(it), [(st["side"], st["src"].rsplit("/", 1)[0]) for st in it["strips"]]

    assert {json.dumps(shape(s)) for s in left} == {json.dumps(shape(s)) for s in right}
    js = client.get("/static/study.js").text
    for text in [r.page, js] + [json.dumps(s) for s in states]:
        assert "adversarial" not in text and "adv_side" not in text and "shown_kind" not in text


def test_tokens_and_other_raters_items_are_refused(app_study: tuple[Any, Path, dict]) -> None:
    app, db, result = app_study
    client = TestClient(app)
    a = Rater(app, result["invitations"]["rater01"])
    b = Rater(app, result["invitations"]["rater02"])
    bad = a.token[:-1] + ("A" if a.token[-1] != "A" else "B")
    assert client.get(f"/r/{bad}").status_code == 403
    assert client.get("/r/short").status_code == 403
    assert client.get("/r/").status_code == 404
    assert client.get(f"/api/r/{bad}/state").status_code == 403
    src_b = b.state()["item"]["strips"][0]["src"]
    pid_b = src_b.rsplit("/", 1)[1]
    assert client.get(src_b).status_code == 200
    assert client.get(f"/img/{a.token}/{pid_b}").status_code == 404  # b's strip through a's invitation
    future = _q(db, "SELECT sl.public_id FROM slots sl JOIN assignments a ON a.id = sl.assignment_id "
                    "WHERE a.rater_id = 1 AND a.position = 5")[0][0]
    assert client.get(f"/img/{a.token}/{future}").status_code == 404  # not reached yet: not shown
    # a's session cookie and CSRF token do not work for b's invitation
    a.state()
    client.cookies.set("mr_sid", a.sid)
    cross = client.post(f"/api/r/{b.token}/answer", content=json.dumps(_answer(0)),
                        headers={"Origin": ORIGIN, "Content-Type": "application/json", "X-CSRF-Token": a.csrf})
    assert cross.status_code == 403 and "session or CSRF" in cross.json()["detail"]
    assert _q(db, "SELECT COUNT(*) FROM answers") == [(0,)]


def test_cross_site_posts_are_refused(app_study: tuple[Any, Path, dict]) -> None:
    app, db, result = app_study
    client = TestClient(app)
    r = Rater(app, result["invitations"]["rater01"])
    r.state()
    forged = r.post(_answer(0), origin="http://evil.example")
    assert forged.status_code == 403 and "cross-origin" in forged.json()["detail"]
    assert r.post(_answer(0), origin=None).status_code == 403  # neither Origin nor Referer
    assert r.post(_answer(0), origin=None, Referer="http://evil.example/x").status_code == 403
    assert r.post(_answer(0), csrf=None).status_code == 403
    assert r.post(_answer(0), csrf="x" * 43).status_code == 403
    assert r.post(_answer(0), sid=None).status_code == 403
    assert _q(db, "SELECT COUNT(*) FROM answers") == [(0,)]
    # the same request from the page itself (Referer of the study's origin) passes
    assert r.post(_answer(0), origin=None, Referer=f"{ORIGIN}/r/{r.token}").status_code == 200


def test_input_validation_and_sql_metacharacters(app_study: tuple[Any, Path, dict]) -> None:
    app, db, result = app_study
    client = TestClient(app)
    r = Rater(app, result["invitations"]["rater01"])
    r.state()
    cases = [(_answer(0, choice="top"), 422, "'choice' must be one of"), (_answer(0, same_class=1), 422, "same_class"),
             (_answer(0, confidence=9), 422, "confidence"), (_answer(0, confidence=True), 422, "confidence"),
             ({"position": "0"}, 422, "position"), ([1, 2], 422, "JSON object"),
             (_answer(0, extra=1), 422, "unknown fields"), (_answer(0, comment=["x"]), 422, "comment"),
             (_answer(99), 404, "no item at position 99")]
    for body, status, text in cases:
        resp = r.post(body)
        assert resp.status_code == status and text in resp.json()["detail"], (body, resp.text)
    assert r.post(None, raw=b"{not json").status_code == 400
    assert r.post(_answer(0), **{"Content-Type": "text/plain"}).status_code == 415
    evil = "x'); DROP TABLE answers; -- \" OR 1=1; --"
    assert r.post(_answer(0, comment=evil)).status_code == 200
    assert _q(db, "SELECT comment FROM answers") == [(evil,)]
    assert {t for (t,) in _q(db, "SELECT name FROM sqlite_master WHERE type = 'table'")} >= {"answers", "items"}


def test_oversized_bodies_get_413(app_study: tuple[Any, Path, dict]) -> None:
    app, db, result = app_study
    client = TestClient(app)
    r = Rater(app, result["invitations"]["rater01"])
    r.state()
    big = r.post(_answer(0, comment="x" * 17_000))
    assert big.status_code == 413 and "16384 bytes" in big.json()["detail"]

    def chunks() -> Any:  # no Content-Length: streamed in pieces
        yield b'{"position": 0, "comment": "'
        for _ in range(20):
            yield b"y" * 1000
        yield b'"}'

    client.cookies.set("mr_sid", r.sid)
    streamed = client.post(f"/api/r/{r.token}/answer", content=chunks(),
                           headers={"Origin": ORIGIN, "Content-Type": "application/json", "X-CSRF-Token": r.csrf})
    assert streamed.status_code == 413
    assert _q(db, "SELECT COUNT(*) FROM answers") == [(0,)]


def test_admin_endpoints(app_study: tuple[Any, Path, dict]) -> None:
    app, db, result = app_study
    client = TestClient(app)
    r = Rater(app, result["invitations"]["rater01"])
    r.state()
    r.post(_answer(0, choice="right", comment="<b>bold</b>"))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {r.token}"},
                    {"Authorization": result["admin_token"]}):
        resp = client.get("/admin/export", headers=headers)
        assert resp.status_code == 401 and "admin token" in resp.json()["detail"]
        assert client.get("/admin/report", headers=headers).status_code == 401
    auth = {"Authorization": f"Bearer {result['admin_token']}"}
    exp = client.get("/admin/export", headers=auth).json()
    (row,) = exp["answers"]
    key = _q(db, "SELECT adv_side FROM assignments WHERE rater_id = 1 AND position = 0")[0][0]
    assert row["adv_side"] == key and row["choice"] == "right" and "admin_hash" not in exp["meta"]
    page = client.get("/admin/report", headers=auth)
    assert page.status_code == 200 and "1/1" in page.text and "&lt;b&gt;bold&lt;/b&gt;" in page.text


def test_security_headers_and_bad_database(app_study: tuple[Any, Path, dict], tmp_path: Path) -> None:
    app, _, result = app_study
    client = TestClient(app)
    resp = client.get(f"/r/{token_of(result['invitations']['rater01'])}")
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    assert resp.headers["cache-control"] == "no-store" and resp.headers["x-frame-options"] == "DENY"
    cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/static/../app.py").status_code == 404
    from medrobust.errors import ConfigError

    with pytest.raises(ConfigError, match="not found"):
        create_app(tmp_path / "none.db")


def test_single_strip_design(pairs_dir: Path, tmp_path: Path) -> None:
    from medrobust.study.create import StudySpec, create_study

    db = tmp_path / "single.db"
    result = create_study(pairs_dir, db, StudySpec(raters=1, per_attack=1, design="single"))
    app = create_app(db)
    r = Rater(app, result["invitations"]["rater01"])
    assert "data-choice='altered'" in r.page and "data-same" not in r.page
    (strip,) = r.state()["item"]["strips"]
    assert strip["side"] == "single"
    assert r.post({"position": 0, "choice": "left"}).status_code == 422
    assert r.post({"position": 0, "choice": "altered", "same_class": True}).status_code == 422
    assert r.post({"position": 0, "choice": "altered"}).status_code == 200
    assert _q(db, "SELECT choice, same_class FROM answers") == [("altered", None)]


def test_allow_change_keeps_an_answer_open_until_next(pairs_dir: Path, tmp_path: Path) -> None:
    from medrobust.study.create import StudySpec, create_study

    db = tmp_path / "change.db"
    result = create_study(pairs_dir, db, StudySpec(raters=1, per_attack=1, allow_change=True))
    r = Rater(create_app(db), result["invitations"]["rater01"])
    assert "can be changed until you move" in r.page
    s = r.state()
    assert s["allow_change"] is True and s["item"]["saved"] is None
    first = r.post(_answer(0, choice="left", confidence=2)).json()["state"]
    # saved and committed, but the item stays on screen with the rater's own answer
    assert first["item"]["position"] == 0 and first["answered"] == 0
    assert first["item"]["saved"] == {"choice": "left", "same_class": True, "confidence": 2, "comment": ""}
    assert r.post(_answer(1)).status_code == 409  # not reached yet
    assert r.post(_answer(0, choice="right", confidence=5)).status_code == 200
    assert _q(db, "SELECT choice, confidence, locked, revisions FROM answers") == [("right", 5, 0, 1)]
    again = Rater(create_app(db), result["invitations"]["rater01"])  # a reload shows the saved answer
    assert again.state()["item"]["saved"]["choice"] == "right"
    nxt = r.c.post(f"/api/r/{r.token}/next", content=json.dumps({"position": 0}),
                   headers={"Origin": ORIGIN, "Content-Type": "application/json", "X-CSRF-Token": r.csrf})
    assert nxt.status_code == 200 and nxt.json()["state"]["item"]["position"] == 1
    assert nxt.json()["state"]["answered"] == 1 and nxt.json()["state"]["item"]["saved"] is None
    assert _q(db, "SELECT locked FROM answers") == [(1,)]
    locked = r.post(_answer(0, choice="left"))
    assert locked.status_code == 409 and "cannot be changed" in locked.json()["detail"]
    early = r.c.post(f"/api/r/{r.token}/next", content=json.dumps({"position": 1}),
                     headers={"Origin": ORIGIN, "Content-Type": "application/json", "X-CSRF-Token": r.csrf})
    assert early.status_code == 409 and "answer it before moving on" in early.json()["detail"]
    forged = r.c.post(f"/api/r/{r.token}/next", content=json.dumps({"position": 0}),
                      headers={"Origin": "http://evil.example", "Content-Type": "application/json",
                               "X-CSRF-Token": r.csrf})
    nocsrf = r.c.post(f"/api/r/{r.token}/next", content=json.dumps({"position": 0}),
                      headers={"Origin": ORIGIN, "Content-Type": "application/json"})
    assert forged.status_code == 403 and nocsrf.status_code == 403
