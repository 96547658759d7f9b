"""What the web app asks of the study database: rater look-up, sessions, the current item, image slots, answers.

Every function takes an open connection (:func:`medrobust.study.schema.connect`) and runs parameterised SQL.
Nothing here returns the answer key to a caller that serves a rater: :func:`current_item` and :func:`strip_png`
select only the columns a rater may see (the public slot ids sorted by side, the record's lead, length and axis
note), and both strips of an item come through the same query.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from medrobust.study.schema import read_meta, same_secret, token_hash, transaction

CHOICES = {"2afc": ("left", "right"), "single": ("real", "altered"), "sameclass": ()}
MAX_COMMENT = 2000


class StudyError(Exception):
    """A request the study refuses: ``status`` (an HTTP 4xx code) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Rater:
    id: int
    name: str


def find_rater(con: sqlite3.Connection, token: str) -> Rater:
    """The rater whose invitation token is ``token`` (compared in constant time with every rater's digest)."""
    digest = token_hash(token)
    found = None
    for row in con.execute("SELECT id, name, token_hash FROM raters ORDER BY id"):
        if same_secret(digest, row["token_hash"]):  # no early exit: every digest is compared
            found = Rater(int(row["id"]), str(row["name"]))
    if found is None:
        raise StudyError(403, "unknown invitation token: open the link you were sent, unchanged.")
    return found


def check_admin(con: sqlite3.Connection, token: str | None) -> None:
    """:class:`StudyError` 401 unless ``token`` is the study's admin token."""
    expected = read_meta(con)["admin_hash"]
    if not token or not same_secret(token_hash(token), expected):
        raise StudyError(401, "admin token missing or wrong: send the header 'Authorization: Bearer <admin token>'.")


def new_session(con: sqlite3.Connection, rater: Rater) -> tuple[str, str]:
    """A session id (for the cookie) and its CSRF token, stored as the id's digest."""
    sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with transaction(con):
        con.execute("INSERT INTO sessions (sid_hash, rater_id, csrf, created) VALUES (?, ?, ?, ?)",
                    (token_hash(sid), rater.id, csrf, time.time()))
    return sid, csrf


def check_session(con: sqlite3.Connection, rater: Rater, sid: str | None, csrf: str | None) -> None:
    """:class:`StudyError` 403 unless ``sid`` is a session of ``rater`` whose CSRF token is ``csrf``."""
    if not sid or not csrf:
        raise StudyError(403, "missing session cookie or X-CSRF-Token header: reload the invitation page.")
    row = con.execute("SELECT rater_id, csrf FROM sessions WHERE sid_hash = ?", (token_hash(sid),)).fetchone()
    if row is None or row["rater_id"] != rater.id or not same_secret(csrf, row["csrf"]):
        raise StudyError(403, "session or CSRF token not valid for this invitation: reload the invitation page.")


def progress(con: sqlite3.Connection, rater: Rater) -> tuple[int, int]:
    """``(answered, total)`` items of ``rater``."""
    total = con.execute("SELECT COUNT(*) FROM assignments WHERE rater_id = ?", (rater.id,)).fetchone()[0]
    done = con.execute("SELECT COUNT(*) FROM answers WHERE rater_id = ? AND locked = 1", (rater.id,)).fetchone()[0]
    return int(done), int(total)


def _current(con: sqlite3.Connection, rater: Rater) -> sqlite3.Row | None:
    return con.execute(
        "SELECT a.id, a.position, a.shown_at, i.lead, i.seconds, i.axis_note FROM assignments a "
        "JOIN items i ON i.id = a.item_id LEFT JOIN answers s ON s.assignment_id = a.id "
        "WHERE a.rater_id = ? AND (s.assignment_id IS NULL OR s.locked = 0) ORDER BY a.position LIMIT 1",
        (rater.id,)).fetchone()


