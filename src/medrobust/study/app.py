"""``medrobust study serve DB``: the raters' web app (FastAPI on uvicorn; plain JS, no CDN, works offline).

A rater opens ``/r/<invitation token>``; the page loads ``/static/study.js``, which asks
``/api/r/<token>/state`` for the current item and shows its strips (``/img/<token>/<public id>``), one item at a
time with a progress bar and keyboard shortcuts, and posts each answer as JSON to ``/api/r/<token>/answer``
(in an ``--allow-change`` study the answer stays changeable until ``/api/r/<token>/next`` moves on).

Security: invitation and admin tokens are compared in constant time (:mod:`medrobust.study.store`); a rater sees
only their own items, and a strip only once its item is reached; a POST must come from the server's own origin
(``Origin``, else ``Referer``) and carry the session cookie and its CSRF token (``X-CSRF-Token``); bodies over
``max_body`` bytes are refused with 413; all input is validated with clear 4xx messages; the answer key is never
selected for a rater. Admin endpoints (``/admin/export``, ``/admin/report``) need ``Authorization: Bearer <admin
token>``. Each answer is committed before the next item is served.
"""

from __future__ import annotations

import html
import json
import re
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from medrobust.study import store
from medrobust.study.schema import connect, read_meta
from medrobust.study.store import StudyError

MAX_BODY = 16 * 1024
COOKIE = "mr_sid"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

QUESTIONS = {
    "2afc": "Two strips of the same record: one is the original, the other was altered. Which one was altered? "
            "Do both show the same rhythm / class?",
    "single": "One strip: is it the original recording or was it altered?",
    "sameclass": "Two strips of the same record: do both show the same rhythm / class?",
}


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes (declared or streamed)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _plain_json(send, 413, f"request body over {self.limit} bytes: send a shorter answer.")
            return
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b"")) if msg["type"] == "http.request" else 0
            if seen > self.limit:
                raise StudyError(413, f"request body over {self.limit} bytes: send a shorter answer.")
            return msg

        await self.app(scope, limited, send)


async def _plain_json(send: Callable[..., Any], status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _check_token(token: str) -> None:
    if not TOKEN_RE.match(token):
        raise StudyError(403, "unknown invitation token: open the link you were sent, unchanged.")


def same_origin(headers: Any, *, scheme: str) -> bool:
    """Whether a request's ``Origin`` (else ``Referer``) is this server (``scheme://Host``)."""
    host = headers.get("host")
    origin = headers.get("origin")
    if origin is None or origin == "null":
        ref = headers.get("referer")
        if not ref:
            return False
        parts = urlsplit(ref)
        origin = f"{parts.scheme}://{parts.netloc}"
    return bool(host) and origin == f"{scheme}://{host}"


def _page(title: str, body: str, *, csrf: str = "", design: str = "") -> str:
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width'><title>{html.escape(title)}</title>"
            f"<meta name='csrf-token' content='{html.escape(csrf)}'>"
            f"<meta name='design' content='{html.escape(design)}'>"
            "<link rel='stylesheet' href='/static/study.css'></head>"
            f"<body>{body}</body></html>")


def _rater_page(name: str, design: str, csrf: str, allow_change: bool) -> str:
    qs = {"2afc": ("<fieldset id='q-choice'><legend>Which strip was altered?</legend>"
                   "<button type='button' data-choice='left'>Strip A (top) <kbd>A</kbd></button>"
                   "<button type='button' data-choice='right'>Strip B (bottom) <kbd>B</kbd></button></fieldset>"),
          "single": ("<fieldset id='q-choice'><legend>Is this strip the original or altered?</legend>"
                     "<button type='button' data-choice='real'>Original <kbd>O</kbd></button>"
                     "<button type='button' data-choice='altered'>Altered <kbd>X</kbd></button></fieldset>")}
    same = ("" if design == "single" else
            "<fieldset id='q-same'><legend>Do both strips show the same rhythm / class?</legend>"
            "<button type='button' data-same='true'>Same <kbd>Y</kbd></button>"
            "<button type='button' data-same='false'>Different <kbd>N</kbd></button></fieldset>")
    final = ("A submitted answer can be changed until you move to the next item." if allow_change else
             "Answers are final once submitted.")
    body = (f"<header><h1>ECG reading study</h1><p>Rater: <b>{html.escape(name)}</b>. {html.escape(QUESTIONS[design])} "
            f"{final}</p>"
            "<div class='bar'><div id='bar'></div></div><p id='progress'>loading…</p></header>"
            "<main id='item' hidden><p id='caption'></p><div id='strips'></div>"
            f"<form id='answer'>{qs.get(design, '')}{same}"
            "<fieldset id='q-conf'><legend>Confidence (optional)</legend>"
            + "".join(f"<button type='button' data-conf='{i}'>{i} <kbd>{i}</kbd></button>" for i in range(1, 6))
            + "</fieldset><label>Comment (optional) <textarea id='comment' maxlength='2000' rows='2'></textarea>"
            "</label><p><button type='submit' id='submit' disabled>Submit <kbd>Enter</kbd></button> "
            "<button type='button' id='next' hidden>Next item <kbd>Enter</kbd></button> <span id='saved'></span>"
            "<span id='error' role='alert'></span></p></form></main>"
            "<section id='done' hidden><h2>Thank you</h2><p>All items are answered. You can close this page.</p>"
            "</section><script src='/static/study.js'></script>")
    return _page("ECG reading study", body, csrf=csrf, design=design)


