"""``medrobust leaderboard build``: a self-contained site; sorting and card links checked in headless Chromium."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from medrobust.errors import DataError
from medrobust.leaderboard import add, build, load_task


def _playwright() -> Any:
    try:
        from playwright import sync_api
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is missing: CI must install it (pip install playwright; the browser is the "
                        "system chromium)")
        pytest.skip("playwright not installed (pip install playwright); the site is not driven in a browser")
    return sync_api


@pytest.fixture(scope="module")
def site(env: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    board = tmp_path_factory.mktemp("board")
    for name in ("tiny-a", "tiny-b", "tiny-c"):
        add(env.cards[name], board=board, task=env.task, zoo_root=env.zoo)
    build(board=board, out=board / "site", tasks=[load_task(env.task), load_task("mitdb-intra")], zoo_root=env.zoo)
    return board / "site"


def test_site_is_self_contained_and_complete(site: Path, env: Any) -> None:
    html = (site / "index.html").read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)      # inline CSS/JS only, no CDN
    assert "http://" not in html and "https://" not in html
    data = json.loads((site / "leaderboard.json").read_text())
    assert [e["id"] for e in data["entries"]] == ["tiny-a", "tiny-b", "tiny-c"]
    assert {t["task"] for t in data["tasks"]} == {"synth-test", "mitdb-intra"}
    for e in data["entries"]:
        copied = site / "cards" / "synth-test" / f"{e['id']}.json"
        assert copied.read_bytes() == (env.cards[e["id"]] / "card.json").read_bytes()
        assert f'href="cards/synth-test/{e["id"]}.json"' in html
        report = site / "reports" / "synth-test" / f"{e['id']}.html"      # rendered from the card
        assert f'href="reports/synth-test/{e["id"]}.html"' in html and "<!DOCTYPE html>" in report.read_text()[:200]
        assert f"{e['clean']['numerator']}/{e['clean']['denominator']}" in report.read_text()
    rows = re.findall(r'<tr class="([a-z]*)" data-id="([^"]+)"', html)
    # unflagged first, by robust accuracy at the largest radius; the flagged (degenerate) model last
    by_id = {e["id"]: e for e in data["entries"]}
    assert rows[-1] == ("flagged", "tiny-c") and {r[1] for r in rows[:2]} == {"tiny-a", "tiny-b"}
    assert by_id[rows[0][1]]["robust"][-1]["value"] >= by_id[rows[1][1]]["robust"][-1]["value"]
    assert by_id["tiny-c"]["robust"][-1]["value"] > by_id[rows[0][1]]["robust"][-1]["value"]   # yet last
    flags = {e["id"]: [f["code"] for f in e["flags"]] for e in data["entries"]}
    assert flags["tiny-a"] == flags["tiny-b"] == [] and "degenerate-model" in flags["tiny-c"]   # a real flag
    assert "No entries yet (ensemble: pgd100, sap, spsa)" in html     # mitdb-intra's open rows
    assert "not-evaluated: no UAP card" in html
    assert "In the model zoo without a board entry yet" not in html   # every test zoo model has its entry


def test_changed_card_after_validation_stops_the_build(env: Any, card_copy: Any, tmp_path: Path) -> None:
    folder = card_copy("tiny-a")
    add(folder, board=tmp_path / "b", task=env.task, zoo_root=env.zoo)
    card = json.loads((folder / "card.json").read_text())
    card["clean"]["accuracy"]["numerator"] += 1
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(DataError, match="missing or changed since it was validated"):
        build(board=tmp_path / "b", out=tmp_path / "site", tasks=[load_task(env.task)], reports=False)


def test_sort_by_clicking_and_follow_a_card_link_in_chromium(site: Path, tmp_path: Path, chromium: str) -> None:
    exe = chromium
    sync_api = _playwright()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((site / "index.html").as_uri())
        table = page.locator("table#synth-test--linf")
        head = table.locator("th", has_text="clean accuracy")

        def column(i: int) -> list[float]:
            return [float(v) for v in table.locator(f"tbody tr td:nth-child({i})").evaluate_all(
                "cells => cells.map(c => c.getAttribute('data-value'))")]

        idx = 1 + table.locator("thead th").evaluate_all("hs => hs.map(h => h.textContent)").index(head.inner_text())
        head.click()
        desc = column(idx)
        assert desc == sorted(desc, reverse=True) and len(set(desc)) > 1, desc
        assert "sorted-desc" in (head.get_attribute("class") or "")
        head.click()
        asc = column(idx)
        assert asc == sorted(asc) and asc == desc[::-1]
        first = table.locator("tbody tr").first.get_attribute("data-id")
        table.locator("tbody tr").first.locator("a.card-link").click()
        page.wait_for_load_state()
        assert page.url.endswith(f"/cards/synth-test/{first}.json")
        card = json.loads(page.locator("body").inner_text())
        assert card["format"] == "medrobust-result-card/1"
        assert card["clean"]["accuracy"]["value"] == pytest.approx(asc[0], abs=1e-6)
        browser.close()
    assert errors == []


def test_zoo_models_without_an_entry_are_listed_under_their_task(tmp_path: Path) -> None:
    from html import escape

    from medrobust import zoo

    index = build(board=tmp_path / "empty", out=tmp_path / "site")      # the shipped zoo, no board entries
    html = index.read_text()
    for e in zoo.list():
        section = html[html.index(f'<h2 id="{e.task}">'):]
        section = section[:section.index("<h2", 5)] if "<h2" in section[5:] else section
        assert (f"<code>{e.id}</code> ({e.architecture}, {escape(e.defence)}, {e.parameters:,} parameters)"
                in section)
    assert "0 entries." in html and "<table" not in html
    assert "the smooth SNR-bounded attack (SAP) is defined for 1-D signals" in html    # a not-applicable row's reason
