"""``medrobust train``: train a registered model on a dataset, from flags or a YAML config.

YAML layout (every key optional; command-line flags override it)::

    dataset: {name: mitdb, root: ../shared/data, options: {format: kachuee, scheme: intra}}
    model: {name: cnn1, kwargs: {weight_norm: true}}
    train: {epochs: 10, batch_size: 128, lr: 0.001, optimizer: adamax, class_balance: none, seed: 0}
    defense: {name: nsr, beta: 0.3}      # any registered defence and its hyper-parameters (default: ce)
    recipe: ma2020                       # optional: a paper's settings as defaults (see --recipe)
    init_from: runs/ce/checkpoint        # optional: start from a checkpoint's weights (fine-tuning)
    trust_unverified: false              # load an init_from checkpoint whose weights hash is missing/wrong
    out: runs/cnn1
    evaluate_test: true

Every key and value is checked (type, allowed keys, ranges) before any data is read. ``--out`` must be a
new or empty folder, or one an earlier ``medrobust train`` wrote; re-running into a folder that holds a
trained checkpoint needs ``--overwrite``, which removes only what ``train`` writes (``TRAIN_PRODUCES``).

``--recipe NAME`` (``ma2020``, ``ma2022-cpsc``, ``shao2022``, ``han2020``; :mod:`medrobust.defenses.recipes`)
takes the paper's training settings, architecture and defence options as defaults: the YAML and the flags
still override each of them.

``--defense NAME`` and repeated ``--defense-option KEY=VALUE`` override the YAML ``defense`` block;
``medrobust train --list-defenses`` prints the defences and their options.
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import Any

from medrobust.cli._util import check_section, claim_out_dir, format_table, parse_options, read_yaml, write_json
from medrobust.errors import ConfigError

CONFIG_SCHEMA: dict[str, Any] = {"dataset": dict | None, "model": dict | None, "train": dict | None,
                                 "out": str | None, "evaluate_test": bool | None, "defense": str | dict | None,
                                 "init_from": str | None, "trust_unverified": bool | None, "recipe": str | None}
CONFIG_KEYS = set(CONFIG_SCHEMA)
DATASET_SCHEMA: dict[str, Any] = {"name": str, "root": str | None, "options": dict | None}
MODEL_SCHEMA: dict[str, Any] = {"name": str, "kwargs": dict | None}
TRAIN_PRODUCES = ("checkpoint", "history.jsonl", "summary.json", "teacher", "train_state.pt")
"""What ``medrobust train`` writes in ``--out`` (``teacher``: the distillation teacher)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (flags or --config YAML)")
    p.add_argument("--config", help="YAML config (see `medrobust train --help` and docs)")
    p.add_argument("--dataset", help="dataset name (default: synthetic)")
    p.add_argument("--data-dir", help="dataset folder or its parent")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="dataset loader option, repeatable")
    p.add_argument("--model", help="architecture name (default: cnn1); see `medrobust models`")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE", help="architecture argument, repeatable")
    p.add_argument("--epochs", type=int, help="training epochs (default: the recipe's, else 10)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: 128)")
    p.add_argument("--lr", type=float, help="learning rate (default: 0.001)")
    p.add_argument("--optimizer", choices=["adam", "adamax"], help="optimiser (default: adam; Ma & Liang: adamax)")
    p.add_argument("--class-balance", choices=["auto", "none", "oversample", "weights"],
                   help="auto (default): the balancing the defence's paper used")
    p.add_argument("--monitor", choices=["accuracy", "balanced_accuracy", "macro_f1", "loss"],
                   help="validation quantity that picks the best epoch (default: accuracy)")
    p.add_argument("--patience", type=int, help="stop after this many epochs without improvement (default: 5)")
    p.add_argument("--seed", type=int, help="seed of initialisation, batch order and sampling (default: 0)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--evaluate-test", action="store_true", default=None,
                   help="after training, evaluate the selected model on the test split")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", help="output folder (checkpoint/, history.jsonl, summary.json)")
    p.add_argument("--defense", help="defence / training recipe (default: ce); see --list-defenses")
    p.add_argument("--recipe", help="a paper's settings as defaults: ma2020, ma2022-cpsc, shao2022, han2020")
    p.add_argument("--defense-option", action="append", metavar="KEY=VALUE",
                   help="defence hyper-parameter, repeatable (e.g. beta=0.3, eps=0.1)")
    p.add_argument("--init-from", metavar="CHECKPOINT", help="initialise the model from a checkpoint's weights")
    p.add_argument("--trust-unverified", action="store_true", default=None,
                   help="load an --init-from checkpoint whose card has no (or another) weights hash; recorded")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run's checkpoint/, history.jsonl and summary.json in --out")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted training in --out at its last finished epoch (train_state.pt); "
                        "the settings and data must be the same")
    p.add_argument("--list-defenses", action="store_true", help="list the defences and their options, then exit")
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the YAML config and the flags into one mapping, every key and value checked before any work."""
    from medrobust.data import check_dataset_options
    from medrobust.models import available_models
    from medrobust.train import TrainConfig

    src = args.config or "train config"
    cfg = check_section(read_yaml(args.config) if args.config else {}, CONFIG_SCHEMA, where=src)
    ds = check_section(cfg.get("dataset"), DATASET_SCHEMA, where=f"{src}: dataset")
    ds.setdefault("name", "synthetic")
    ds["options"] = {**(ds.get("options") or {}), **parse_options(args.option)}
    if args.dataset:
        ds["name"] = args.dataset
    if args.data_dir:
        ds["root"] = args.data_dir
    ds["options"] = check_dataset_options(ds["name"], ds["options"])
    model = check_section(cfg.get("model"), MODEL_SCHEMA, where=f"{src}: model")
    if args.model:
        model["name"] = args.model
    defense = resolve_defense(cfg.get("defense"), getattr(args, "defense", None),
                              getattr(args, "defense_option", None), args.config)
    recipe = getattr(args, "recipe", None) or cfg.get("recipe")
    recipe_train, model = _apply_recipe(recipe, defense, model) if recipe else ({}, model)
    model.setdefault("name", "cnn1")
    model["kwargs"] = {**(model.get("kwargs") or {}), **parse_options(args.model_option, flag="--model-option")}
    if model["name"] not in available_models():
        raise ConfigError(f"unknown model name {model['name']!r}; available: {', '.join(available_models())}.")
    train = {**recipe_train, **dict(cfg.get("train") or {})}
    for flag in ("epochs", "batch_size", "lr", "optimizer", "class_balance", "monitor", "patience", "seed", "device"):
        value = getattr(args, flag)
        if value is not None:
            train[flag] = value
    if args.no_progress:
        train["progress"] = False
    train = check_section(train, typing.get_type_hints(TrainConfig), where=f"{src}: train")
    TrainConfig(**train).validate()  # ranges and choices, before any data is read
    out = args.out or cfg.get("out") or f"runs/train-{ds['name']}-{model['name']}"
    evaluate_test = args.evaluate_test if args.evaluate_test is not None else bool(cfg.get("evaluate_test", False))
    init_from = getattr(args, "init_from", None) or cfg.get("init_from")
    trust = getattr(args, "trust_unverified", None)
    trust = bool(cfg.get("trust_unverified") or False) if trust is None else trust
    return {"dataset": ds, "model": model, "train": train, "out": out, "evaluate_test": evaluate_test,
            "defense": defense, "init_from": init_from, "trust_unverified": trust, "recipe": recipe}


def _apply_recipe(recipe: str, defense: dict[str, Any], model: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The recipe's training settings, and the model section with the recipe's architecture as default; the
    recipe's defence options are filled into ``defense`` where the user gave none."""
    from medrobust.defenses.recipes import recipe_config, recipe_model

    name, kwargs = recipe_model(recipe, defense["name"], model=model.get("name"))
    train_kw, options = recipe_config(recipe, defense["name"], model=name)
    for k, v in options.items():
        defense.setdefault(k, v)
    return dict(train_kw), {**model, "name": name, "kwargs": {**kwargs, **(model.get("kwargs") or {})}}


