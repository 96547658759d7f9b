"""Load: 20 raters answer concurrently (httpx.AsyncClient) against a real uvicorn process, which is killed with
SIGKILL mid-run and restarted; every acknowledged answer is in the database exactly once, nothing else is."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from medrobust.study.create import StudySpec, create_study

from .conftest import free_port, require, start_server, token_of

require("fastapi", "uvicorn", "httpx")

import httpx  # noqa: E402

RATERS, PER_ATTACK = 20, 2  # 4 items each: 80 answers


async def _retry(call: Callable[[], Awaitable[httpx.Response]], stats: dict[str, int]) -> httpx.Response:
    """``call`` again while the server is down (connection refused or cut), for at most 60 s."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await call()
        except httpx.TransportError:
            stats["transport_errors"] += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _rater(i: int, base: str, token: str, acked: dict, stats: dict[str, int]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=20) as c:
        page = await _retry(lambda: c.get(f"/r/{token}"), stats)
        assert page.status_code == 200
        csrf = page.text.split("name='csrf-token' content='")[1].split("'")[0]
        headers = {"Origin": base, "X-CSRF-Token": csrf, "Content-Type": "application/json"}
        while True:
            st = await _retry(lambda: c.get(f"/api/r/{token}/state"), stats)
            assert st.status_code == 200, st.text
            state = st.json()
            if state["done"]:
                return
            pos = state["item"]["position"]
            for strip in state["item"]["strips"]:
                img = await _retry(lambda: c.get(strip["src"]), stats)
                assert img.status_code == 200 and img.content.startswith(b"\x89PNG")
            body = {"position": pos, "choice": "left" if (i + pos) % 2 else "right", "same_class": (i * pos) % 3 > 0,
                    "comment": f"r{i}-p{pos}"}
            r = await _retry(lambda: c.post(f"/api/r/{token}/answer", json=body, headers=headers), stats)
            assert r.status_code == 200, r.text
            stats["duplicates"] += int(r.json()["duplicate"])
            acked[(f"rater{i + 1:02d}", pos)] = body


async def _killer(proc: Any, db: Path, port: int, acked: dict, out: dict) -> None:
    while len(acked) < RATERS * PER_ATTACK:  # about half of the 80 answers in
        await asyncio.sleep(0.005)
    proc.kill()
    proc.wait()
    out["acked_at_kill"] = len(acked)
    await asyncio.sleep(0.3)
    out["server"] = await asyncio.to_thread(start_server, db, port)


def test_twenty_raters_and_a_sigkill(pairs_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "load.db"
    result = create_study(pairs_dir, db, StudySpec(raters=RATERS, per_attack=PER_ATTACK, seed=1))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    first = start_server(db, port)
    acked: dict[tuple[str, int], dict] = {}
    stats = {"transport_errors": 0, "duplicates": 0}
    out: dict[str, Any] = {}

    async def main() -> None:
        tasks = [_rater(i, base, token_of(url), acked, stats) for i, url in enumerate(result["invitations"].values())]
        await asyncio.gather(_killer(first, db, port, acked, out), *tasks)

    try:
        asyncio.run(main())
    finally:
        for proc in (first, out.get("server")):
            if proc is not None:
                proc.kill()
                proc.wait()
    assert first.returncode == -9 and out["server"].pid != first.pid  # really killed with SIGKILL, then restarted
    assert out["acked_at_kill"] < RATERS * PER_ATTACK * 2 and stats["transport_errors"] > 0  # killed mid-run
    con = sqlite3.connect(db)
    rows = con.execute("SELECT r.name, a.position, s.choice, s.same_class, s.comment FROM answers s "
                       "JOIN assignments a ON a.id = s.assignment_id JOIN raters r ON r.id = s.rater_id").fetchall()
    con.close()
    print(f"load: {len(rows)} answers, kill after {out['acked_at_kill']} acknowledged, {stats}")
    assert len(acked) == len(rows) == RATERS * PER_ATTACK * 2
    stored = {(name, pos): {"position": pos, "choice": c, "same_class": bool(same), "comment": com}
              for name, pos, c, same, com in rows}
    assert len(stored) == len(rows)  # no (rater, position) twice
    assert stored == acked
