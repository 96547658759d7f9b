"""When a reproduction step counts as finished: an evaluation only with results AND the YAML it finished with."""

from __future__ import annotations

import json
from pathlib import Path

from medrobust.reproduce.plan import Step
from medrobust.reproduce.runner import STEP_MARK, _config_digest, _done


def _step(tmp_path: Path, kind: str) -> tuple[Step, Path]:
    config = tmp_path / "configs" / f"{kind}-m.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("protocol: {eps: [0.05]}\n")
    out = tmp_path / kind / "m"
    out.mkdir(parents=True)
    return Step(kind, "m", {}, out), config


def test_an_evaluation_is_done_only_with_results_and_the_same_yaml(tmp_path: Path) -> None:
    step, config = _step(tmp_path, "evaluate")
    assert not _done(step, config)
    (step.out / "card.json").write_text(json.dumps({"results": [{"eps": 0.05}]}))
    assert not _done(step, config)                              # a card without the mark: not by this runner
    (step.out / STEP_MARK).write_text(_config_digest(config) + "\n")
    assert _done(step, config)
    config.write_text("protocol: {eps: [0.05, 0.1]}\n")         # the plan changed: evaluate again
    assert not _done(step, config)
    (step.out / STEP_MARK).write_text(_config_digest(config) + "\n")
    (step.out / "card.json").write_text(json.dumps({"results": []}))
    assert not _done(step, config)                              # an unfinished card
    (step.out / "card.json").write_text("{not json")
    assert not _done(step, config)


def test_other_steps_are_done_once_their_last_file_exists(tmp_path: Path) -> None:
    for kind, last in (("train", "summary.json"), ("masking", "masking.json"), ("band", "band.json")):
        step, config = _step(tmp_path, kind)
        assert not _done(step, config)
        (step.out / last).write_text("{}")
        assert _done(step, config)
