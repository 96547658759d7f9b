"""End to end in Debian's Chromium (Playwright, no browser download): a rater follows the invitation, answers 10
items with clicks and keys, reloads mid-way and resumes; the database holds exactly those answers. Screenshots of
the item page and of the analysis report are kept as artefacts (under the test's tmp dir, and in
$MEDROBUST_STUDY_SHOTS when set)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from .conftest import token_of


def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: CI must install it (apt-get install -y chromium) before the tests")
        pytest.skip("headless Chromium not installed (apt-get install -y chromium); browser test not run")
    return path


def _keep(shot: Path) -> None:
    dest = os.environ.get("MEDROBUST_STUDY_SHOTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(dest) / shot.name)


# per item: (which strip: A = left / B = right, same class?, confidence or None, comment)
PLAN = [("A", True, 4, ""), ("B", True, None, ""), ("A", False, 2, "P waves look odd"), ("B", True, 5, ""),
        ("A", True, 1, ""),  # reload here
        ("B", False, 3, "x'); DROP TABLE answers; --"), ("A", True, None, ""), ("B", True, 2, "µV noise?"),
        ("A", True, 3, ""), ("B", False, 4, "")]


def test_rater_in_chromium(server: tuple, tmp_path: Path) -> None:
    exe = _chromium()
    from playwright.sync_api import sync_playwright

    base, db, result, _ = server
    url = f"{base}/r/{token_of(result['invitations']['rater01'])}"
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1150, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            for i, (strip, same, conf, comment) in enumerate(PLAN):
                if i == 5:
                    page.reload()
                page.wait_for_selector(f"#item[data-position='{i}']:not([hidden])")
                assert page.inner_text("#progress") == f"{i} of 10 answered"
                page.wait_for_function("Array.from(document.querySelectorAll('#strips img'))"
                                       ".every(im => im.complete && im.naturalWidth > 1000)")
                assert page.locator("#strips img").count() == 2
                assert page.is_disabled("#submit")
                if i < 5:  # mouse
                    page.click(f"[data-choice='{'left' if strip == 'A' else 'right'}']")
                    page.click(f"[data-same='{'true' if same else 'false'}']")
                    if conf:
                        page.click(f"[data-conf='{conf}']")
                    if comment:
                        page.fill("#comment", comment)
                    if i == 2:
                        shot = tmp_path / "study_item.png"
                        page.screenshot(path=str(shot), full_page=True)
                        _keep(shot)
                    page.click("#submit")
                else:  # keyboard
                    if comment:
                        page.fill("#comment", comment)
                        page.focus("body")
                        page.locator("#comment").blur()
                    page.keyboard.press(strip.lower())
                    page.keyboard.press("y" if same else "n")
                    if conf:
                        page.keyboard.press(str(conf))
                    assert page.get_attribute(f"[data-choice='{'left' if strip == 'A' else 'right'}']",
                                              "aria-pressed") == "true"
                    page.keyboard.press("Enter")
            page.wait_for_selector("body[data-done='true']")
            assert page.inner_text("#progress") == "10 of 10 answered"
            page.reload()  # a finished rater stays finished
            page.wait_for_selector("body[data-done='true']")
            from medrobust.study.analyze import write_report

            paths = write_report(db, tmp_path / "report")
            page.goto(paths["html"].as_uri())
            shot = tmp_path / "study_report.png"
            page.screenshot(path=str(shot), full_page=True)
            _keep(shot)
            assert "Detection of the altered strip" in page.inner_text("h2")
        finally:
            browser.close()
    assert errors == []
    con = sqlite3.connect(db)
    rows = con.execute("SELECT a.position, s.choice, s.same_class, s.confidence, s.comment FROM answers s JOIN "
                       "assignments a ON a.id = s.assignment_id WHERE a.rater_id = 1 ORDER BY a.position").fetchall()
    others = con.execute("SELECT COUNT(*) FROM answers WHERE rater_id != 1").fetchone()[0]
    con.close()
    expected = [(i, "left" if s == "A" else "right", int(same), conf, comment)
                for i, (s, same, conf, comment) in enumerate(PLAN)]
    assert rows == expected and others == 0
    assert (tmp_path / "study_item.png").stat().st_size > 20_000
