"""Build the real board (``leaderboard/``) and save a headless-Chromium screenshot as ``board.png`` beside this file.

Run from the repository root: ``python docs/examples/leaderboard/screenshot.py`` (needs Playwright for Python and
a system Chromium at /usr/bin/chromium; nothing is downloaded).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from medrobust.leaderboard import build

HERE = Path(__file__).resolve().parent


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        index = build(board="leaderboard", out=Path(tmp) / "site")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(index.as_uri())
            png = page.screenshot(full_page=True)
            browser.close()
    # a 32-colour palette keeps the text sharp at a fraction of the size (Pillow comes with matplotlib)
    from io import BytesIO

    from PIL import Image

    Image.open(BytesIO(png)).convert("RGB").quantize(colors=32).save(HERE / "board.png", optimize=True)
    size = (HERE / "board.png").stat().st_size
    print(f"{HERE / 'board.png'}: {size / 1024:.0f} KB")
    return 0 if size < 300_000 else 1


if __name__ == "__main__":
    sys.exit(main())
