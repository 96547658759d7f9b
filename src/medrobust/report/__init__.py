"""Reports of an evaluation run: Markdown plus one self-contained HTML file with embedded figures.

>>> from medrobust.report import write_report
>>> md, html = write_report("runs/eval")      # RUN_DIR/report.md, RUN_DIR/report.html  # doctest: +SKIP

The report opens with a one-sentence headline computed from the card (:mod:`medrobust.report.headline`).
Figures (matplotlib, Agg canvas): robustness curves per attack (with the median SNR of the successful
adversarial examples and ε in µV where known), per-class sensitivity under attack, clean versus adversarial
confusion matrices, ECG overlays (clean, adversarial and the magnified perturbation) on standard ECG paper
in mV when the record is in or converts to mV, else on plain axes in the data's units, padding never drawn,
a SAP-versus-PGD panel on the same record, and for images the examples (and a universal perturbation when
the run holds one).
"""

from medrobust.report.build import write_report

__all__ = ["write_report"]
