"""End to end in Debian's Chromium (Playwright, no browser download): a rater follows the invitation, answers 10
items with clicks and keys, reloads mid-way and resumes; the database holds exactly those answers. Screenshots of
the item page and of the analysis report are kept as artefacts (under the test's tmp dir, and in
$MEDROBUST_STUDY_SHOTS when set)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from .conftest import require, thread_server, token_of

require("fastapi", "uvicorn", "playwright")


def _keep(shot: Path) -> None:
    dest = os.environ.get("MEDROBUST_STUDY_SHOTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(dest) / shot.name)


def _wait_for_strips(page: Any, timeout: float = 30.0) -> None:
    """Until both strips are decoded. Polled from Python: Playwright's wait_for_function would evaluate a string
    in the page, which the study's Content-Security-Policy (no 'unsafe-eval') rightly refuses."""
    deadline = time.monotonic() + timeout
    js = "() => Array.from(document.querySelectorAll('#strips img')).every(im => im.complete && im.naturalWidth > 1000)"
    while not page.evaluate(js):
        assert time.monotonic() < deadline, "the strips did not load"
        page.wait_for_timeout(50)


INJECT = """() => new Promise(done => {
  document.addEventListener('securitypolicyviolation', e => done(e.violatedDirective), {once: true});
  const s = document.createElement('script');
  s.textContent = 'window.__injected = 1';
  document.body.appendChild(s);
  setTimeout(() => done(window.__injected ? 'ran' : 'no violation reported'), 3000);
})"""

# per item: (which strip: A = left / B = right, same class?, confidence or None, comment)
PLAN = [("A", True, 4, ""), ("B", True, None, ""), ("A", False, 2, "P waves look odd"), ("B", True, 5, ""),
        ("A", True, 1, ""),  # reload here
        ("B", False, 3, "x'); DROP TABLE answers; --"), ("A", True, None, ""), ("B", True, 2, "µV noise?"),
        ("A", True, 3, ""), ("B", False, 4, "")]


def _allow_change_flow(browser: Any, pairs_dir: Path, tmp_path: Path) -> None:
    """An --allow-change study in the same browser: save, change, move on with Enter, reload, Next button."""
    from medrobust.study.create import StudySpec, create_study

    db = tmp_path / "change.db"
    result = create_study(pairs_dir, db, StudySpec(raters=1, per_attack=1, allow_change=True))
    with thread_server(db) as base:
        page = browser.new_page(viewport={"width": 1150, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/r/{token_of(result['invitations']['rater01'])}")
        page.wait_for_selector("#item[data-position='0']:not([hidden])")
        assert page.is_hidden("#next")
        page.click("[data-choice='left']")
        page.click("[data-same='true']")
        page.click("#submit")
        page.wait_for_selector("#item[data-saved='left,true,']")
        assert page.is_visible("#next") and "Saved" in page.inner_text("#saved")
        assert page.inner_text("#progress") == "0 of 2 answered"
        page.keyboard.press("b")  # change of mind: strip B
        page.keyboard.press("Enter")  # saves the change
        page.wait_for_selector("#item[data-saved='right,true,']")  # the server's answer to the change
        page.keyboard.press("Enter")  # unchanged: moves on
        page.wait_for_selector("#item[data-position='1']:not([hidden])")
        page.reload()
        page.wait_for_selector("#item[data-position='1']:not([hidden])")
        page.keyboard.press("a")
        page.keyboard.press("n")
        page.keyboard.press("Enter")
        page.wait_for_selector("#next:not([hidden])")
        page.click("#next")
        page.wait_for_selector("body[data-done='true']")
        assert errors == []
    con = sqlite3.connect(db)
    rows = con.execute("SELECT a.position, s.choice, s.same_class, s.locked, s.revisions FROM answers s JOIN "
                       "assignments a ON a.id = s.assignment_id ORDER BY a.position").fetchall()
    con.close()
    assert rows == [(0, "right", 1, 1, 1), (1, "left", 0, 1, 0)]


def test_rater_in_chromium(server: tuple, pairs_dir: Path, tmp_path: Path, chromium: str) -> None:
    exe = chromium
    from playwright.sync_api import sync_playwright

    base, db, result = server
    url = f"{base}/r/{token_of(result['invitations']['rater01'])}"
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1150, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            # the Content-Security-Policy is enforced: an injected inline script does not run
            verdict = page.evaluate(INJECT)
            assert verdict.startswith("script-src") and page.evaluate("() => window.__injected") is None
            assert any("Content Security Policy" in e for e in errors)
            errors.clear()
            for i, (strip, same, conf, comment) in enumerate(PLAN):
                if i == 5:
                    page.reload()
                page.wait_for_selector(f"#item[data-position='{i}']:not([hidden])")
                assert page.inner_text("#progress") == f"{i} of 10 answered"
                _wait_for_strips(page)
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
            _allow_change_flow(browser, pairs_dir, tmp_path)
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
