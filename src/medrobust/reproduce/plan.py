"""A reproduction plan: a paper's YAML (``configs/*.yaml``) resolved for one budget into train and evaluate steps.

The YAML names the paper, its training recipe (:mod:`medrobust.defenses.recipes`), the dataset, the models the
paper compares (architecture, defence, and the model whose weights start it when a budget fine-tunes), the
evaluation (radii and attacks) and, per budget, what is scaled down (``smoke``, ``cpu``, ``paper``). Each step is
written out as the YAML of an ordinary ``medrobust train`` or ``medrobust evaluate`` run, so every number of a
reproduction traces to one command a user can rerun by hand.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medrobust.errors import ConfigError

CONFIG_DIR = Path(__file__).with_name("configs")
BUDGETS = ("smoke", "cpu", "paper")
PLAN_KEYS = {"name", "paper", "recipe", "dataset", "datasets", "models", "evaluation", "budgets", "claims", "uap"}
BUDGET_KEYS = {"note", "dataset_options", "model_kwargs", "train", "finetune", "limit", "eps", "attack_options",
               "protocol", "per_dataset", "defense_options", "masking", "band", "per_model", "uap", "models",
               "architecture", "eps_scale"}
PER_DATASET_KEYS = {"dataset_options", "model_kwargs", "train", "finetune", "limit", "eps", "attack_options",
                    "defense_options", "masking"}
PER_MODEL_KEYS = {"model_kwargs", "train", "finetune", "uap"}
MODEL_KEYS = {"model", "defense", "init", "dataset", "recipe", "kwargs"}
ARCHITECTURE_KEYS = {"model", "kwargs"}
CLAIM_KEYS = {"id", "claim", "paper", "eps", "models"}
CLAIM_METRICS = ("worst_case", "success_rate")  # "success_rate LABEL": that attack among the correct samples


@dataclass(frozen=True)
class Step:
    """One unit of a reproduction: train one model, or evaluate one trained model."""

    kind: str                    # "train", "evaluate", "masking", "band" or "uap"
    model_id: str
    config: dict[str, Any]       # the YAML of the ``medrobust train`` / ``evaluate`` run
    out: Path                    # its output folder
    after: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return f"{self.kind} {self.model_id}"


def config_path(budget_dir: Path, kind: str, model_id: str) -> Path:
    """Where a step's ``medrobust train``/``evaluate`` YAML is written (and read back by the README)."""
    return budget_dir / "configs" / f"{kind}-{model_id}.yaml"


STEP_MODULES = {"masking": "masking", "band": "han_band", "uap": "hirano_uap"}
"""Step kinds that are not a CLI command: the module whose ``main`` reruns one such step by hand."""


def command(kind: str, config: Path) -> str:
    """The command line that reruns one step by hand."""
    if kind in STEP_MODULES:
        return f"python -m medrobust.reproduce.{STEP_MODULES[kind]} {config}"
    return f"medrobust {kind} --config {config}"


def available() -> list[str]:
    """The reproductions shipped with medrobust (one YAML each)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_plan(name: str) -> dict[str, Any]:
    """The plan ``name`` (a shipped reproduction or a path to a YAML file), its keys checked."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown reproduction {name!r}; available: {', '.join(available())} (or a path to a "
                          "plan .yaml).")
    plan = yaml.safe_load(path.read_text("utf-8"))
    _check_keys(plan, PLAN_KEYS, f"{path}")
    _check_models(plan, path)
    _check_budgets(plan, path)
    if plan.get("uap") is not None:
        from medrobust.reproduce.hirano_uap import check_uap_plan

        check_uap_plan(plan, path)
    elif "evaluation" not in plan:
        raise ConfigError(f"{path}: a plan needs `evaluation` (per-sample attacks) or `uap` (universal perturbations).")
    else:
        _check_claims(plan, path)
    plan["source"] = str(path)
    return plan