def current_item(con: sqlite3.Connection, rater: Rater, *, img_prefix: str) -> dict[str, Any]:
    """The rater's state: progress and the first item without a locked answer (its first showing recorded)."""
    done, total = progress(con, rater)
    row = _current(con, rater)
    meta = read_meta(con)
    state: dict[str, Any] = {"design": meta["design"], "allow_change": bool(meta.get("allow_change")),
                             "answered": done, "total": total, "done": row is None, "item": None}
    if row is None:
        return state
    if row["shown_at"] is None:
        with transaction(con):
            con.execute("UPDATE assignments SET shown_at = ? WHERE id = ? AND shown_at IS NULL",
                        (time.time(), row["id"]))
    slots = con.execute("SELECT public_id, side FROM slots WHERE assignment_id = ? ORDER BY side",
                        (row["id"],)).fetchall()
    state["item"] = {"position": int(row["position"]), "lead": row["lead"], "seconds": round(float(row["seconds"]), 2),
                     "axis_note": row["axis_note"],
                     "strips": [{"side": s["side"], "src": f"{img_prefix}/{s['public_id']}"} for s in slots],
                     "saved": _saved(con, int(row["id"]))}
    return state


def _saved(con: sqlite3.Connection, assignment_id: int) -> dict[str, Any] | None:
    """The rater's own saved, still changeable answer to an item (``--allow-change`` studies), else ``None``."""
    s = con.execute("SELECT choice, same_class, confidence, comment FROM answers WHERE assignment_id = ?",
                    (assignment_id,)).fetchone()
    if s is None:
        return None
    return {"choice": s["choice"], "same_class": None if s["same_class"] is None else bool(s["same_class"]),
            "confidence": s["confidence"], "comment": s["comment"]}


def strip_png(con: sqlite3.Connection, rater: Rater, public_id: str) -> bytes:
    """The PNG of slot ``public_id`` if it belongs to an item of ``rater`` already shown (answered or current)."""
    row = con.execute(
        "SELECT st.png, a.shown_at FROM slots sl JOIN assignments a ON a.id = sl.assignment_id "
        "JOIN strips st ON st.id = sl.strip_id WHERE sl.public_id = ? AND a.rater_id = ?",
        (public_id, rater.id)).fetchone()
    if row is None or row["shown_at"] is None:
        raise StudyError(404, "no such strip among your items.")
    return bytes(row["png"])


def _field(body: dict[str, Any], key: str, allowed: tuple[Any, ...], *, required: bool) -> Any:
    v = body.get(key)
    if v is None and not required:
        return None
    bools = all(isinstance(a, bool) for a in allowed)
    typed = isinstance(v, bool) if bools else (isinstance(v, (int, str)) and not isinstance(v, bool))
    if not typed or v not in allowed:
        need = "required: " if required and v is None else ""
        raise StudyError(422, f"{need}'{key}' must be one of {list(allowed)}, got {v!r}.")
    return v


def parse_answer(body: Any, design: str) -> dict[str, Any]:
    """The validated answer fields of a POST body (a JSON object), :class:`StudyError` 422 otherwise."""
    if not isinstance(body, dict):
        raise StudyError(422, "the body must be a JSON object with 'position' and the answers.")
    extra = set(body) - {"position", "choice", "same_class", "confidence", "comment"}
    if extra:
        raise StudyError(422, f"unknown fields {sorted(extra)}.")
    pos = body.get("position")
    if isinstance(pos, bool) or not isinstance(pos, int) or pos < 0:
        raise StudyError(422, f"'position' must be the item's position (an integer >= 0), got {pos!r}.")
    choice = _field(body, "choice", CHOICES[design], required=design != "sameclass") if CHOICES[design] else None
    if design == "sameclass" and body.get("choice") is not None:
        raise StudyError(422, "'choice' is not asked in a same-class study; leave it out.")
    if design == "single" and body.get("same_class") is not None:
        raise StudyError(422, "'same_class' is not asked in a single-strip study; leave it out.")
    same = _field(body, "same_class", (True, False), required=design != "single")
    conf = _field(body, "confidence", (1, 2, 3, 4, 5), required=False)
    comment = body.get("comment") or ""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise StudyError(422, f"'comment' must be text of at most {MAX_COMMENT} characters.")
    return {"position": pos, "choice": choice, "same_class": None if same is None else int(same),
            "confidence": conf, "comment": comment}


