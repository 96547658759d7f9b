"""``medrobust evaluate``: robustness evaluation of a checkpoint → resumable run folder with a JSON result card.

Example::

    medrobust evaluate --checkpoint runs/cnn1/checkpoint --dataset mitdb --data-dir ../shared/data \\
        --split test --attacks pgd,sap --eps 0.01,0.05,0.1 --limit 500 --out runs/eval --report

Without ``--attacks`` the named standard protocol of the data type runs (fixed attacks, radii and
settings). A run killed at any point resumes when the same command is run again.

YAML layout (``--config``; every key optional, flags override it)::

    checkpoint: runs/cnn1/checkpoint
    dataset: {name: mitdb, root: ../shared/data, split: test, limit: 500, options: {scheme: intra}}
    protocol:                      # or: protocol: standard
      attacks: [pgd, {name: sap, steps: 100, smooth_steps: 200, step_size: 0.01}]
      eps: [0.01, 0.03, 0.05, 0.1]
      mode: individual
      minimal_eps: true
      seed: 0
    out: runs/eval
    device: cpu                    # cuda: the attacks' gradient steps replayed from CUDA graphs (fast_path)
    fast_path: auto                # auto | off | cuda_graph (no effect on the numbers)
    precision: fp32                # bf16: autocast forward, if robust accuracy stays within 0.5 pp of fp32
    report: true
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from medrobust.cli._util import check_section, ensure_writable_dir, format_table, parse_options, read_yaml
from medrobust.errors import ConfigError

CONFIG_SCHEMA: dict[str, Any] = {"checkpoint": str | None, "dataset": dict | None, "protocol": str | dict | None,
                                 "out": str | None, "device": str | None, "report": bool | None,
                                 "source": dict | None, "fast_path": str | None, "precision": str | None}
SOURCE_SCHEMA: dict[str, Any] = {"weights": str | None, "model_path": str | None, "fs": float | int | None,
                                 "units": str | None, "classes": str | list | None, "input_shape": str | list | None,
                                 "trust_unverified": bool | None}
"""The YAML ``source`` block: what the model file does not say (the ``--fs``/``--units``/... flags, which win)."""
DATASET_SCHEMA: dict[str, Any] = {"name": str | None, "root": str | None, "split": str | None, "limit": int | None,
                                  "options": dict | None}
CONFIG_KEYS = set(CONFIG_SCHEMA)
DATASET_KEYS = set(DATASET_SCHEMA)


MODEL_SOURCES_HELP = ("the model: a checkpoint folder (medrobust train / save_checkpoint), a TorchScript file "
                      "(.pt/.ts from torch.jit.save), an ONNX file (.onnx) or MODULE:FACTORY with --weights")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model-source flags shared by ``evaluate``, ``attack`` and ``benchmark`` (see docs/own_model.md)."""
    p.add_argument("--checkpoint", "--model", dest="checkpoint", metavar="SOURCE", help=MODEL_SOURCES_HELP)
    p.add_argument("--weights", metavar="FILE",
                   help="for MODULE:FACTORY: the weights (.safetensors, or a state dict read with weights_only=True)")
    p.add_argument("--model-path", metavar="DIR",
                   help="for MODULE:FACTORY: the folder your package is imported from (default: the current folder)")
    p.add_argument("--fs", type=float, help="the model's sampling rate in Hz (required unless the file says it)")
    p.add_argument("--units", help="the model's input units, e.g. 'normalized [0, 1]' or mV (required unless the "
                                   "file says it)")
    p.add_argument("--classes", help="the model's class names in output order, e.g. N,S,V,F,Q (required unless "
                                     "the file says it)")
    p.add_argument("--input-shape", metavar="LEADS,SAMPLES",
                   help="input shape without the batch dimension (default: the dataset's); checked by a probe "
                        "forward pass")
    p.add_argument("--trust-unverified", action="store_true",
                   help="load a checkpoint whose weights hash is missing or wrong (recorded as a flag in the card)")


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    """The model-source flags as :func:`medrobust.models.load_model` keyword arguments."""
    return {"weights": getattr(args, "weights", None), "model_path": getattr(args, "model_path", None),
            "fs": getattr(args, "fs", None), "units": getattr(args, "units", None),
            "classes": getattr(args, "classes", None), "input_shape": getattr(args, "input_shape", None),
            "trust_unverified": bool(getattr(args, "trust_unverified", False))}


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """Model and data flags shared by ``evaluate`` and ``attack``."""
    add_model_arguments(p)
    p.add_argument("--dataset", help="dataset name (default: the checkpoint's training dataset)")
    p.add_argument("--data-dir", help="dataset folder or its parent")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="dataset loader option, repeatable")
    p.add_argument("--split", help="split to evaluate (default: test)")
    p.add_argument("--limit", type=int, help="evaluate a stratified seeded subset of N samples")
    p.add_argument("--device", help="torch device (default: cpu)")
    p.add_argument("--fast-path", choices=("auto", "off", "cuda_graph"),
                   help="attack steps replayed from CUDA graphs (default auto: on CUDA only; numbers unchanged)")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="bf16: autocast forward when its robust accuracy is within 0.5 pp of fp32 (default fp32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="robustness evaluation → result card (resumable)")
    p.add_argument("--config", help="YAML config (see `medrobust evaluate --help` and docs/evaluation.md)")
    add_data_arguments(p)
    p.add_argument("--protocol", help="'standard' (the data type's fixed protocol), a standard protocol name, or "
                                      "'custom' (default when --attacks is given)")
    p.add_argument("--attacks", help="comma-separated registered attack names, e.g. pgd,sap,fgsm")
    p.add_argument("--attack-option", action="append", metavar="ATTACK.KEY=VALUE",
                   help="attack option, repeatable, e.g. pgd.steps=50 (ATTACK is the attack's label)")
    p.add_argument("--eps", help="comma-separated radii in input units, e.g. 0.01,0.05,0.1")
    p.add_argument("--norm", choices=["linf", "l2"], help="threat-model norm (default: linf)")
    p.add_argument("--eps-mode", choices=["abs", "ptp", "snr_db"],
                   help="abs: ε in input units; ptp: a fraction of each record's peak-to-peak; snr_db: an SNR (default: abs)")
    p.add_argument("--mode", choices=["sequential", "individual"],
                   help="sequential: each attack on the still-robust samples; individual: every attack on every sample")
    p.add_argument("--restarts", type=int, help="protocol-level restarts of every attack")
    p.add_argument("--minimal-eps", action="store_true", default=None,
                   help="also find each sample's minimal adversarial ε by bisection (the whole curve in one run)")
    p.add_argument("--refine-steps", type=int, help="bisection steps between grid radii (default 6)")
    p.add_argument("--batch-size", type=int, help="samples per attack batch (default: 256)")
    p.add_argument("--seed", type=int, help="seed of the attacks' random streams and of --limit's subset (default: 0)")
    p.add_argument("--examples", type=int, help="records kept for the report (default 5)")
    p.add_argument("--no-large-eps-check", action="store_true", help="skip the large-ε sanity check")
    p.add_argument("--out", help="run folder (state, card.json, examples)")
    p.add_argument("--overwrite", action="store_true", help="discard an existing run in --out instead of resuming")
    p.add_argument("--report", action="store_true", default=None, help="write report.md and report.html at the end")
    p.set_defaults(func=run)


