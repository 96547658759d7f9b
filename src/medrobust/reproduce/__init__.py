"""Reproduce a seed paper's experiment end to end: ``medrobust reproduce NAME --budget smoke|cpu|paper``.

>>> from medrobust import reproduce
>>> reproduce.available()
['han2020', 'hirano2021', 'ma2020', 'ma2022', 'shao2022']
>>> readme = reproduce.run("ma2020", budget="smoke", out="runs/repro")   # doctest: +SKIP

Each paper is one YAML plan (``medrobust/reproduce/configs/``, linked from ``configs/reproductions/``): the models
it compares, trained with its recipe (:mod:`medrobust.defenses.recipes`), and its evaluation. The run writes each
step as the YAML of an ordinary ``medrobust train`` / ``medrobust evaluate`` run, executes them in order
(resumable: a killed run continues with the first unfinished step), and writes ``README.md`` whose first table is
paper claim | our number | command | result file.
"""

from medrobust.reproduce.plan import available, load_plan, resolve_steps
from medrobust.reproduce.runner import run, status

__all__ = ["available", "load_plan", "resolve_steps", "run", "status"]
