"""The gradient-masking check of a reproduction: one step per defended model.

A defence can look robust because its gradients stopped pointing anywhere useful (Athalye, Carlini & Wagner,
"Obfuscated gradients give a false sense of security", ICML 2018; Carlini et al., "On evaluating adversarial
robustness", arXiv 1902.06705, 2019, §5). :func:`medrobust.evaluation.masking.gradient_masking_report` runs the
three checks those papers recommend — a gradient-free attack no stronger than PGD, robust accuracy near zero at a
radius far beyond the data's scale, and the loss rising faster along the gradient than along random directions —
and this module runs it on a stratified subset of a reproduction model's test split and writes
``<budget>/masking/<model>/masking.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medrobust.atomic import atomic_write_json
from medrobust.errors import ConfigError

MASKING_KEYS = {"eps", "large_eps", "samples", "steps", "black_box", "black_box_steps"}
DONE_NAME = "masking.json"


def masking_step_config(settings: dict[str, Any], *, checkpoint: str | Path, dataset: dict[str, Any],
                        out: Path, where: str) -> dict[str, Any]:
    """The config of one masking step from a budget's ``masking`` block (keys checked, naming ``where``)."""
    extra, missing = set(settings) - MASKING_KEYS, {"eps", "large_eps"} - set(settings)
    if extra or missing:
        raise ConfigError(f"{where}: " + "; ".join(
            ([f"unknown keys {sorted(extra)} (allowed: {sorted(MASKING_KEYS)})"] if extra else [])
            + ([f"missing keys {sorted(missing)}"] if missing else [])) + ".")
    return {"checkpoint": str(checkpoint), "dataset": {**dataset, "split": "test"},
            "samples": int(settings.get("samples", 256)), "eps": float(settings["eps"]),
            "large_eps": float(settings["large_eps"]), "steps": int(settings.get("steps", 50)),
            "black_box": str(settings.get("black_box", "square")),
            "black_box_steps": int(settings.get("black_box_steps", 1000)), "out": str(out)}


def run_masking_step(config: dict[str, Any]) -> dict[str, Any]:
    """Run the check described by ``config`` (:func:`masking_step_config`) and write its ``masking.json``."""
    from medrobust.cli.evaluate import load_model_and_data
    from medrobust.evaluation.inputs import select_indices
    from medrobust.evaluation.masking import gradient_masking_report
    from medrobust.units import resolve_bounds

    model, ds, _ = load_model_and_data(config["dataset"], config["checkpoint"], source=config.get("source"))
    labels = ds.y.numpy() if ds.y.ndim == 1 else None
    idx = torch.as_tensor(select_indices(len(ds), config["samples"], seed=0, labels=labels))
    x, y = ds.x[idx], ds.y[idx]
    mask = ds.mask[idx] if ds.mask is not None else None
    bounds = resolve_bounds("auto", ds.meta.units)
    report = gradient_masking_report(model.eval(), x, y, eps=config["eps"], large_eps=config["large_eps"],
                                     steps=config["steps"], black_box=config["black_box"],
                                     black_box_steps=config["black_box_steps"], bounds=bounds, mask=mask)
    report["bounds"] = list(bounds) if bounds else None
    report["config"] = config
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / DONE_NAME, report)
    return report



def main(argv: list[str] | None = None) -> int:
    """``python -m medrobust.reproduce.masking CONFIG.yaml``: rerun one masking step by hand."""
    from medrobust.reproduce._entry import step_main

    return step_main(argv, run_masking_step, module="masking", config="masking-<model>.yaml",
                     summary=lambda r: "; ".join(r["flags"]) or "no sign of gradient masking")


if __name__ == "__main__":
    raise SystemExit(main())
