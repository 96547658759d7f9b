"""``medrobust demo``: the whole idea, offline, in a few minutes on 2 CPU cores.

Synthetic AAMI beats -> train CNN1 -> the evaluation protocol on the held-out beats (FGSM, PGD and
SAP under L∞ at several ε, each on every beat, plus the worst case over the three and the
reliability checks; a resumable result card in ``OUT/evaluation/``) -> a printed table of clean and
robust accuracy, ``OUT/results.json`` and the report ``OUT/evaluation/report.html`` (and ``report.md``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from medrobust.cli._util import ensure_writable_dir, format_table, write_json
from medrobust.errors import ConfigError

DEFAULT_EPS = (0.01, 0.02, 0.05, 0.1)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="offline demo: synthetic beats, train, attack, table")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--n-per-class", type=int, default=300, help="training beats per class (default 300)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs of the demo CNN")
    p.add_argument("--eps", default=",".join(str(e) for e in DEFAULT_EPS),
                   help="comma-separated L∞ radii in input units (beats are scaled to [0, 1])")
    p.add_argument("--pgd-steps", type=int, default=20, help="PGD steps of the demo evaluation")
    p.add_argument("--seed", type=int, default=0, help="seed of data, training and attacks")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: the demo's small batches run fastest on one thread, "
                        "and several threads collapse on a shared machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def parse_eps(text: str) -> list[float]:
    try:
        eps = [float(e) for e in text.split(",") if e.strip()]
    except ValueError as exc:
        raise ConfigError(f"--eps {text!r}: expected comma-separated numbers, e.g. 0.01,0.05") from exc
    if not eps or any(e <= 0 for e in eps):
        raise ConfigError(f"--eps {text!r}: every ε must be > 0.")
    return eps


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def run(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: must be >= 1.")
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(previous)


def _run(args: argparse.Namespace) -> int:
    from medrobust.data import load_dataset
    from medrobust.models import build_model
    from medrobust.train import TrainConfig, Trainer, seed_everything

    eps_list = parse_eps(args.eps)
    out = ensure_writable_dir(args.out)
    t_start = time.perf_counter()
    train = load_dataset("synthetic", split="train", n_per_class=args.n_per_class, seed=args.seed)
    val = load_dataset("synthetic", split="val", n_per_class=max(20, args.n_per_class // 5), seed=args.seed)
    test = load_dataset("synthetic", split="test", n_per_class=max(20, args.n_per_class // 6), seed=args.seed)
    print(f"data: {len(train)} train / {len(val)} val / {len(test)} test synthetic beats "
          f"({train.input_shape[-1]} samples at {train.meta.fs:g} Hz, scaled to [0, 1])")
    seed_everything(args.seed)
    model = build_model("cnn1", in_channels=1, input_length=train.input_shape[-1], num_classes=train.num_classes)
    trainer = Trainer(model, TrainConfig(epochs=args.epochs, patience=None, seed=args.seed,
                                         progress=not args.no_progress), out_dir=out)
    fit = trainer.fit(train, val)
    model = trainer.model.eval()
    results: dict[str, Any] = {
        "dataset": test.meta.card(),
        "model": "cnn1",
        "checkpoint": str(out / "checkpoint"),
        "best_epoch": fit.best_epoch,
        "val_accuracy": fit.best_metrics["accuracy"],
        "clean_accuracy": accuracy(model, test.x, test.y),
        "n_test": len(test),
        "attacks": [],
    }
    write_json(out / "results.json", results)
    card, html = evaluate_and_report(model, test, out, eps_list, args)
    labels = [str(a) for a in card["curves"]["attacks"]]
    rows = demo_rows(card, labels, eps_list)
    for eps, attacks in zip(eps_list, rows):
        for label, entry in attacks.items():
            results["attacks"].append({"attack": label, "eps": eps, **entry})
    results["worst_case_robust_accuracy"] = card["curves"]["ensemble"]["accuracy"][1:]
    results["flags"] = [str(f["code"]) for f in card.get("flags", [])]
    results["seconds_total"] = time.perf_counter() - t_start
    write_json(out / "results.json", results)
    steps = {"pgd": f"PGD-{args.pgd_steps}", "sap": f"SAP-{args.pgd_steps}+{args.pgd_steps}", "fgsm": "FGSM"}
    table = [[eps, *(attacks[lb]["robust_accuracy"] for lb in labels), worst]
             for eps, attacks, worst in zip(eps_list, rows, results["worst_case_robust_accuracy"])]
    print(f"\nclean accuracy on {len(test)} held-out beats: {results['clean_accuracy']:.4f}")
    print(format_table(["eps (L∞)", *(f"{steps.get(lb, lb)} robust acc" for lb in labels), "worst case"], table))
    print(f"reliability flags: {', '.join(results['flags']) or 'none'}")
    print(f"\noutput: {out}/ (checkpoint/, history.jsonl, results.json, evaluation/card.json); "
          f"{results['seconds_total']:.0f} s in all")
    print(f"report: {html}")
    return 0


def evaluate_and_report(model: torch.nn.Module, test: Any, out: Path, eps_list: list[float],
                        args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Run the evaluation protocol on the demo's held-out beats and write its report.

    Returns the result card and the path of the HTML report.
    """
    from medrobust.evaluation import AttackSpec, ProtocolConfig, evaluate
    from medrobust.models.checkpoint import read_card
    from medrobust.report import write_report

    steps = args.pgd_steps
    protocol = ProtocolConfig(
        attacks=(AttackSpec("fgsm"),
                 AttackSpec("pgd", {"steps": steps, "rel_step_size": 0.25, "random_start": True}),
                 AttackSpec("sap", {"steps": steps, "smooth_steps": steps, "rel_step_size": 0.25})),
        eps=tuple(eps_list), norm="linf", bounds=(0.0, 1.0), mode="individual", seed=args.seed,
        large_eps_steps=max(steps, 10), n_examples=3, name="demo")
    run_dir = out / "evaluation"
    print(f"\nevaluation protocol ({', '.join(a.label for a in protocol.attacks)}, reliability checks) -> {run_dir}/")
    card = evaluate(model, test, protocol, out_dir=run_dir, model_card=read_card(out / "checkpoint"),
             checkpoint=str(out / "checkpoint"), progress=not args.no_progress, overwrite=True,
             command="medrobust demo (evaluation step)")
    _, html = write_report(run_dir, progress=not args.no_progress, max_ecg_examples=3)
    return card, html


def demo_rows(card: dict[str, Any], labels: list[str], eps_list: list[float]) -> list[dict[str, dict[str, Any]]]:
    """Per ε, every attack's standalone robust accuracy (and largest L∞ norm found) from the result card."""
    n = int(card["clean"]["accuracy"]["denominator"])
    rows: list[dict[str, dict[str, Any]]] = []
    for k, eps in enumerate(eps_list):
        per_eps = {a["label"]: a for a in card["results"][k]["attacks"]}
        row: dict[str, dict[str, Any]] = {}
        for lb in labels:
            acc = float(card["curves"]["attacks"][lb]["accuracy"][k + 1])
            linf = per_eps.get(lb, {}).get("perturbation", {}).get("linf", {}).get("max", 0.0)
            row[lb] = {"robust_accuracy": acc, "n_correct": int(round(acc * n)), "max_linf": float(linf or 0.0)}
        rows.append(row)
    return rows