def parse_float_list(text: str, flag: str) -> list[float]:
    try:
        vals = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated numbers, e.g. 0.01,0.05,0.1.") from None
    if not vals:
        raise ConfigError(f"{flag} {text!r}: give at least one number.")
    return vals


def load_model_and_data(ds_cfg: dict[str, Any], checkpoint: str | None, *, trust_unverified: bool = False,
                        source: dict[str, Any] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Load the model (any source of :func:`medrobust.models.load_model`) and the dataset split; refuse a mismatch.

    ``trust_unverified`` loads checkpoint weights whose SHA-256 is missing from (or differs from) the card; the
    model card then says ``weights_verified: false`` and the result card carries the ``unverified-weights`` flag.
    ``source`` holds the other model-source flags (:func:`source_options`). For a source other than a checkpoint
    folder the dataset is loaded first (``--dataset`` is required) and ``--input-shape`` defaults to the data's.
    """
    from medrobust.data import load_dataset
    from medrobust.evaluation import check_compatible
    from medrobust.models import load_model, source_kind

    if not checkpoint:
        raise ConfigError("--checkpoint is required: a checkpoint folder, a TorchScript (.pt/.ts) or ONNX file, "
                          "or MODULE:FACTORY with --weights.")
    opts = {k: v for k, v in (source or {}).items() if v is not None and k != "trust_unverified"}
    opts["trust_unverified"] = trust_unverified or bool((source or {}).get("trust_unverified"))
    split = ds_cfg.get("split") or "test"
    ds = None
    if source_kind(checkpoint) != "checkpoint":
        if not ds_cfg.get("name"):
            raise ConfigError(f"--dataset is required: {checkpoint} does not record the data it was trained on.")
        ds = load_dataset(ds_cfg["name"], root=ds_cfg.get("root"), split=split, **(ds_cfg.get("options") or {}))
        opts.setdefault("input_shape", list(ds.input_shape))
    model = load_model(checkpoint, **opts)
    card = dict(model.card)
    name = ds_cfg.get("name") or (card.get("data") or {}).get("name")
    if not name:
        raise ConfigError("--dataset is required: the checkpoint does not record its training dataset.")
    if ds is None:
        ds = load_dataset(name, root=ds_cfg.get("root"), split=split, **(ds_cfg.get("options") or {}))
    check_compatible(card, ds)
    return model, ds, card


def _protocol_settings(proto_cfg: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The YAML ``protocol`` section with the command-line flags applied on top."""
    if isinstance(proto_cfg, str):
        proto_cfg = {"name": proto_cfg}
    proto = dict(proto_cfg or {})
    if args.protocol:
        proto["name"] = args.protocol
    if args.attacks:
        proto["attacks"] = [a.strip() for a in args.attacks.split(",") if a.strip()]
        if not proto["attacks"]:
            raise ConfigError("--attacks: give at least one attack name, e.g. --attacks pgd,sap.")
    if args.eps:
        proto["eps"] = parse_float_list(args.eps, "--eps")
    for key in ("norm", "eps_mode", "mode", "batch_size", "seed", "refine_steps"):
        if getattr(args, key) is not None:
            proto[key] = getattr(args, key)
    if args.minimal_eps:
        proto["minimal_eps"] = True
    if args.examples is not None:
        proto["n_examples"] = args.examples
    if args.no_large_eps_check:
        proto["large_eps_check"] = False
    if args.restarts is not None:
        proto["_restarts"] = args.restarts
    proto["_attack_options"] = args.attack_option or []
    return proto


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Merge YAML and flags into ``{checkpoint, dataset, protocol (ProtocolConfig | 'standard' dict), ...}``."""
    src = args.config or "evaluate config"
    cfg = check_section(read_yaml(args.config) if args.config else {}, CONFIG_SCHEMA, where=src)
    ds = check_section(cfg.get("dataset"), DATASET_SCHEMA, where=f"{src}: dataset")
    if ds.get("limit") is not None and ds["limit"] < 1:
        raise ConfigError(f"{src}: dataset.limit must be a positive integer, got {ds['limit']!r}.")
    ds["options"] = {**(ds.get("options") or {}), **parse_options(args.option)}
    for key, flag in (("name", "dataset"), ("root", "data_dir"), ("split", "split"), ("limit", "limit")):
        if getattr(args, flag) is not None:
            ds[key] = getattr(args, flag)
    proto = _protocol_settings(cfg.get("protocol", None), args)
    out = args.out or cfg.get("out")
    if not out:
        raise ConfigError("--out is required: the run folder for the state, the card and the report.")
    source = check_section(cfg.get("source"), SOURCE_SCHEMA, where=f"{src}: source")
    flags = {k: v for k, v in source_options(args).items() if v not in (None, False)}
    return {"checkpoint": args.checkpoint or cfg.get("checkpoint"), "dataset": ds, "protocol": proto, "out": out,
            "source": {**source, **flags},
            "device": args.device or cfg.get("device") or "cpu",
            "fast_path": getattr(args, "fast_path", None) or cfg.get("fast_path") or "auto",
            "precision": getattr(args, "precision", None) or cfg.get("precision") or "fp32",
            "report": bool(args.report if args.report is not None else cfg.get("report", False))}


def _named_protocol(name: str, proto: dict[str, Any], logistics: dict[str, Any], options: list[str],
                    restarts: int | None, meta: Any) -> Any:
    """A standard protocol (``"standard"``: the one for the data's units), logistics changed only."""
    from dataclasses import replace

    from medrobust.evaluation import STANDARD_PROTOCOLS, standard_protocol

    fixed = sorted(k for k in proto if k not in ("large_eps_check",))
    if fixed or options or restarts is not None:
        drop = fixed + (["--attack-option"] if options else []) + (["--restarts"] if restarts is not None else [])
        raise ConfigError(f"protocol {name!r} has fixed settings; drop {drop} "
                          "or use --protocol custom with --attacks and --eps.")
    if name == "standard":
        cfg = standard_protocol(meta.units, meta.fs, **logistics)
    elif name in STANDARD_PROTOCOLS:
        cfg = replace(STANDARD_PROTOCOLS[name], **logistics)
    else:
        raise ConfigError(f"unknown protocol {name!r}; use 'standard', 'custom' or one of "
                          f"{sorted(STANDARD_PROTOCOLS)}.")
    if proto.get("large_eps_check") is False:
        cfg = replace(cfg, large_eps_check=False)
    return cfg


def _apply_attack_options(specs: list[Any], options: list[str], restarts: int | None) -> list[Any]:
    """``--attack-option ATTACK.KEY=VALUE`` and ``--restarts`` applied to the ensemble's members."""
    from medrobust.evaluation import AttackSpec

    by_label = {s.label: i for i, s in enumerate(specs)}
    for opt in options:
        if "=" not in opt or "." not in opt.split("=", 1)[0]:
            raise ConfigError(f"--attack-option {opt!r}: expected ATTACK.KEY=VALUE, e.g. pgd.steps=50.")
        lhs, value = opt.split("=", 1)
        label, key = lhs.split(".", 1)
        if label not in by_label:
            raise ConfigError(f"--attack-option {opt!r}: no attack labelled {label!r} (attacks: {sorted(by_label)}).")
        s = specs[by_label[label]]
        extra = parse_options([f"{key}={value}"])
        specs[by_label[label]] = AttackSpec(s.name, {**s.kwargs, **extra}, label=s.label, restarts=s.restarts,
                                            optional=s.optional)
    if restarts is not None:
        specs = [AttackSpec(s.name, s.kwargs, label=s.label, restarts=restarts, optional=s.optional) for s in specs]
    return specs


def build_protocol(proto: dict[str, Any], meta: Any) -> Any:
    """A :class:`~medrobust.evaluation.ProtocolConfig` from the merged settings and the dataset's units."""
    from medrobust.evaluation import AttackSpec, ProtocolConfig

    proto = dict(proto)
    restarts = proto.pop("_restarts", None)
    options = proto.pop("_attack_options", [])
    name = proto.pop("name", None) or ("custom" if "attacks" in proto else "standard")
    logistics = {k: proto.pop(k) for k in ("batch_size", "minimal_eps", "refine_steps", "n_examples") if k in proto}
    if name != "custom":
        return _named_protocol(name, proto, logistics, options, restarts, meta)
    if "attacks" not in proto or "eps" not in proto:
        raise ConfigError("a custom protocol needs --attacks and --eps (or protocol.attacks and protocol.eps in YAML).")
    specs = _apply_attack_options([AttackSpec.parse(a) for a in proto.pop("attacks")], options, restarts)
    return ProtocolConfig.from_dict({**proto, **logistics, "attacks": specs, "name": "custom"})


def print_summary(card: dict[str, Any], out: Path) -> None:
    clean = card["clean"]["accuracy"]
    print(f"\nclean accuracy {clean['value']:.4f} ({clean['numerator']}/{clean['denominator']}); "
          f"{card['data']['class_resampled_note']}")
    degenerate = card.get("degenerate_model")
    if degenerate:
        print(f"{degenerate['headline']}: the robust accuracies below are not robustness "
              "(a constant predictor keeps its class's accuracy at every ε)")
    labels = [m["label"] for m in card["protocol"]["members"]]
    header = ["eps", "robust acc" + (" (degenerate model)" if degenerate else ""), "n robust", "attack success"] + [f"{lab} succ" for lab in labels]
    rows = []
    for r in card["results"]:
        rows.append([r["eps"], r["robust_accuracy"]["value"],
                     f"{r['robust_accuracy']['numerator']}/{r['robust_accuracy']['denominator']}",
                     r["attack_success_rate"]["value"] if r["attack_success_rate"]["value"] is not None else "n/a"]
                    + [f"{a['success_rate']['numerator']}/{a['success_rate']['denominator']}" for a in r["attacks"]])
    print(format_table(header, rows))
    auc = card["curves"]["ensemble"].get("auc")
    if auc is not None and not degenerate:
        print(f"robustness AUC (normalised by the largest ε): {auc:.4f}")
    if card["flags"]:
        print("reliability flags:")
        for f in card["flags"]:
            print(f"  [{f['code']}] {f['message']} (see {f['doc']})")
    else:
        print("reliability flags: none")
    print(f"result card: {out / 'card.json'}")


def black_box_protocol(model: Any, card: dict[str, Any], protocol: Any) -> Any:
    """For a black-box-only model: refuse white-box members in one line; drop the large-ε PGD check."""
    from dataclasses import replace

    from medrobust.benchmark import check_black_box_members, is_black_box_model

    if not is_black_box_model(model, card):
        return protocol
    check_black_box_members(model, card, [s.name for s in protocol.attacks if not s.optional])
    from medrobust.evaluation import is_black_box

    kept = tuple(s for s in protocol.attacks if is_black_box(s.name))
    print(f"black-box only model ({card.get('source', {}).get('why', '')}): the large-ε PGD check is skipped")
    return replace(protocol, attacks=kept, large_eps_check=False)


def run(args: argparse.Namespace) -> int:
    from medrobust.evaluation import evaluate, select_indices
    from medrobust.evaluation.protocol import stratified_selection

    from medrobust.evaluation.distributed import init_from_env

    cfg = resolve(args)
    rank, world = init_from_env()  # under torchrun: join the process group and evaluate this rank's shard
    out = ensure_writable_dir(cfg["out"])
    model, ds, mcard = load_model_and_data(cfg["dataset"], cfg["checkpoint"], source=cfg["source"])
    protocol = black_box_protocol(model, mcard, build_protocol(cfg["protocol"], ds.meta))
    limit = cfg["dataset"].get("limit")
    idx = select_indices(len(ds), limit, protocol.seed, labels=ds.y.numpy())
    selection = stratified_selection(limit, protocol.seed, len(ds))
    command = "medrobust " + " ".join(shlex.quote(a) for a in (args._argv if hasattr(args, "_argv") else sys.argv[1:]))
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"evaluating {cfg['checkpoint']} on {ds!r}" + (f" in {world} ranks" if world > 1 else "") + f"\nprotocol {protocol.name}: "
          f"{', '.join(s.label + ('*' if s.optional else '') for s in protocol.attacks)} at ε = {list(protocol.eps)} "
          f"({protocol.mode}{'; * = optional, run when registered' if any(s.optional for s in protocol.attacks) else ''})")
    card = evaluate(model, ds, protocol, out_dir=out, indices=idx, model_card=mcard, checkpoint=str(cfg["checkpoint"]),
                    selection=selection, device=cfg["device"], progress=not args.no_progress,
                    overwrite=args.overwrite, command=command, fast_path=cfg["fast_path"],
                    precision=cfg["precision"])
    if rank != 0:
        return 0  # rank 0 merged every shard into the card and writes the report
    print_summary(card, out)
    if cfg["report"]:
        from medrobust.report import write_report

        md, html = write_report(out, progress=not args.no_progress)
        print(f"report: {html} (and {md})")
    return 0
