"""Hirano, Minagi & Takemoto's universal-perturbation experiment, as one reproduction step (``uap``).

Hirano, Minagi & Takemoto, "Universal adversarial attacks on deep neural networks for medical image
classification", BMC Medical Imaging 21:9, 2021 (doi:10.1186/s12880-020-00530-y): for every trained model, UAPs
of relative strength ζ (``ξ = ζ · mean ‖x‖_p`` over the fitting images, channel 0 as in the authors' code) are
fitted on the training images with the paper's algorithm — the universal-perturbation loop of Moosavi-Dezfooli et
al. (CVPR 2017) with one FGSM step per not-yet-fooled image, accepted only if it flips the label (non-targeted), or
the targeted variant of Hirano & Takemoto (Algorithms 13:268, 2020) accepted only if it reaches the target class —
for ``p = 2`` and ``p = ∞``, non-targeted and towards each class; a random vector of the same radius is the control.

Each UAP is one resumable unit: ``units/<key>.npz`` (the perturbation) and ``units/<key>.json`` (its fitting record
and metrics), written as it finishes; a rerun keeps every unit whose JSON holds the same settings. The metrics
(:func:`uap_metrics`) are computed from the clean and perturbed predictions on the fitting set (``train``) and on
the test split: fooling rate against the clean prediction (the paper's ``R_f``), misclassification against the
label, and for every class ``t`` the targeted success over all inputs (the paper's ``R_s``) and over the inputs
whose clean prediction is not already ``t``. The step ends with ``uap.json`` (every unit) and figures (the UAPs,
clean / perturbed examples). The README part (:func:`readme_lines`) draws the fooling rate against ζ per
architecture and the retraining table (Moosavi-Dezfooli et al. 2017, §4: fine-tuning on UAP-carrying inputs; the
model after retraining gets the same UAP experiment).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrobust.atomic import atomic_save_npz, atomic_write_json
from medrobust.checks import check_bool, check_float, check_int
from medrobust.errors import ConfigError, DataError

DONE_NAME = "uap.json"
UAP_METHODS = ("fgsm", "batched")
UAP_NORMS = ("l2", "linf")
CONTROL_KINDS = ("uniform", "sign")
UAP_KEYS = {"zetas", "norms", "methods", "targeted", "targeted_norms", "controls", "fit_limit", "eval_limit", "passes", "batch_size",
            "eval_batch_size", "bounds", "norm_channels", "step_size", "examples", "seed", "retrained"}
CLAIM_KEYS = {"id", "claim", "paper", "metric", "zeta", "norm", "method", "models", "target", "control", "threshold"}
CLAIM_METRICS = ("nontargeted", "targeted", "random", "architecture", "retraining", "targeted_one")


# ----------------------------------------------------------------------------------------------- metrics
def uap_metrics(*, clean: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, k: int) -> dict[str, Any]:
    """Rates of one perturbation on one split, from predictions ``(N,)`` (Hirano et al. 2021, "Metrics").

    ``fooling_rate``: ``pred(x+v) ≠ pred(x)`` (the paper's ``R_f``, against the clean prediction);
    ``misclassification_rate``: ``pred(x+v) ≠ y``; ``clean_accuracy``: ``pred(x) = y``; per class ``t``
    (``targets[t]``): ``success_rate`` = ``pred(x+v) = t`` over all inputs (the paper's ``R_s``),
    ``success_rate_not_target`` over the inputs with ``pred(x) ≠ t`` (``None`` when there are none),
    ``clean_rate`` = ``pred(x) = t``; ``transition[i][j]``: inputs predicted ``i`` clean and ``j`` perturbed.
    Every rate comes with its count, for confidence intervals.
    """
    clean, adv, y = (torch.as_tensor(a).long().flatten() for a in (clean, adv, y))
    n = len(clean)
    if n == 0 or len(adv) != n or len(y) != n:
        raise DataError(f"uap_metrics needs clean, adv and y of one non-zero length, got {n}, {len(adv)}, {len(y)}.")
    for name, a in (("clean", clean), ("adv", adv)):
        if int(a.min()) < 0 or int(a.max()) >= k:
            raise DataError(f"{name} predictions must be class indices in [0, {k}), got range "
                            f"[{int(a.min())}, {int(a.max())}].")
    fooled, mis, correct = int((adv != clean).sum()), int((adv != y).sum()), int((clean == y).sum())
    targets = []
    for t in range(k):
        hit, rest = adv == t, clean != t
        n_rest, hit_rest = int(rest.sum()), int((hit & rest).sum())
        targets.append({"target": t, "hit": int(hit.sum()), "success_rate": int(hit.sum()) / n,
                        "n_not_target": n_rest, "hit_not_target": hit_rest,
                        "success_rate_not_target": hit_rest / n_rest if n_rest else None,
                        "clean_rate": int((clean == t).sum()) / n})
    trans = torch.zeros(k, k, dtype=torch.long)
    trans.index_put_((clean, adv), torch.ones(n, dtype=torch.long), accumulate=True)
    return {"n": n, "fooled": fooled, "fooling_rate": fooled / n, "misclassified": mis,
            "misclassification_rate": mis / n, "clean_correct": correct, "clean_accuracy": correct / n,
            "targets": targets, "transition": trans.tolist()}


def fooled_flow(transition: list[list[int]]) -> dict[str, Any]:
    """Where the inputs a non-targeted UAP fooled went, from its ``transition`` matrix (clean ``i`` -> perturbed
    ``j``; :func:`uap_metrics`).

    ``into[j]``: inputs moved into class ``j`` from another; ``dominant``: the class most of them went to (the
    lowest index on a tie); ``share``: its part of all fooled inputs (``None`` when none was fooled);
    ``ceiling``: the fooling rate of a UAP that moved every input not already predicted ``dominant`` into it and
    no other, i.e. the share of inputs whose clean prediction is not ``dominant``. Hirano et al. (2021) observe
    that UAPs push inputs into one or two dominant classes; on a two-class task such a one-way UAP cannot fool more
    than ``ceiling``, which the README prints beside the fooling rate.
    """
    bad = DataError(f"fooled_flow needs a square k x k (k >= 2) matrix of integer counts with some inputs, got "
                    f"{transition!r}.")
    try:
        t = np.array(transition)
    except ValueError:  # a ragged list
        raise bad from None
    if not np.issubdtype(t.dtype, np.integer) or t.ndim != 2 or t.shape[0] < 2 or t.shape[0] != t.shape[1] or t.sum() == 0 \
            or (t < 0).any():
        raise bad
    n, into = int(t.sum()), t.sum(axis=0) - np.diag(t)
    fooled, dominant = int(into.sum()), int(np.argmax(into))
    return {"into": into.tolist(), "fooled": fooled, "dominant": dominant,
            "share": float(into[dominant]) / fooled if fooled else None,
            "ceiling": float(n - t[dominant].sum()) / n}


# ----------------------------------------------------------------------------------------------- config
def _fail(where: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {msg}")


def _subset(value: Any, allowed: tuple[str, ...], name: str, where: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not value or any(v not in allowed for v in value):
        raise _fail(where, f"{name} must be a non-empty list of {list(allowed)}, got {value!r}.")
    return list(value)


def _limit(value: Any, name: str) -> int | None:
    return None if value is None else check_int(value, name, minimum=1)


def _method_map(value: Any, name: str, what: str, where: str) -> dict[str, Any]:
    value = value or {}
    if not isinstance(value, dict) or set(value) - set(UAP_METHODS):
        raise _fail(where, f"{name} must map methods {list(UAP_METHODS)} to {what}, got {value!r}.")
    return value


def uap_step_config(settings: dict[str, Any], *, checkpoint: str | Path, dataset: dict[str, Any], out: Path,
                    retrained: bool, where: str) -> dict[str, Any]:
    """The config of one ``uap`` step: the plan's ``uap`` block with the budget's over it (``retrained``: the
    block's ``retrained`` settings over that, for a model fine-tuned by adversarial retraining)."""
    if not isinstance(settings, dict):
        raise _fail(where, f"uap must be a mapping, got {type(settings).__name__}.")
    extra = set(settings) - UAP_KEYS
    if extra:
        raise _fail(where, f"unknown keys {sorted(extra)} (allowed: {sorted(UAP_KEYS)}).")
    over = settings.get("retrained") or {}
    if not isinstance(over, dict) or set(over) - (UAP_KEYS - {"retrained"}):
        raise _fail(where, f"uap.retrained must be a mapping of uap keys other than 'retrained', got {over!r}.")
    s = {**settings, **(over if retrained else {})}
    zetas = s.get("zetas")
    if not isinstance(zetas, (list, tuple)) or not zetas:
        raise _fail(where, f"zetas must be a non-empty list of relative strengths such as [0.02, 0.04], got {zetas!r}.")
    methods = _subset(s.get("methods", ["fgsm"]), UAP_METHODS, "methods", where)
    passes = _method_map(s.get("passes"), "passes", "pass counts", where)
    step = _method_map(s.get("step_size"), "step_size", "step sizes", where)
    bounds = s.get("bounds")
    if not (bounds is None or bounds == "auto" or (isinstance(bounds, (list, tuple)) and len(bounds) == 2)):
        raise _fail(where, f"bounds must be null (the paper's code never clips), 'auto' or [lo, hi], got {bounds!r}.")
    channels = s.get("norm_channels", "first")
    if channels not in ("first", "all"):
        raise _fail(where, f"norm_channels must be 'first' (the authors' code) or 'all', got {channels!r}.")
    try:
        return {"checkpoint": str(checkpoint),
                "dataset": {k: v for k, v in dataset.items() if k not in ("split", "limit")},
                "zetas": [check_float(z, "zetas", minimum=0.0, strict=True) for z in zetas],
                "norms": _subset(s.get("norms", ["l2"]), UAP_NORMS, "norms", where), "methods": methods,
                "targeted": check_bool(s.get("targeted", True), "targeted"),
                "targeted_norms": _subset(s.get("targeted_norms", list(UAP_NORMS)), UAP_NORMS, "targeted_norms", where),
                "controls": _subset(s.get("controls", ["uniform"]), CONTROL_KINDS, "controls", where),
                "fit_limit": _limit(s.get("fit_limit"), "fit_limit"),
                "eval_limit": _limit(s.get("eval_limit"), "eval_limit"),
                "passes": {m: check_int(passes.get(m, 15 if m == "fgsm" else 10), f"passes.{m}", minimum=1)
                           for m in methods},
                "step_size": {m: check_float(v, f"step_size.{m}", minimum=0.0, strict=True) for m, v in step.items()},
                "batch_size": check_int(s.get("batch_size", 64), "batch_size", minimum=1),
                "eval_batch_size": check_int(s.get("eval_batch_size", 256), "eval_batch_size", minimum=1),
                "bounds": list(bounds) if isinstance(bounds, (list, tuple)) else bounds, "norm_channels": channels,
                "examples": check_int(s.get("examples", 4), "examples", minimum=0),
                "seed": check_int(s.get("seed", 0), "seed", minimum=0), "out": str(out)}
    except ConfigError as exc:  # a value check's message gets the plan file and block in front
        if str(exc).startswith(f"{where}: "):
            raise
        raise _fail(where, str(exc)) from None


def check_uap_plan(plan: dict[str, Any], path: Path) -> None:
    """A UAP plan's ``uap`` block and claims, checked when the plan is loaded (one-line :class:`ConfigError`)."""
    where = f"{path}: uap"
    uap_step_config(plan["uap"], checkpoint="-", dataset={}, out=Path("-"), retrained=False, where=where)
    for b, spec in plan["budgets"].items():
        merged = {**plan["uap"], **(spec.get("uap") or {})}
        for mid, over in [("", {}), *((m, o.get("uap") or {}) for m, o in (spec.get("per_model") or {}).items())]:
            for retrained in (False, True):
                uap_step_config({**merged, **over}, checkpoint="-", dataset={}, out=Path("-"), retrained=retrained,
                                where=f"{path}: budgets.{b}." + (f"per_model.{mid}.uap" if mid else "uap"))
    for c in plan.get("claims", []):
        if not isinstance(c, dict):
            raise ConfigError(f"{path}: every claim must be a mapping, got {c!r}.")
        extra, missing = set(c) - CLAIM_KEYS, {"id", "claim", "paper", "metric"} - set(c)
        if extra or missing:
            raise ConfigError(f"{path}: claim {c.get('id')!r}: " + "; ".join(
                ([f"unknown keys {sorted(extra)} (allowed: {sorted(CLAIM_KEYS)})"] if extra else [])
                + ([f"missing keys {sorted(missing)}"] if missing else [])) + ".")
        if c["metric"] not in CLAIM_METRICS:
            raise ConfigError(f"{path}: claim {c['id']!r}: metric must be one of {list(CLAIM_METRICS)}, "
                              f"got {c['metric']!r}.")
        unknown = [m for m in c.get("models") or [] if m not in plan["models"]]
        if unknown:
            raise ConfigError(f"{path}: claim {c['id']!r} names unknown models {unknown}.")
        if c["metric"] == "targeted_one" and (len(c.get("models") or []) != 1 or c.get("target") is None):
            raise ConfigError(f"{path}: claim {c['id']!r}: metric 'targeted_one' needs one model in `models` and "
                              "a `target` class index.")


def unit_specs(config: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """Every UAP of the step, in order: each method × norm × ζ, non-targeted then towards each of the ``k``
    classes (for the norms in ``targeted_norms``), then the random controls (kind × norm × ζ). ``key`` names
    its files."""
    units = []
    for method in config["methods"]:
        for norm in config["norms"]:
            targeted = config["targeted"] and norm in config["targeted_norms"]
            for zeta in config["zetas"]:
                for t in ([None, *range(k)] if targeted else [None]):
                    units.append({"key": f"{method}_{norm}_z{zeta:g}_" + ("nontargeted" if t is None else f"target{t}"),
                                  "method": method, "norm": norm, "zeta": zeta, "target": t,
                                  "passes": config["passes"][method], "step_size": config["step_size"].get(method)})
    for kind in config["controls"]:
        for norm in config["norms"]:
            for zeta in config["zetas"]:
                units.append({"key": f"random-{kind}_{norm}_z{zeta:g}", "method": f"random_{kind}", "norm": norm,
                              "zeta": zeta, "target": None, "passes": None, "step_size": None})
    return units


# ----------------------------------------------------------------------------------------------- the step
def predict_classes(model: Any, x: torch.Tensor, v: torch.Tensor | None, bounds: tuple[float, float] | None,
             batch_size: int) -> torch.Tensor:
    """``argmax model(clip(x + v))`` in batches (no clip when ``bounds`` is None, as in the authors' code)."""
    preds = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            z = x[i:i + batch_size] if v is None else x[i:i + batch_size] + v
            if bounds is not None:
                z = z.clamp(bounds[0], bounds[1])
            preds.append(model(z).argmax(1))
    return torch.cat(preds)


def _fit_unit(model: Any, unit: dict[str, Any], x_fit: torch.Tensor, config: dict[str, Any],
              units: str | None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The perturbation of one unit and its fitting record (radius, fitting rate, passes, time)."""
    from medrobust.attacks import UniversalPerturbation
    from medrobust.attacks.universal import mean_norm, random_control

    gen = torch.Generator().manual_seed(config["seed"] * 1_000_003 + zlib.crc32(unit["key"].encode()))
    bounds = tuple(config["bounds"]) if isinstance(config["bounds"], list) else config["bounds"]
    if unit["method"].startswith("random_"):
        xi = unit["zeta"] * mean_norm(x_fit, unit["norm"], channels=config["norm_channels"])
        delta = random_control(tuple(x_fit.shape[1:]), xi=xi, norm=unit["norm"], kind=unit["method"][7:], generator=gen)
        return delta, {"xi": xi, "fit_rate": None, "seconds": 0.0, "history": [], "grad_evals": 0, "queries": 0}
    uap = UniversalPerturbation(model, norm=unit["norm"], zeta=unit["zeta"], method=unit["method"],
                                target=unit["target"], max_iter=unit["passes"], step_size=unit["step_size"],
                                batch_size=config["batch_size"], eval_batch_size=config["eval_batch_size"],
                                norm_channels=config["norm_channels"], bounds=bounds, units=units, generator=gen)
    res = uap.fit(x_fit)
    return res.delta.detach(), {k: v for k, v in res.summary().items() if k not in ("config", "shape")}


def _load(config: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The model and the train / test splits (``load_model_and_data`` refuses a model that does not fit the data)."""
    from medrobust.cli.evaluate import load_model_and_data

    ds = dict(config["dataset"])
    model, train, _ = load_model_and_data({**ds, "split": "train"}, config["checkpoint"], source=config.get("source"))
    _, test, _ = load_model_and_data({**ds, "split": "test"}, config["checkpoint"], source=config.get("source"))
    model.eval()
    return model, train, test


def _subset_of(ds: Any, limit: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    from medrobust.evaluation.inputs import select_indices

    idx = select_indices(len(ds), limit, seed=seed, labels=ds.y.numpy())
    return ds.x[torch.as_tensor(idx)], ds.y[torch.as_tensor(idx)], idx


def run_uap_step(config: dict[str, Any]) -> dict[str, Any]:
    """Run the step described by ``config`` (:func:`uap_step_config`): every unit not finished with the same
    settings, then ``uap.json`` and the figures."""
    from medrobust.reproduce.hirano_figures import uap_figures
    from medrobust.units import resolve_bounds

    model, train, test = _load(config)
    out = Path(config["out"])
    (out / "units").mkdir(parents=True, exist_ok=True)
    x_fit, y_fit, fit_idx = _subset_of(train, config["fit_limit"], config["seed"])
    x_test, y_test, test_idx = _subset_of(test, config["eval_limit"], config["seed"])
    bounds = resolve_bounds(config["bounds"], train.meta.units) if config["bounds"] is not None else None
    bs = config["eval_batch_size"]
    clean = {"train": predict_classes(model, x_fit, None, bounds, bs),
             "test": predict_classes(model, x_test, None, bounds, bs)}
    with torch.no_grad():
        k = int(model(x_fit[:1]).shape[1])
    data = {"train": (x_fit, y_fit), "test": (x_test, y_test)}
    records = []
    for unit in unit_specs(config, k):
        path = out / "units" / f"{unit['key']}.json"
        settings = {**unit, "fit_limit": config["fit_limit"], "eval_limit": config["eval_limit"],
                    "bounds": config["bounds"], "norm_channels": config["norm_channels"], "seed": config["seed"],
                    "batch_size": config["batch_size"], "checkpoint": config["checkpoint"]}
        if path.is_file():
            try:
                done = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError):
                done = {}
            if done.get("settings") == settings:
                records.append(done)
                continue
        delta, fit = _fit_unit(model, unit, x_fit, config, train.meta.units)
        metrics = {split: uap_metrics(clean=clean[split], adv=predict_classes(model, x, delta, bounds, bs), y=y, k=k)
                   for split, (x, y) in data.items()}
        d = delta.double().flatten()
        record = {**{k_: unit[k_] for k_ in ("key", "method", "norm", "zeta", "target")}, "xi": fit["xi"],
                  "delta_norms": {"l2": float(d.norm()), "linf": float(d.abs().max())}, "fit": fit, **metrics,
                  "settings": settings}
        atomic_save_npz(out / "units" / f"{unit['key']}.npz",
                        {"delta": delta.numpy(), "xi": np.float64(fit["xi"]), "norm": np.str_(unit["norm"]),
                         "zeta": np.float64(unit["zeta"]), "method": np.str_(unit["method"]),
                         "target": np.int64(-1 if unit["target"] is None else unit["target"])})
        atomic_write_json(path, record)  # last: the unit counts as finished only once its JSON exists
        records.append(record)
    summary = {"checkpoint": config["checkpoint"], "classes": list(train.meta.classes), "k": k,
               "n_fit": len(fit_idx), "n_train": len(train), "n_test": len(test_idx), "n_test_split": len(test),
               "clean_accuracy": {s: float((clean[s] == data[s][1]).double().mean()) for s in data},
               "units": records, "config": config}
    uap_figures(out, records, x_test, clean["test"], model, bounds, config, list(train.meta.classes))
    atomic_write_json(out / DONE_NAME, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m medrobust.reproduce.hirano_uap CONFIG.yaml``: rerun one UAP step by hand (finished UAPs kept)."""
    from medrobust.reproduce._entry import step_main

    return step_main(argv, run_uap_step, module="hirano_uap", config="uap-<model>.yaml",
                     summary=lambda r: f"{len(r['units'])} UAPs; clean test accuracy {r['clean_accuracy']['test']:.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
