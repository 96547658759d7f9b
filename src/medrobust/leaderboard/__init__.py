"""The robustness leaderboard: versioned tasks, validated entries and a static site.

* :mod:`medrobust.leaderboard.tasks`: one YAML file per task (dataset, evaluated subset, threat rows);
* :mod:`medrobust.leaderboard.validate`: a result card checked against its task, one line per problem;
* :mod:`medrobust.leaderboard.board`: ``add`` (validate, optionally ``--verify`` by a seeded re-run) and the
  board's entries;
* :mod:`medrobust.leaderboard.site`: ``build``, the self-contained HTML + JSON site.

The design follows RobustBench (Croce et al., NeurIPS Datasets and Benchmarks 2021): one fixed protocol per task,
every entry linking its card, flagged evaluations shown as flagged.
"""

from medrobust.leaderboard.board import add, read_entries, verify_card
from medrobust.leaderboard.site import build
from medrobust.leaderboard.tasks import Task, ThreatRow, builtin_tasks, load_task, parse_task, pin, task_names
from medrobust.leaderboard.validate import Validation, validate

__all__ = ["Task", "ThreatRow", "Validation", "add", "build", "builtin_tasks", "load_task", "parse_task", "pin",
           "read_entries", "task_names", "validate", "verify_card"]
