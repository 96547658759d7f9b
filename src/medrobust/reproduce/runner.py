"""Run a reproduction: every step as an ordinary ``medrobust train`` / ``evaluate`` run, resumable step by step."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import yaml

from medrobust.atomic import atomic_write_text
from medrobust.errors import ConfigError
from medrobust.outdir import claim_out_dir
from medrobust.models.checkpoint import CARD_NAME, read_card
from medrobust.reproduce.plan import (USER_MODEL, Step, command, config_path, load_plan, resolve_steps, user_model_signal,
                                     with_user_model)
from medrobust.reproduce.readme import write_readme

DONE_FILE = {"train": "summary.json", "evaluate": "card.json", "masking": "masking.json", "band": "band.json",
             "uap": "uap.json"}


def _write_config(step: Step, budget_dir: Path) -> Path:
    path = config_path(budget_dir, step.kind, step.model_id)
    text = yaml.safe_dump(step.config, sort_keys=False)
    if not path.exists() or path.read_text("utf-8") != text:
        atomic_write_text(path, text)
    return path


STEP_MARK = ".step-config.sha256"
"""Written into an evaluation's folder once it finished: the SHA-256 of the step's YAML it finished with."""


def _config_digest(config: Path) -> str:
    return hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else ""


def _done(step: Step, config: Path) -> bool:
    """A train (masking, band) step is done once its last file is written. An evaluation resumes itself, so it
    is rerun until it has finished with exactly the step's current YAML: its card holds results and its mark
    holds that YAML's digest (a committed reproduction, whose resumable units are not in git, is then kept,
    while a plan whose radii or attacks changed evaluates again)."""
    if step.kind == "uap":  # done with the settings of the step's YAML (a changed plan refits what changed)
        try:
            summary = json.loads((step.out / DONE_FILE["uap"]).read_text("utf-8"))
            settings = yaml.safe_load(config.read_text("utf-8")) if config.is_file() else step.config
        except (OSError, ValueError, yaml.YAMLError):
            return False
        return summary.get("config") == json.loads(json.dumps(settings))
    if step.kind != "evaluate":
        return (step.out / DONE_FILE[step.kind]).is_file()
    card, mark = step.out / DONE_FILE["evaluate"], step.out / STEP_MARK
    if not card.is_file() or not mark.is_file():
        return False
    try:
        finished = bool(json.loads(card.read_text("utf-8")).get("results"))
    except (OSError, ValueError):
        return False
    return finished and mark.read_text("utf-8").strip() == _config_digest(config)


def _run_step(step: Step, config: Path) -> None:
    from medrobust.cli.main import main as cli_main

    if step.kind == "masking":
        from medrobust.reproduce.masking import run_masking_step

        report = run_masking_step(step.config)
        print(f"gradient-masking check of {step.model_id}: " + ("; ".join(report["flags"]) or "no sign of masking"))
        return
    if step.kind == "band":
        from medrobust.reproduce.han_band import run_band_step

        summary = run_band_step(step.config)
        print(f"band experiments on {step.model_id}: SAP {summary['sap_success']} / PGD {summary['pgd_success']} "
              f"of {summary['n_attacked']} correctly classified records flipped, pairs exported")
        return
    if step.kind == "uap":
        from medrobust.reproduce.hirano_uap import run_uap_step

        summary = run_uap_step(step.config)
        nt = [u for u in summary["units"] if u["target"] is None and not u["method"].startswith("random")]
        best = max((u["test"]["fooling_rate"] for u in nt), default=float("nan"))
        print(f"UAPs on {step.model_id}: {len(summary['units'])} fitted or controls, highest non-targeted test "
              f"fooling rate {best:.3f}")
        return
    argv = [step.kind, "--config", str(config)]
    if step.kind == "train" and step.out.exists():
        # a killed training continues at its last finished epoch (train_state.pt), or restarts when it left no
        # state (killed in its first epoch, or a defence that cannot resume); --overwrite removes only what train writes
        argv.append("--resume" if (step.out / "train_state.pt").is_file() else "--overwrite")
    if step.kind == "evaluate":
        argv.append("--no-progress")
    code = cli_main(argv)
    if code != 0:
        raise ConfigError(f"reproduction step '{step.name}' failed (exit {code}); rerun it alone with "
                          f"`{command(step.kind, config)}` to see why, then rerun the reproduction to continue.")
    if step.kind == "evaluate":
        atomic_write_text(step.out / STEP_MARK, _config_digest(config) + "\n")


def _plan(name: str, model: str | None, source: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The plan (evaluating the user's ``model`` instead of training, when given) and its default folder name."""
    plan = load_plan(name)
    if model is None:
        return plan, plan["name"]
    card = read_card(model) if (Path(model) / CARD_NAME).is_file() else {}
    signal = user_model_signal(card, source)
    return with_user_model(plan, model, source, signal=signal), f"{plan['name']}-{USER_MODEL}"


def run(name: str, *, budget: str = "smoke", out: str | Path | None = None, data_dir: str | Path | None = None,
        progress: bool = True, model: str | None = None, source: dict[str, Any] | None = None) -> Path:
    """Reproduce the paper ``name`` at ``budget``; returns the folder holding ``README.md``.

    Every trained model and every evaluation is one step; a killed run continues where it stopped when the
    same call is made again (finished trainings are kept, an evaluation resumes its own state).
    Results go to ``out/<budget>/`` (``configs/``, ``models/``, ``eval/``) and the tables to ``out/README.md``.
    With ``model`` (a checkpoint folder, TorchScript, ONNX or ``module:factory`` file; ``source``: its
    ``weights``, ``fs``, ``units``, ``classes`` ... as for ``medrobust evaluate``) nothing is trained: the user's
    model gets the paper's evaluation, checks and claims (default folder ``reproductions/NAME-yours``).
    """
    plan, default = _plan(name, model, source)
    root = Path(out) if out is not None else Path("reproductions") / default
    folder = claim_out_dir(root / budget, command="reproduce", resume=True, what="--out")
    steps = resolve_steps(plan, budget=budget, out=folder, data_dir=None if data_dir is None else str(data_dir))
    (folder / "configs").mkdir(exist_ok=True)
    paths = {s.name: _write_config(s, folder) for s in steps}
    started, spent = time.monotonic(), []
    for k, step in enumerate(steps, 1):
        if _done(step, paths[step.name]):
            if progress:
                print(f"[{k}/{len(steps)}] {step.name}: done earlier, kept")
            continue
        t0 = time.monotonic()
        if progress:
            eta = f", about {_eta(spent, len(steps) - k + 1)} left" if spent else ""
            print(f"[{k}/{len(steps)}] {step.name} ({time.monotonic() - started:.0f} s so far{eta})", flush=True)
        _run_step(step, paths[step.name])
        spent.append(time.monotonic() - t0)
    readme = write_readme(plan, root)
    if progress:
        print(f"reproduction {plan['name']} ({budget}): {readme}")
    return readme


def _eta(spent: list[float], left: int) -> str:
    seconds = sum(spent) / len(spent) * left
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def status(name: str, *, budget: str, out: str | Path | None = None, model: str | None = None) -> list[dict[str, Any]]:
    """Which steps of a reproduction are finished (for ``medrobust reproduce --status``)."""
    plan, default = _plan(name, model, None)
    root = Path(out) if out is not None else Path("reproductions") / default
    steps = resolve_steps(plan, budget=budget, out=root / budget)
    return [{"step": s.name, "done": _done(s, config_path(root / budget, s.kind, s.model_id)), "out": str(s.out)}
            for s in steps]
