"""``medrobust train``: train a registered model on a dataset, from flags or a YAML config.

YAML layout (every key optional; command-line flags override it)::

    dataset: {name: mitdb, root: ../shared/data, options: {format: kachuee, scheme: intra}}
    model: {name: cnn1, kwargs: {weight_norm: true}}
    train: {epochs: 10, batch_size: 128, lr: 0.001, optimizer: adamax, class_balance: none, seed: 0}
    defense: {name: nsr, beta: 0.3}      # any registered defence and its hyper-parameters (default: ce)
    init_from: runs/ce/checkpoint        # optional: start from a checkpoint's weights (fine-tuning)
    out: runs/cnn1
    evaluate_test: true

``--defense NAME`` and repeated ``--defense-option KEY=VALUE`` override the YAML ``defense`` block;
``medrobust train --list-defenses`` prints the defences and their options.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from medrobust.cli._util import ensure_writable_dir, format_table, parse_options, read_yaml, write_json
from medrobust.errors import ConfigError

CONFIG_KEYS = {"dataset", "model", "train", "out", "evaluate_test", "defense", "init_from"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (flags or --config YAML)")
    p.add_argument("--config", help="YAML config (see `medrobust train --help` and docs)")
    p.add_argument("--dataset", help="dataset name (default: synthetic)")
    p.add_argument("--data-dir", help="dataset folder or its parent")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="dataset loader option, repeatable")
    p.add_argument("--model", help="architecture name (default: cnn1); see `medrobust models`")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE", help="architecture argument, repeatable")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=["adam", "adamax"])
    p.add_argument("--class-balance", choices=["none", "oversample", "weights"])
    p.add_argument("--monitor", choices=["accuracy", "balanced_accuracy", "macro_f1", "loss"])
    p.add_argument("--patience", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--evaluate-test", action="store_true", default=None,
                   help="after training, evaluate the selected model on the test split")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", help="output folder (checkpoint/, history.jsonl, summary.json)")
    p.add_argument("--defense", help="defence / training recipe (default: ce); see --list-defenses")
    p.add_argument("--defense-option", action="append", metavar="KEY=VALUE",
                   help="defence hyper-parameter, repeatable (e.g. beta=0.3, eps=0.1)")
    p.add_argument("--init-from", metavar="CHECKPOINT", help="initialise the model from a checkpoint's weights")
    p.add_argument("--list-defenses", action="store_true", help="list the defences and their options, then exit")
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the YAML config and the flags into one validated mapping."""
    cfg = read_yaml(args.config) if args.config else {}
    unknown = set(cfg) - CONFIG_KEYS
    if unknown:
        raise ConfigError(f"{args.config}: unknown keys {sorted(unknown)}; allowed: {sorted(CONFIG_KEYS)}.")
    ds = dict(cfg.get("dataset") or {})
    ds.setdefault("name", "synthetic")
    ds["options"] = {**(ds.get("options") or {}), **parse_options(args.option)}
    if args.dataset:
        ds["name"] = args.dataset
    if args.data_dir:
        ds["root"] = args.data_dir
    model = dict(cfg.get("model") or {})
    model.setdefault("name", "cnn1")
    model["kwargs"] = {**(model.get("kwargs") or {}), **parse_options(args.model_option)}
    if args.model:
        model["name"] = args.model
    train = dict(cfg.get("train") or {})
    fields = {f.name for f in dataclasses.fields(__import__("medrobust.train", fromlist=["TrainConfig"]).TrainConfig)}
    bad = set(train) - fields
    if bad:
        raise ConfigError(f"train: unknown keys {sorted(bad)}; allowed: {sorted(fields)}.")
    for flag in ("epochs", "batch_size", "lr", "optimizer", "class_balance", "monitor", "patience", "seed", "device"):
        value = getattr(args, flag)
        if value is not None:
            train[flag] = value
    if args.no_progress:
        train["progress"] = False
    out = args.out or cfg.get("out") or f"runs/train-{ds['name']}-{model['name']}"
    evaluate_test = args.evaluate_test if args.evaluate_test is not None else bool(cfg.get("evaluate_test", False))
    defense = resolve_defense(cfg.get("defense"), getattr(args, "defense", None),
                              getattr(args, "defense_option", None), args.config)
    init_from = getattr(args, "init_from", None) or cfg.get("init_from")
    return {"dataset": ds, "model": model, "train": train, "out": out, "evaluate_test": evaluate_test,
            "defense": defense, "init_from": init_from}


