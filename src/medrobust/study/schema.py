"""The study database: one SQLite file (WAL mode, schema versioned) holding items, strips, raters and answers.

Every statement is parameterised (``?`` placeholders); no value is ever formatted into SQL text. The answer key
(which strip of a pair is the adversarial one) lives in ``assignments.adv_side`` / ``assignments.shown_kind`` and
``strips.kind`` only; the web app reads it to score nothing and to show nothing: pages and APIs select only the
columns a rater may see (:mod:`medrobust.study.app`). Answers are committed one transaction each, in WAL mode
with ``synchronous=FULL``, before the next item is served, so a server killed with SIGKILL loses no answer
that was acknowledged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from medrobust.errors import ConfigError, DataError

SCHEMA_VERSION = 1
DESIGNS = ("2afc", "single", "sameclass")
"""Study designs: two-alternative forced choice ("which strip was altered?" and "same class?"), a single strip
("real or altered?"), and the same/different class question only."""

_TABLES = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE items (
        id INTEGER PRIMARY KEY, attack TEXT NOT NULL, record_id TEXT NOT NULL, label INTEGER NOT NULL,
        label_name TEXT NOT NULL, clean_pred INTEGER, adv_pred INTEGER, lead TEXT NOT NULL, fs REAL NOT NULL,
        seconds REAL NOT NULL, axis_note TEXT NOT NULL, source_index INTEGER NOT NULL)""",
    """CREATE TABLE strips (
        id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items(id), kind TEXT NOT NULL
        CHECK (kind IN ('clean', 'adversarial')), png BLOB NOT NULL, UNIQUE (item_id, kind))""",
    """CREATE TABLE raters (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token_hash TEXT NOT NULL UNIQUE)""",
    """CREATE TABLE assignments (
        id INTEGER PRIMARY KEY, rater_id INTEGER NOT NULL REFERENCES raters(id), position INTEGER NOT NULL,
        item_id INTEGER NOT NULL REFERENCES items(id), adv_side TEXT CHECK (adv_side IN ('left', 'right')),
        shown_kind TEXT CHECK (shown_kind IN ('clean', 'adversarial')), shown_at REAL,
        UNIQUE (rater_id, position), UNIQUE (rater_id, item_id))""",
    """CREATE TABLE slots (
        public_id TEXT PRIMARY KEY, assignment_id INTEGER NOT NULL REFERENCES assignments(id),
        side TEXT NOT NULL CHECK (side IN ('left', 'right', 'single')), strip_id INTEGER NOT NULL REFERENCES strips(id),
        UNIQUE (assignment_id, side))""",
    """CREATE TABLE sessions (
        sid_hash TEXT PRIMARY KEY, rater_id INTEGER NOT NULL REFERENCES raters(id), csrf TEXT NOT NULL,
        created REAL NOT NULL)""",
    """CREATE TABLE answers (
        assignment_id INTEGER PRIMARY KEY REFERENCES assignments(id), rater_id INTEGER NOT NULL REFERENCES raters(id),
        choice TEXT, same_class INTEGER, confidence INTEGER, comment TEXT NOT NULL DEFAULT '',
        shown_at REAL NOT NULL, answered_at REAL NOT NULL, locked INTEGER NOT NULL DEFAULT 1,
        revisions INTEGER NOT NULL DEFAULT 0)""",
)


def token_hash(token: str) -> str:
    """SHA-256 hex digest of a secret token (the database stores only digests)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_secret(a: str, b: str) -> bool:
    """Constant-time comparison of two secret strings (:func:`hmac.compare_digest`)."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def connect(path: str | Path, *, create: bool = False) -> sqlite3.Connection:
    """Open the study database (``create``: a new file, which must not exist) with WAL, FULL sync and a busy wait.

    An existing file must be a study database of this :data:`SCHEMA_VERSION`.
    """
    p = Path(path)
    if create and p.exists():
        raise ConfigError(f"--out {p}: the file exists; choose a new database file name (a study is never "
                          "overwritten: it may hold answers).")
    if not create and not p.is_file():
        raise ConfigError(f"study database {p} not found; create it with `medrobust study create`.")
    con = sqlite3.connect(str(p), timeout=30.0, isolation_level=None)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA busy_timeout = 30000")
    con.execute("PRAGMA foreign_keys = ON")
    try:
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = FULL")
        if not create:
            check_version(con, p)
    except sqlite3.DatabaseError as exc:
        con.close()
        raise DataError(f"{p} is not a study database ({exc}); create one with `medrobust study create`.") from None
    except DataError:
        con.close()
        raise
    return con


def check_version(con: sqlite3.Connection, path: Path) -> None:
    """:class:`DataError` unless ``con`` holds a study database of :data:`SCHEMA_VERSION`."""
    has = con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?",
                      ("schema_version",)).fetchone()
    if has is None:
        raise DataError(f"{path} is not a study database (no schema_version table); create one with "
                        "`medrobust study create`.")
    row = con.execute("SELECT version FROM schema_version").fetchone()
    if row is None or row[0] != SCHEMA_VERSION:
        found = None if row is None else row[0]
        raise DataError(f"{path} has study schema version {found}; this medrobust reads version {SCHEMA_VERSION}.")


def create_schema(con: sqlite3.Connection, meta: dict[str, Any]) -> None:
    """Create the tables and write the schema version and the study's settings (``meta``, JSON values)."""
    with transaction(con):
        for sql in _TABLES:
            con.execute(sql)
        con.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                        [(k, json.dumps(v)) for k, v in meta.items()])


class transaction:
    """``with transaction(con):`` one ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on an exception)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def __enter__(self) -> sqlite3.Connection:
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.con.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def read_meta(con: sqlite3.Connection) -> dict[str, Any]:
    """The study's settings as written by :func:`create_schema`."""
    return {r["key"]: json.loads(r["value"]) for r in con.execute("SELECT key, value FROM meta")}


def rows(con: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> Iterator[dict[str, Any]]:
    """The rows of a parameterised query as dicts."""
    for r in con.execute(sql, params):
        yield dict(r)