def resolve_defense(block: Any, name: str | None, options: list[str] | None, source: str | None) -> dict[str, Any]:
    """Merge the YAML ``defense`` block (a name, or a mapping ``{name: ..., <option>: ...}``) with the flags;
    the name, the option keys and the option value types are checked (one line naming the key)."""
    from medrobust.data.options import check_options, parameter_schema
    from medrobust.defenses import available_defenses, defense_class

    where = f"{source}: defense" if source else "--defense"
    if block is None:
        d: dict[str, Any] = {}
    elif isinstance(block, str):
        d = {"name": block}
    elif isinstance(block, dict):
        d = dict(block)
    else:
        raise ConfigError(f"{where} must be a name or a mapping {{name: ..., option: value}}, got {block!r:.60}.")
    if name:
        if d.get("name") not in (None, name):
            d = {}  # another defence on the command line: the YAML's options do not apply to it
        d["name"] = name
    d.update(parse_options(options, flag="--defense-option"))
    d.setdefault("name", "ce")
    key = str(d["name"]).lower() if isinstance(d["name"], str) else None
    if key not in available_defenses():
        raise ConfigError(f"{where}: unknown defence {d['name']!r:.60}; available: {', '.join(available_defenses())}.")
    schema = parameter_schema(defense_class(key).__init__, exclude=_DEFENSE_RESERVED)
    unknown = [k for k in d if k != "name" and k not in schema]
    if unknown:
        raise ConfigError(f"{where}: defence {key!r}: unknown option(s) {unknown}; accepted: "
                          f"{', '.join(schema) or '(none)'}.")
    opts = check_options({k: v for k, v in d.items() if k != "name"}, schema, owner=f"{where} {key!r}")
    return {"name": key, **opts}