def resolve_defense(block: Any, name: str | None, options: list[str] | None, source: str | None) -> dict[str, Any]:
    """Merge the YAML ``defense`` block (a name, or a mapping ``{name: ..., <option>: ...}``) with the flags."""
    from medrobust.defenses import available_defenses, defense_options

    if block is None:
        d: dict[str, Any] = {}
    elif isinstance(block, str):
        d = {"name": block}
    elif isinstance(block, dict):
        d = dict(block)
    else:
        raise ConfigError(f"{source}: 'defense' must be a name or a mapping {{name: ..., option: value}}, "
                          f"got {type(block).__name__}.")
    if name:
        if d.get("name") not in (None, name):
            d = {}  # another defence on the command line: the YAML's options do not apply to it
        d["name"] = name
    d.update(parse_options(options))
    d.setdefault("name", "ce")
    key = str(d["name"]).lower()
    if key not in available_defenses():
        raise ConfigError(f"unknown defence {d['name']!r}; available: {', '.join(available_defenses())}.")
    accepted = defense_options(key)
    unknown = [k for k in d if k != "name" and k not in accepted]
    if unknown:
        raise ConfigError(f"defence {key!r}: unknown option(s) {unknown}; accepted: {', '.join(accepted) or '(none)'}.")
    d["name"] = key
    return d


def list_defenses() -> str:
    """One line per defence: name, class and options."""
    from medrobust.defenses import available_defenses, defense_class, defense_options

    lines = []
    for name in available_defenses():
        opts = ", ".join(defense_options(name)) or "(no options)"
        lines.append(f"{name:16s} {defense_class(name).__name__:22s} {opts}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from medrobust.data import load_dataset
    from medrobust.models import build_model
    from medrobust.defenses import get_defense
    from medrobust.models import load_checkpoint
    from medrobust.train import TrainConfig, seed_everything

    if getattr(args, "list_defenses", False):
        print(list_defenses())
        return 0
    cfg = resolve_config(args)
    out = ensure_writable_dir(cfg["out"])
    ds = cfg["dataset"]
    load = lambda split: load_dataset(ds["name"], root=ds.get("root"), split=split, **ds["options"])  # noqa: E731
    train, val = load("train"), load("val")
    tcfg = TrainConfig(**cfg["train"])
    seed_everything(tcfg.seed)
    kwargs = {"in_channels": train.input_shape[0], "input_length": train.input_shape[-1],
              "num_classes": train.num_classes, **cfg["model"]["kwargs"]}
    model = build_model(cfg["model"]["name"], **kwargs)
    if cfg["init_from"]:
        init = load_checkpoint(cfg["init_from"])
        try:
            model.load_state_dict(init.state_dict())
        except RuntimeError as exc:
            raise ConfigError(f"--init-from {cfg['init_from']}: the checkpoint's weights do not fit model "
                              f"{cfg['model']['name']!r} with {kwargs} ({str(exc).splitlines()[0]}).") from None
    defense = dict(cfg["defense"])
    dname = defense.pop("name")
    print(f"training {cfg['model']['name']} with defence {dname!r} on {train!r}")
    trainer = get_defense(dname, model, tcfg, out_dir=out, **defense)
    result = trainer.fit(train, val)
    summary: dict[str, Any] = {"config": cfg, "best_epoch": result.best_epoch, "seconds": result.seconds,
                               "defense": {"name": dname, "hyperparameters": trainer.hyperparameters()},
                               "checkpoint": str(out / "checkpoint"),
                               "val": {k: result.best_metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}}
    rows = [["val", result.best_metrics["accuracy"], result.best_metrics["balanced_accuracy"],
             result.best_metrics["macro_f1"]]]
    if cfg["evaluate_test"]:
        test_m = trainer.evaluate(load("test"))
        summary["test"] = {k: test_m[k] for k in ("n", "correct", "accuracy", "balanced_accuracy", "macro_f1",
                                                  "sensitivity", "precision")}
        rows.append(["test", test_m["accuracy"], test_m["balanced_accuracy"], test_m["macro_f1"]])
    write_json(Path(out) / "summary.json", summary)
    print(format_table(["split", "accuracy", "balanced_acc", "macro_f1"], rows))
    print(f"best epoch {result.best_epoch}; checkpoint: {out / 'checkpoint'}")
    return 0