def _check_models(plan: dict[str, Any], path: Path) -> None:
    datasets = plan.get("datasets") or {}
    for mid, m in plan["models"].items():
        _check_keys(m, MODEL_KEYS, f"{path}: models.{mid}", required={"model", "defense"})
        if m.get("init") not in (None, *plan["models"]):
            raise ConfigError(f"{path}: models.{mid}.init={m['init']!r} names no model of this plan.")
        if m.get("dataset") not in (None, *datasets):
            raise ConfigError(f"{path}: models.{mid}.dataset={m['dataset']!r} names no entry of the plan's "
                              f"`datasets` ({sorted(datasets) or 'none'}).")
        if m.get("init") is not None and plan["models"][m["init"]].get("dataset") != m.get("dataset"):
            raise ConfigError(f"{path}: models.{mid} starts from {m['init']!r}, which is trained on another dataset.")


def _check_budgets(plan: dict[str, Any], path: Path) -> None:
    datasets = plan.get("datasets") or {}
    for b, spec in plan["budgets"].items():
        if b not in BUDGETS:
            raise ConfigError(f"{path}: unknown budget {b!r}; budgets are {', '.join(BUDGETS)}.")
        _check_keys(spec, BUDGET_KEYS, f"{path}: budgets.{b}", required={"note"})
        for d, over in (spec.get("per_dataset") or {}).items():
            if d not in datasets:
                raise ConfigError(f"{path}: budgets.{b}.per_dataset.{d} names no entry of the plan's `datasets` "
                                  f"({sorted(datasets) or 'none'}).")
            _check_keys(over, PER_DATASET_KEYS, f"{path}: budgets.{b}.per_dataset.{d}")
        for mid, over in (spec.get("per_model") or {}).items():
            if mid not in plan["models"]:
                raise ConfigError(f"{path}: budgets.{b}.per_model.{mid} names no model of this plan "
                                  f"({', '.join(plan['models'])}).")
            _check_keys(over, PER_MODEL_KEYS, f"{path}: budgets.{b}.per_model.{mid}")
        chosen = spec.get("models")
        if chosen is not None:
            if not isinstance(chosen, list) or not chosen or any(m not in plan["models"] for m in chosen):
                raise ConfigError(f"{path}: budgets.{b}.models must be a non-empty list of the plan's models "
                                  f"({', '.join(plan['models'])}), got {chosen!r}.")
            lacking = [m for m in chosen if plan["models"][m].get("init") not in (None, *chosen)]
            if lacking:
                raise ConfigError(f"{path}: budgets.{b}.models lists {lacking} without the model each starts from.")
        if spec.get("architecture") is not None:
            _check_keys(spec["architecture"], ARCHITECTURE_KEYS, f"{path}: budgets.{b}.architecture",
                        required={"model"})
        scale = spec.get("eps_scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ConfigError(f"{path}: budgets.{b}.eps_scale must be a number > 0 (the plan's ε in this budget's "
                              f"units, e.g. 0.001 for ADC units read as mV), got {scale!r}.")
        if spec.get("uap") is not None and plan.get("uap") is None:
            raise ConfigError(f"{path}: budgets.{b}.uap needs the plan's top-level `uap` block.")


def _check_claims(plan: dict[str, Any], path: Path) -> None:
    labels = {a.get("label", a["name"]) for a in plan["evaluation"]["attacks"]}
    for c in plan.get("claims", []):
        _check_keys(c, CLAIM_KEYS | {"metric"}, f"{path}: claims", required=CLAIM_KEYS)
        metric = str(c.get("metric", "worst_case")).split()
        if not (metric == ["worst_case"] or (len(metric) == 2 and metric[0] == "success_rate" and metric[1] in labels)):
            raise ConfigError(f"{path}: claim {c.get('id')!r}: metric must be 'worst_case' or 'success_rate LABEL' "
                              f"with LABEL one of {sorted(labels)}, got {c.get('metric')!r}.")
        unknown = [m for m in c["models"] if m not in plan["models"]]
        if unknown:
            raise ConfigError(f"{path}: claim {c['id']!r} names unknown models {unknown}.")


def _check_keys(block: Any, allowed: set[str], where: str, required: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    if not isinstance(block, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(block).__name__}.")
    extra, missing = set(block) - allowed, set(required) - set(block)
    if extra or missing:
        raise ConfigError(f"{where}: " + "; ".join(
            ([f"unknown keys {sorted(extra)} (allowed: {sorted(allowed)})"] if extra else [])
            + ([f"missing keys {sorted(missing)}"] if missing else [])) + ".")


USER_MODEL = "yours"


def with_user_model(plan: dict[str, Any], model: str, source: dict[str, Any] | None = None, *,
                    signal: dict[str, float] | None = None) -> dict[str, Any]:
    """The plan evaluating the user's own model (any source of :func:`medrobust.models.load_model`) instead of
    training the paper's: one model, ``yours``, on the plan's main dataset; the claims read its numbers.

    ``signal`` (``fs`` in Hz, ``seconds``: what the model was trained on, see :func:`user_model_signal`) replaces
    those data options wherever a budget sets them, so that a model trained at another rate or length than the
    paper's is evaluated on data it accepts; the budget's note says so."""
    plan = copy.deepcopy(plan)
    plan["models"] = {USER_MODEL: {"model": str(model), "defense": "(your model)", "source": dict(source or {})}}
    for c in plan.get("claims", []):
        c["models"] = [USER_MODEL]
    for spec in plan["budgets"].values():  # the budget's model choice and per-model settings name the paper's models
        spec.pop("models", None)
        spec.pop("per_model", None)
        spec.pop("architecture", None)
        data = {**(plan["dataset"].get("options") or {}), **(spec.get("dataset_options") or {})}
        fitted = {k: v for k, v in _fitting(plan["dataset"]["name"], signal or {}, data).items() if data.get(k) != v}
        if fitted:
            spec["dataset_options"] = {**(spec.get("dataset_options") or {}), **fitted}
        unit = {"fs": " Hz", "seconds": " s"}
        refit = (" The data are loaded at your model's " + ", ".join(f"{k} = {v:g}{unit.get(k, '')}" for k, v in
                                                                    fitted.items())
                 + " instead of the budget's " + ", ".join(f"{data[k]:g}{unit.get(k, '')}" if k in data else
                                                           f"dataset default {k}" for k in fitted) + "."
                 ) if fitted else ""
        spec["note"] = (f"your model (`{model}`), not trained here, evaluated with this budget's data settings, "
                        f"attacks and checks.{refit} The budget's note for the paper's own models: "
                        f"{spec.get('note', '–')}")
    return plan


def _fitting(dataset: str, signal: dict[str, float], data: dict[str, Any]) -> dict[str, float]:
    """The part of ``signal`` to load ``dataset`` with: nothing when the budget's ``data`` options set neither the
    rate nor the length (the dataset's own format, e.g. fixed beats), else every key the loader accepts."""
    from medrobust.data.registry import dataset_options

    if not any(k in data for k in signal):
        return {}
    accepted = dataset_options(dataset)
    return {k: v for k, v in signal.items() if k in accepted}


def user_model_signal(card: dict[str, Any], source: dict[str, Any] | None = None) -> dict[str, float]:
    """``fs`` and ``seconds`` of the signals a model was trained on: the rate from ``source`` (``--fs``) or the
    model's card, the length from the card's ``input_shape`` (leads, samples); empty for images (no rate)."""
    fs = float((source or {}).get("fs") or card.get("fs") or 0.0)
    if fs <= 0:
        return {}
    shape = card.get("input_shape") or []
    return {"fs": fs, **({"seconds": int(shape[-1]) / fs} if len(shape) == 2 else {})}


def budget_plan(plan: dict[str, Any], budget: str) -> dict[str, Any]:
    """The plan with only the models the budget runs (its ``models`` list; all when it has none), each built
    as the budget's ``architecture`` (``model`` and ``kwargs`` replace every model's own) where it sets one:
    a budget that cannot afford the paper's network compares the same training methods on another."""
    spec = plan["budgets"].get(budget) or {}
    chosen, arch = spec.get("models"), spec.get("architecture")
    if chosen is None and arch is None:
        return plan
    models = {m: s for m, s in plan["models"].items() if chosen is None or m in chosen}
    if arch is not None:
        models = {m: {**s, "model": arch["model"], "kwargs": dict(arch.get("kwargs") or {})} for m, s in models.items()}
    return {**plan, "models": models}


def resolve_steps(plan: dict[str, Any], *, budget: str, out: Path, data_dir: str | None = None) -> list[Step]:
    """The train steps (a model after the one it starts from) then the evaluate steps, for ``budget``
    (no training for a plan made by :func:`with_user_model`)."""
    if budget not in plan["budgets"]:
        raise ConfigError(f"reproduction {plan['name']!r} has no budget {budget!r}; it has "
                          f"{', '.join(plan['budgets'])}.")
    plan = budget_plan(plan, budget)
    contexts = {mid: _model_context(plan, plan["budgets"][budget], mid, data_dir) for mid in plan["models"]}
    steps = [_train_step(plan, *contexts[mid], mid, out) for mid in _train_order(plan["models"])
             if "source" not in plan["models"][mid]]
    if "evaluation" in plan:
        steps += [_eval_step(plan, *contexts[mid], mid, out) for mid in plan["models"]]
    evals = {s.model_id: s for s in steps if s.kind == "evaluate"}
    steps += [_masking_step(plan, *contexts[mid], mid, out, budget) for mid in plan["models"]
              if plan["models"][mid]["defense"] != "ce" and contexts[mid][0].get("masking")]
    steps += [_band_step(plan, contexts[mid][0], evals[mid], mid, out, budget) for mid in plan["models"]
              if contexts[mid][0].get("band")]
    if plan.get("uap") is not None:
        steps += [_uap_step(plan, *contexts[mid], mid, out, budget) for mid in plan["models"]]
    return steps


def _model_context(plan: dict[str, Any], spec: dict[str, Any], mid: str,
                   data_dir: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(budget settings, dataset block)`` of one model: a model on one of the plan's other ``datasets`` gets
    that dataset and the budget's ``per_dataset`` overrides for it instead of the budget's own values."""
    key = plan["models"][mid].get("dataset")
    if key is None:
        ds, merged = copy.deepcopy(plan["dataset"]), dict(spec)
    else:
        ds = copy.deepcopy(plan["datasets"][key])
        merged = {k: v for k, v in spec.items() if k not in PER_DATASET_KEYS}
        merged.update((spec.get("per_dataset") or {}).get(key) or {})
    ds["options"] = {**(ds.get("options") or {}), **(merged.get("dataset_options") or {})}
    if data_dir is not None:
        ds["root"] = str(data_dir)
    return merged, ds


def _train_order(models: dict[str, Any]) -> list[str]:
    order: list[str] = []
    while len(order) < len(models):
        ready = [m for m, s in models.items() if m not in order and (s.get("init") in (None, *order))]
        if not ready:
            raise ConfigError(f"models' init form a cycle: {sorted(set(models) - set(order))}.")
        order += ready
    return order


def _train_step(plan: dict[str, Any], spec: dict[str, Any], ds: dict[str, Any], mid: str, out: Path) -> Step:
    m = plan["models"][mid]
    finetune = m.get("init") is not None and spec.get("finetune") is not None
    own = (spec.get("per_model") or {}).get(mid) or {}
    kwargs = {**(spec.get("model_kwargs") or {}), **(m.get("kwargs") or {}), **(own.get("model_kwargs") or {})}
    model = {"name": m["model"], **({"kwargs": kwargs} if kwargs else {})}
    train = dict((spec.get("finetune") if finetune else spec.get("train")) or {})
    train.update((own.get("finetune") if finetune else own.get("train")) or {})
    cfg: dict[str, Any] = {"dataset": ds, "model": model, "recipe": m.get("recipe", plan.get("recipe")),
                           "defense": {"name": m["defense"], **((spec.get("defense_options") or {}).get(m["defense"]) or {})},
                           "train": train,
                           "out": str(out / "models" / mid), "evaluate_test": True}
    after: tuple[str, ...] = ()
    if finetune:
        cfg["init_from"] = str(out / "models" / m["init"] / "checkpoint")
        after = (m["init"],)
    return Step("train", mid, cfg, out / "models" / mid, after)


def _masking_step(plan: dict[str, Any], spec: dict[str, Any], ds: dict[str, Any], mid: str, out: Path,
                  budget: str) -> Step:
    from medrobust.reproduce.masking import masking_step_config

    cfg = masking_step_config(spec["masking"], checkpoint=_checkpoint(plan, mid, out), dataset=ds,
                              out=out / "masking" / mid, where=f"{plan['source']}: budgets.{budget}.masking")
    cfg["source"] = dict(plan["models"][mid].get("source") or {})
    return Step("masking", mid, cfg, out / "masking" / mid, (mid,))


def _band_step(plan: dict[str, Any], spec: dict[str, Any], ev: Step, mid: str, out: Path, budget: str) -> Step:
    from medrobust.reproduce.han_band import band_step_config

    cfg = band_step_config(spec["band"], attacks=ev.config["protocol"]["attacks"], checkpoint=_checkpoint(plan, mid, out),
                           dataset={k: v for k, v in ev.config["dataset"].items() if k != "limit"},
                           out=out / "band" / mid, where=f"{plan['source']}: budgets.{budget}.band")
    cfg["source"] = dict(plan["models"][mid].get("source") or {})
    return Step("band", mid, cfg, out / "band" / mid, (mid,))


def _uap_step(plan: dict[str, Any], spec: dict[str, Any], ds: dict[str, Any], mid: str, out: Path,
              budget: str) -> Step:
    from medrobust.reproduce.hirano_uap import uap_step_config

    m = plan["models"][mid]
    own = ((spec.get("per_model") or {}).get(mid) or {}).get("uap") or {}
    cfg = uap_step_config({**plan["uap"], **(spec.get("uap") or {}), **own}, checkpoint=_checkpoint(plan, mid, out),
                          dataset=ds, out=out / "uap" / mid, retrained=m.get("init") is not None,
                          where=f"{plan['source']}: budgets.{budget}.uap")
    if "source" in m:
        cfg["source"] = dict(m["source"])
    return Step("uap", mid, cfg, out / "uap" / mid, (mid,))


def _eval_step(plan: dict[str, Any], spec: dict[str, Any], ds: dict[str, Any], mid: str, out: Path) -> Step:
    ev = plan["evaluation"]
    options = spec.get("attack_options") or {}
    attacks = []
    for a in ev["attacks"]:
        label = a.get("label", a["name"])
        attacks.append({**a, **(options.get(label) or {})})
    unknown = set(options) - {a.get("label", a["name"]) for a in ev["attacks"]}
    if unknown:
        raise ConfigError(f"{plan['source']}: attack_options name unknown attack labels {sorted(unknown)}.")
    m = plan["models"][mid]
    eps = list(spec.get("eps") or [float(e) * spec.get("eps_scale", 1.0) for e in ev["eps"]])
    cfg = {"checkpoint": _checkpoint(plan, mid, out),
           "dataset": {**ds, "split": "test", "limit": spec.get("limit")},
           "protocol": {"attacks": attacks, "eps": eps, "mode": "individual",
                        "minimal_eps": False, "seed": 0, **(spec.get("protocol") or {})},
           "out": str(out / "eval" / mid), "report": False}
    if "source" in m:
        cfg["source"] = dict(m["source"])
    return Step("evaluate", mid, cfg, out / "eval" / mid, (mid,))


def _checkpoint(plan: dict[str, Any], mid: str, out: Path) -> str:
    m = plan["models"][mid]
    return m["model"] if "source" in m else str(out / "models" / mid / "checkpoint")