_DEFENSE_RESERVED = ("self", "model", "config", "out_dir", "generator")


def list_defenses() -> str:
    """One line per defence: name, class and options."""
    from medrobust.defenses import available_defenses, defense_class, defense_options

    lines = []
    for name in available_defenses():
        opts = ", ".join(defense_options(name)) or "(no options)"
        lines.append(f"{name:16s} {defense_class(name).__name__:22s} {opts}")
    return "\n".join(lines)


def _shape_kwargs(shape: tuple[int, ...]) -> dict[str, Any]:
    """The architecture's size arguments from a dataset's input shape.

    ``(leads, samples)`` → ``in_channels``, ``input_length`` (the ECG models); ``(channels, H, W)`` →
    ``in_channels``, ``input_size`` (the image models, which have no ``input_length``).
    """
    if len(shape) == 3:
        return {"in_channels": int(shape[0]), "input_size": [int(shape[1]), int(shape[2])]}
    return {"in_channels": int(shape[0]), "input_length": int(shape[-1])}


def _challenge(metrics: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The CinC 2017 challenge score (mean F1 of N, A, O) and per-class F1 for a model of that dataset."""
    if dataset != "cinc2017" or "confusion" not in metrics:
        return {}
    from medrobust.data.cinc2017 import challenge_score

    s = challenge_score(metrics["confusion"])
    return {"challenge_score": s["score"], "challenge_f1": {k[3:]: v for k, v in s.items() if k.startswith("F1_")}}


def run(args: argparse.Namespace) -> int:
    from medrobust.data import load_dataset
    from medrobust.models import build_model
    from medrobust.defenses import get_defense
    from medrobust.models import load_checkpoint
    from medrobust.train import TrainConfig, seed_everything

    if getattr(args, "list_defenses", False):
        print(list_defenses())
        return 0
    from medrobust.distributed import barrier, init_from_env

    cfg = resolve_config(args)
    rank, world = init_from_env()  # under torchrun: each rank trains on its slice of every global batch
    resume = bool(getattr(args, "resume", False))
    if resume and getattr(args, "overwrite", False):
        raise ConfigError("--resume continues the run in --out and --overwrite deletes it; pass one of them.")
    if resume and (Path(cfg["out"]) / "summary.json").is_file():
        raise ConfigError(f"--resume: the training in {cfg['out']} finished (summary.json); nothing to continue. "
                          "Pass --overwrite to train it again, or another --out.")
    if rank == 0:
        out = claim_out_dir(cfg["out"], command="train", overwrite=bool(getattr(args, "overwrite", False)),
                            produced=TRAIN_PRODUCES, resume=resume)
    barrier()
    out = Path(cfg["out"])
    ds = cfg["dataset"]
    load = lambda split: load_dataset(ds["name"], root=ds.get("root"), split=split, **ds["options"])  # noqa: E731
    train, val = load("train"), load("val")
    tcfg = TrainConfig(**cfg["train"])
    seed_everything(tcfg.seed)
    kwargs = {**_shape_kwargs(train.input_shape), "num_classes": train.num_classes, **cfg["model"]["kwargs"]}
    model = build_model(cfg["model"]["name"], **kwargs)
    init_info = None
    if cfg["init_from"]:
        init = load_checkpoint(cfg["init_from"], trust_unverified=cfg["trust_unverified"])
        init_info = {"checkpoint": str(cfg["init_from"]), "weights_sha256": init.card["weights_sha256"],
                     "weights_verified": init.card["weights_verified"]}
        try:
            model.load_state_dict(init.state_dict())
        except RuntimeError as exc:
            raise ConfigError(f"--init-from {cfg['init_from']}: the checkpoint's weights do not fit model "
                              f"{cfg['model']['name']!r} with {kwargs} ({str(exc).splitlines()[0]}).") from None
    defense = dict(cfg["defense"])
    dname = defense.pop("name")
    if rank == 0:
        print(f"training {cfg['model']['name']} with defence {dname!r} on {train!r}"
              + (f" in {world} ranks (global batch {tcfg.batch_size})" if world > 1 else ""))
    trainer = get_defense(dname, model, tcfg, out_dir=out, **defense)
    trainer.resume = resume
    result = trainer.fit(train, val)
    if rank != 0:
        return 0  # rank 0 wrote the checkpoint; it writes the summary too
    if result.degenerate:
        print(f"warning: degenerate model: {result.degenerate}")
    summary: dict[str, Any] = {"config": cfg, "best_epoch": result.best_epoch, "seconds": result.seconds,
                               "degenerate": result.degenerate,
                               "defense": {"name": dname, "hyperparameters": trainer.hyperparameters()},
                               "checkpoint": str(out / "checkpoint"), "init_from": init_info,
                               "val": {**{k: result.best_metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
                                       **_challenge(result.best_metrics, ds["name"])}}
    rows = [["val", result.best_metrics["accuracy"], result.best_metrics["balanced_accuracy"],
             result.best_metrics["macro_f1"]]]
    if cfg["evaluate_test"]:
        test_m = trainer.evaluate(load("test"))
        summary["test"] = {**{k: test_m[k] for k in ("n", "correct", "accuracy", "balanced_accuracy", "macro_f1",
                                                     "sensitivity", "precision", "confusion")},
                           **_challenge(test_m, ds["name"])}
        rows.append(["test", test_m["accuracy"], test_m["balanced_accuracy"], test_m["macro_f1"]])
    write_json(Path(out) / "summary.json", summary)
    print(format_table(["split", "accuracy", "balanced_acc", "macro_f1"], rows))
    for split in ("val", "test"):
        if "challenge_score" in summary.get(split, {}):
            print(f"{split}: CinC 2017 challenge score (mean F1 of N, A, O) {summary[split]['challenge_score']:.4f}")
    print(f"best epoch {result.best_epoch}; checkpoint: {out / 'checkpoint'}")
    return 0
