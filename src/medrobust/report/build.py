"""``write_report(run_dir)``: read the card and the examples, draw the figures, write Markdown and HTML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from medrobust.atomic import atomic_write_bytes
from medrobust.errors import ConfigError, DataError
from medrobust.evaluation.card import CARD_NAME, EXAMPLES_NAME, load_card, read_npz
from medrobust.report import figures as F
from medrobust.report.render import build_blocks, to_html, to_markdown

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"
CARD_SECTIONS = ("title", "data", "model", "threat_model", "protocol", "clean", "results", "curves", "flags",
                 "environment", "seeds", "timings")
"""Top-level sections the report reads from a result card."""


def check_card(card: dict[str, Any], path: Path) -> None:
    """Refuse a card that lacks a section the report needs (one line naming the card and the sections)."""
    missing = [k for k in CARD_SECTIONS if k not in card]
    if missing:
        raise DataError(f"the result card {path} lacks {', '.join(missing)}: it is incomplete or was edited; run "
                        f"`medrobust evaluate ... --out {path.parent}` again to rewrite it.")


def _read_examples(path: Path) -> dict[str, Any] | None:
    """The run's examples (``None`` when absent or empty); a corrupt file is a :class:`DataError`."""
    if not path.is_file():
        return None
    ex = read_npz(path)
    needed = ("x", "x_adv", "ids", "labels", "eps", "adv_pred", "y", "clean_pred", "classes", "fs", "units", "leads",
              "success")
    missing = [k for k in needed if k not in ex]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}: it is not an examples file written by medrobust "
                        "evaluate; delete it (the report is then written without examples) or evaluate again.")
    return ex if len(ex["x"]) else None


def write_report(run_dir: str | os.PathLike[str], *, progress: bool = True, max_ecg_examples: int = 5
                 ) -> tuple[Path, Path]:
    """Write ``RUN_DIR/report.md`` (with ``figures/*.png``) and the self-contained ``RUN_DIR/report.html``.

    Parameters
    ----------
    run_dir
        A folder written by :func:`medrobust.evaluation.evaluate` (holding ``card.json``).
    progress
        Show a progress bar over the figures.
    max_ecg_examples
        At most this many single-record ECG figures.

    Returns
    -------
    (Path, Path)
        The Markdown and HTML files.
    """
    run = Path(run_dir)
    card = load_card(run)
    check_card(card, run / CARD_NAME if run.is_dir() else run)
    ex = _read_examples(run / EXAMPLES_NAME)
    jobs: list[tuple[str, str, Callable[[], bytes | None]]] = [
        ("curves", "Accuracy under attack versus ε for each attack (dashed, hollow markers), the ensemble's pointwise "
                   "worst case (thick grey line) and, when computed, the curve read from each sample's minimal "
                   "adversarial ε; point labels: median SNR (dB) of the ensemble's successful adversarial examples; "
                   "top axis: ε in µV where the units or the beats' recorded scales give it.",
         lambda: F.robustness_curves(card)),
        ("sensitivity", "Per-class sensitivity (recall), clean and under attack (ensemble worst case) at each ε.",
         lambda: F.per_class_sensitivity(card)),
        ("confusion", "Confusion matrices, clean and under attack (rows: true class; colour: row-normalised).",
         lambda: F.confusion_matrices(card)),
    ]
    if ex is not None:
        if ex["x"].ndim == 3:
            jobs.append(("sap_vs_pgd", F.sap_vs_pgd_caption(card, ex), lambda: F.sap_vs_pgd(card, ex)))
            for i in range(min(len(ex["x"]), max_ecg_examples)):
                jobs.append((f"ecg_{i}", F.example_caption(ex, i), (lambda i=i: F.ecg_example(card, ex, i))))
        elif ex["x"].ndim == 4:
            jobs.append(("images", "Clean and adversarial images with the perturbation magnified around mid-grey.",
                         lambda: F.image_examples(card, ex)))
        if F.find_universal(ex) is not None:
            jobs.append(("uap", "Universal perturbation: the same perturbation added to every input.",
                         lambda: F.universal_perturbation(card, ex)))
    figdir = run / FIGURES_DIR
    try:
        figdir.mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write the report into {run} ({exc.strerror}); make the folder writable.") from exc
    figures: dict[str, tuple[str, bytes]] = {}
    for key, caption, fn in tqdm(jobs, desc="report figures", unit="fig", disable=not progress):
        png = fn()
        if png is None:
            continue
        figures[key] = (caption, png)
        atomic_write_bytes(figdir / f"{_file(key)}", png)
    blocks = build_blocks(card, figures)
    md, html = run / REPORT_MD, run / REPORT_HTML
    atomic_write_bytes(md, to_markdown(blocks).encode())
    atomic_write_bytes(html, to_html(blocks, card.get("title", "medrobust report")).encode())
    return md, html


def _file(key: str) -> str:
    return {"curves": "curves.png", "sensitivity": "sensitivity.png", "confusion": "confusion.png",
            "sap_vs_pgd": "sap_vs_pgd.png", "images": "image_examples.png",
            "uap": "universal_perturbation.png"}.get(key, f"{key}.png")
