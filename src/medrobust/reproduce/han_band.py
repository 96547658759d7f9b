"""Han et al.'s follow-up experiments on SAP examples, as one reproduction step (``band``).

Han, Hu, Foschini, Chinitz, Jankelson & Ranganath, "Deep learning models for electrocardiograms are susceptible to
adversarial attack", Nature Medicine 26:360-363, 2020 (arXiv 1905.05163): after SAP, the paper (1) perturbs each
successful example with Gaussian noise and re-smooths it, 1,000 times, keeping the trials still in the adversarial
class — the envelope of those is a *band* of adversarial signals; (2) draws signals uniformly inside the band and
(3) concatenates pairs of kept trials where they coincide, reporting how many of both stay adversarial; and shows
100 SAP and 100 PGD pairs to clinicians. This step, on a stratified seeded subset of the correctly classified test
records: runs SAP and PGD with the plan's settings, exports the ``pairs`` first pairs of each (``pairs_sap.npz``,
``pairs_pgd.npz``: clean and adversarial signals, labels, predictions, record ids, fs, units, classes) for an
expert study, runs :func:`~medrobust.attacks.adversarial_band`, :func:`~medrobust.attacks.uniform_band_check` and
:func:`~medrobust.attacks.concatenation_check` on the first ``examples`` SAP successes, and writes ``band.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrobust.atomic import atomic_save_npz, atomic_write_json
from medrobust.errors import ConfigError

BAND_KEYS = {"eps", "pairs", "examples", "trials", "uniform_samples", "concat_signals", "batch_size"}
DONE_NAME = "band.json"


def band_step_config(settings: dict[str, Any], *, attacks: list[dict[str, Any]], checkpoint: str | Path,
                     dataset: dict[str, Any], out: Path, where: str) -> dict[str, Any]:
    """The config of one ``band`` step: the budget's ``band`` block (``eps`` required) and the plan's SAP and PGD
    as the budget sets them (the evaluate step's attacks)."""
    extra, missing_keys = set(settings) - BAND_KEYS, {"eps"} - set(settings)
    if extra or missing_keys:
        raise ConfigError(f"{where}: " + "; ".join(
            ([f"unknown keys {sorted(extra)} (allowed: {sorted(BAND_KEYS)})"] if extra else [])
            + ([f"missing keys {sorted(missing_keys)}"] if missing_keys else [])) + ".")
    by_name = {a["name"]: {k: v for k, v in a.items() if k not in ("name", "label", "restarts")} for a in attacks}
    missing = {"sap", "pgd"} - set(by_name)
    if missing:
        raise ConfigError(f"{where}: the band step needs the plan's evaluation to list {sorted(missing)}.")
    return {"checkpoint": str(checkpoint), "dataset": {**dataset, "split": "test"}, "eps": float(settings["eps"]),
            "sap": by_name["sap"], "pgd": by_name["pgd"], "pairs": int(settings.get("pairs", 100)),
            "examples": int(settings.get("examples", 8)), "trials": int(settings.get("trials", 1000)),
            "uniform_samples": int(settings.get("uniform_samples", 100)),
            "concat_signals": int(settings.get("concat_signals", 10)),
            "batch_size": int(settings.get("batch_size", 16)), "out": str(out)}


def _attack(model: Any, name: str, kwargs: dict[str, Any], *, eps: float, fs: float | None, bounds: Any,
            x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, batch_size: int) -> tuple[torch.Tensor, ...]:
    """``(x_adv, adv_pred, success)`` of attack ``name`` over ``x`` in batches (one seeded generator)."""
    from medrobust.attacks import get_attack

    atk = get_attack(name, model, eps=eps, bounds=bounds, generator=torch.Generator().manual_seed(0),
                     **({"fs": fs} if name == "sap" and fs else {}), **kwargs)
    parts = []
    for i in range(0, len(x), batch_size):
        m = None if mask is None else mask[i:i + batch_size]
        r = atk(x[i:i + batch_size], y[i:i + batch_size], mask=m)
        parts.append((r.x_adv.detach(), r.adv_pred, r.success))
    return tuple(torch.cat([p[k] for p in parts]) for k in range(3))  # type: ignore[return-value]


def _band_experiments(model: Any, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
                      cfg: dict[str, Any], fs: float | None) -> dict[str, Any]:
    from medrobust.attacks import adversarial_band, concatenation_check, uniform_band_check

    rows = []
    for i in range(len(x)):
        gen = torch.Generator().manual_seed(i)
        band = adversarial_band(model, x[i], x_adv[i], eps=cfg["eps"], y=int(y[i]), trials=cfg["trials"], fs=fs,
                                reference_fs=300.0 if fs else None, mask=None if mask is None else mask[i],
                                generator=gen)
        uni = uniform_band_check(model, band, samples=cfg["uniform_samples"], generator=gen)
        cat = concatenation_check(model, band, n_signals=cfg["concat_signals"])
        rows.append({"kept": band.kept, "trials": band.trials, "uniform_misclassified": uni["fraction_misclassified"],
                     "uniform_adv_class": uni["fraction_adv_class"], "concatenations": cat["concatenations"],
                     "concat_adv_class": cat["fraction_adv_class"]})
    n_cat = sum(r["concatenations"] for r in rows)
    return {"examples": rows, "n_examples": len(rows),
            "kept_fraction": float(np.mean([r["kept"] / r["trials"] for r in rows])) if rows else None,
            "examples_with_new_adversarials": sum(r["kept"] > 0 for r in rows),
            "uniform_misclassified": float(np.mean([r["uniform_misclassified"] for r in rows])) if rows else None,
            "concatenations": n_cat,
            "concat_adv_class": (sum(r["concat_adv_class"] * r["concatenations"] for r in rows if r["concatenations"])
                                 / n_cat) if n_cat else None}


def _export(path: Path, *, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
            adv: torch.Tensor, ids: np.ndarray, meta: Any, attack: str) -> None:
    atomic_save_npz(path, {"x": x.numpy(), "x_adv": x_adv.numpy(), "y": y.numpy(), "clean_pred": clean.numpy(),
                           "adv_pred": adv.numpy(), "ids": ids.astype(str), "fs": np.float64(meta.fs or np.nan),
                           "units": np.str_(meta.units), "classes": np.asarray(list(meta.classes), dtype=str),
                           "leads": np.asarray(list(meta.leads or ()), dtype=str), "attack": np.str_(attack)})


def run_band_step(config: dict[str, Any]) -> dict[str, Any]:
    """Run the step described by ``config`` (:func:`band_step_config`); writes the pairs and ``band.json``."""
    from medrobust.cli.evaluate import load_model_and_data
    from medrobust.evaluation.inputs import select_indices
    from medrobust.models.inference import predict
    from medrobust.units import resolve_bounds

    model, ds, _ = load_model_and_data(config["dataset"], config["checkpoint"], source=config.get("source"))
    model.eval()
    mask_all = ds.mask
    clean_all = predict(model, ds.x, batch_size=config["batch_size"], mask=mask_all)
    correct = np.flatnonzero((clean_all == ds.y).numpy())
    pick = correct[select_indices(len(correct), config["pairs"], seed=0, labels=ds.y.numpy()[correct])]
    idx = torch.as_tensor(pick)
    x, y, clean = ds.x[idx], ds.y[idx], clean_all[idx]
    mask = None if mask_all is None else mask_all[idx]
    fs, bounds = ds.meta.fs, resolve_bounds("auto", ds.meta.units)
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"eps": config["eps"], "n_test": len(ds), "n_correct": int(len(correct)),
                               "n_attacked": int(len(pick)), "units": ds.meta.units, "fs": fs}
    if not len(pick):
        summary.update({"sap_success": 0, "pgd_success": 0, "band": None, "config": config,
                        "note": "no test record is classified correctly: nothing to attack"})
        atomic_write_json(out / DONE_NAME, summary)
        return summary
    adv = {}
    for name in ("sap", "pgd"):
        x_adv, pred, ok = _attack(model, name, config[name], eps=config["eps"], fs=fs, bounds=bounds, x=x, y=y,
                                  mask=mask, batch_size=config["batch_size"])
        adv[name] = (x_adv, ok)
        _export(out / f"pairs_{name}.npz", x=x, x_adv=x_adv, y=y, clean=clean, adv=pred,
                ids=np.asarray(ds.meta.ids)[pick], meta=ds.meta, attack=name)
        summary[f"{name}_success"] = int(ok.sum())
        summary[f"{name}_success_rate"] = float(ok.double().mean())
    x_sap, ok = adv["sap"]
    first = torch.nonzero(ok).flatten()[: config["examples"]]
    summary["band"] = _band_experiments(model, x[first], x_sap[first], y[first],
                                        None if mask is None else mask[first], config, fs)
    summary["config"] = config
    atomic_write_json(out / DONE_NAME, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m medrobust.reproduce.han_band CONFIG.yaml``: rerun one band step by hand."""
    from medrobust.reproduce._entry import step_main

    return step_main(argv, run_band_step, module="han_band", config="band-<model>.yaml",
                     summary=lambda r: f"SAP flipped {r['sap_success']}, PGD {r['pgd_success']} of {r['n_attacked']}")


if __name__ == "__main__":
    raise SystemExit(main())