Opener = Callable[[], Any]
"""``with opener() as con:`` one database connection per request (closed afterwards)."""


def create_app(db_path: str | Path, *, max_body: int = MAX_BODY) -> FastAPI:
    """The FastAPI application serving the study in ``db_path`` (checked to be a study database now)."""
    db = Path(db_path)
    connect(db).close()
    app = FastAPI(title="medrobust study", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=max_body)

    @contextmanager
    def con() -> Iterator[sqlite3.Connection]:
        c = connect(db)
        try:
            yield c
        finally:
            c.close()

    @app.exception_handler(StudyError)
    async def _study_error(request: Request, exc: StudyError) -> Response:
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=SECURITY_HEADERS)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[..., Any]) -> Response:
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    _static_routes(app)
    _rater_routes(app, con)
    _admin_routes(app, con, db)
    return app


def _static_routes(app: FastAPI) -> None:
    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return _page("ECG reading study", "<h1>ECG reading study</h1><p>Open the invitation link you were sent.</p>")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        from medrobust.study.assets import STUDY_CSS, STUDY_JS

        files = {"study.js": (STUDY_JS, "text/javascript; charset=utf-8"),
                 "study.css": (STUDY_CSS, "text/css; charset=utf-8")}
        if name not in files:
            raise StudyError(404, f"no static file {name!r}.")
        return Response(files[name][0].encode("utf-8"), media_type=files[name][1])


def _rater_routes(app: FastAPI, con: Opener) -> None:
    @app.get("/r/{token}", response_class=HTMLResponse)
    def rater_page(token: str) -> Response:
        _check_token(token)
        with con() as c:
            rater = store.find_rater(c, token)
            sid, csrf = store.new_session(c, rater)
            meta = read_meta(c)
        resp = HTMLResponse(_rater_page(rater.name, meta["design"], csrf, bool(meta.get("allow_change"))))
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path="/")
        return resp

    @app.get("/api/r/{token}/state")
    def state(token: str) -> dict[str, Any]:
        _check_token(token)
        with con() as c:
            return store.current_item(c, store.find_rater(c, token), img_prefix=f"/img/{token}")

    @app.get("/img/{token}/{public_id}")
    def image(token: str, public_id: str) -> Response:
        _check_token(token)
        if not TOKEN_RE.match(public_id):
            raise StudyError(404, "no such strip among your items.")
        with con() as c:
            png = store.strip_png(c, store.find_rater(c, token), public_id)
        return Response(png, media_type="image/png")

    @app.post("/api/r/{token}/answer")
    async def answer(token: str, request: Request) -> Any:
        from starlette.concurrency import run_in_threadpool

        body = await _json_post(token, request)
        return await run_in_threadpool(_answer, token, request.cookies.get(COOKIE),
                                       request.headers.get("x-csrf-token"), body)

    @app.post("/api/r/{token}/next")
    async def next_(token: str, request: Request) -> Any:
        from starlette.concurrency import run_in_threadpool

        body = await _json_post(token, request)
        return await run_in_threadpool(_next, token, request.cookies.get(COOKIE),
                                       request.headers.get("x-csrf-token"), body)

    def _answer(token: str, sid: str | None, csrf: str | None, body: Any) -> dict[str, Any]:
        with con() as c:
            rater = store.find_rater(c, token)
            store.check_session(c, rater, sid, csrf)
            meta = read_meta(c)
            ans = store.parse_answer(body, meta["design"])
            stored = store.save_answer(c, rater, ans, allow_change=bool(meta.get("allow_change")))
            return {"stored": stored, "duplicate": not stored,
                    "state": store.current_item(c, rater, img_prefix=f"/img/{token}")}

    def _next(token: str, sid: str | None, csrf: str | None, body: Any) -> dict[str, Any]:
        with con() as c:
            rater = store.find_rater(c, token)
            store.check_session(c, rater, sid, csrf)
            if not isinstance(body, dict) or set(body) != {"position"}:
                raise StudyError(422, "the body must be a JSON object {\"position\": N}.")
            store.next_item(c, rater, body["position"])
            return {"state": store.current_item(c, rater, img_prefix=f"/img/{token}")}


async def _json_post(token: str, request: Request) -> Any:
    """The JSON body of a rater's POST after the token, origin and content-type checks (CSRF: see the callers)."""
    _check_token(token)
    if not same_origin(request.headers, scheme=request.url.scheme):
        raise StudyError(403, "cross-origin request refused: answer from the study page itself.")
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise StudyError(415, "send the answer as JSON (Content-Type: application/json).")
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise StudyError(400, "the body is not valid JSON.") from None


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else None


def _admin_routes(app: FastAPI, con: Opener, db: Path) -> None:
    @app.get("/admin/export")
    def export(request: Request) -> Any:
        with con() as c:
            store.check_admin(c, _bearer(request))
            return {"meta": {k: v for k, v in read_meta(c).items() if k != "admin_hash"},
                    "answers": store.export_answers(c)}

    @app.get("/admin/report", response_class=HTMLResponse)
    def report(request: Request) -> str:
        from medrobust.study.analyze import analyze_db, render_html

        with con() as c:
            store.check_admin(c, _bearer(request))
        return render_html(analyze_db(db))


def serve(db_path: str | Path, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the app on uvicorn (one process: SQLite serialises the writes)."""
    import uvicorn

    uvicorn.run(create_app(db_path), host=host, port=port, log_level="warning", access_log=False)
