"""Reports of an evaluation run: Markdown plus one self-contained HTML file with embedded figures.

>>> from medrobust.report import write_report
>>> md, html = write_report("runs/eval")      # RUN_DIR/report.md, RUN_DIR/report.html  # doctest: +SKIP

Figures (matplotlib, Agg canvas): robustness curves per attack, per-class sensitivity under attack,
clean versus adversarial confusion matrices, ECG overlays on standard ECG paper (clean,
adversarial and the magnified perturbation, in seconds and mV), a SAP-versus-PGD panel on the same
record, and for images the examples (and a universal perturbation when the run holds one).
"""

from medrobust.report.build import write_report

__all__ = ["write_report"]