def save_answer(con: sqlite3.Connection, rater: Rater, ans: dict[str, Any], *, allow_change: bool = False) -> bool:
    """Commit ``ans`` for the rater's current item; ``False`` when the very same answer was already stored.

    An answer is final (a different answer to an answered item is refused with 409), except in a study created
    with ``allow_change``: there a saved answer stays open (``locked = 0``) and may be replaced while its item is
    on screen, until :func:`next_item` locks it. An answer to an item not reached yet is refused. The commit
    happens before the caller serves the next item.
    """
    fields = ("choice", "same_class", "confidence", "comment")
    with transaction(con):
        a = con.execute("SELECT id, shown_at FROM assignments WHERE rater_id = ? AND position = ?",
                        (rater.id, ans["position"])).fetchone()
        if a is None:
            raise StudyError(404, f"you have no item at position {ans['position']}.")
        old = con.execute("SELECT choice, same_class, confidence, comment, locked FROM answers "
                          "WHERE assignment_id = ?", (a["id"],)).fetchone()
        if old is not None and all(old[f] == ans[f] for f in fields):
            return False
        if old is not None and old["locked"]:
            raise StudyError(409, f"item {ans['position'] + 1} is already answered; answers cannot be changed.")
        if old is not None:
            con.execute("UPDATE answers SET choice = ?, same_class = ?, confidence = ?, comment = ?, answered_at = ?, "
                        "revisions = revisions + 1 WHERE assignment_id = ?",
                        (*(ans[f] for f in fields), time.time(), a["id"]))
            return True
        cur = _current(con, rater)
        if cur is None or cur["id"] != a["id"] or a["shown_at"] is None:
            raise StudyError(409, f"item {ans['position'] + 1} is not your current item; reload the page.")
        con.execute("INSERT INTO answers (assignment_id, rater_id, choice, same_class, confidence, comment, "
                    "shown_at, answered_at, locked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (a["id"], rater.id, ans["choice"], ans["same_class"], ans["confidence"], ans["comment"],
                     a["shown_at"], time.time(), 0 if allow_change else 1))
    return True


def next_item(con: sqlite3.Connection, rater: Rater, position: Any) -> None:
    """Lock the saved answer at ``position`` (``--allow-change`` studies): the rater moves on; idempotent."""
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise StudyError(422, f"'position' must be the item's position (an integer >= 0), got {position!r}.")
    with transaction(con):
        row = con.execute("SELECT s.assignment_id FROM assignments a JOIN answers s ON s.assignment_id = a.id "
                          "WHERE a.rater_id = ? AND a.position = ?", (rater.id, position)).fetchone()
        if row is None:
            raise StudyError(409, f"item {position + 1} has no saved answer: answer it before moving on.")
        con.execute("UPDATE answers SET locked = 1 WHERE assignment_id = ?", (row["assignment_id"],))


def export_answers(con: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every answer with its item and its key (admin only): one dict per answer, ordered by rater and position."""
    out = []
    for r in con.execute(
            "SELECT r.name AS rater, a.position, i.id AS item, i.attack, i.record_id, i.label_name, i.lead, "
            "a.adv_side, a.shown_kind, s.choice, s.same_class, s.confidence, s.comment, s.shown_at, s.answered_at, "
            "s.locked, s.revisions "
            "FROM answers s JOIN assignments a ON a.id = s.assignment_id JOIN raters r ON r.id = s.rater_id "
            "JOIN items i ON i.id = a.item_id ORDER BY r.id, a.position"):
        out.append(dict(r))
    return out
