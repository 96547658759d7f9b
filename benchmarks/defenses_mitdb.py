"""Defences on MIT-BIH beats: CNN1 trained with CE, Jacobian, NSR (Method 2), PGD-AT and TRADES, then attacked.

Usage (one torch thread, through the shared benchmark lock)::

    flock /tmp/medrobust-bench.lock .venv/bin/python benchmarks/defenses_mitdb.py [--data-dir ../shared/data]

Results are written to ``benchmarks/results/defenses_mitdb.json`` after every step (a killed run keeps what
it measured).

Data
    MIT-BIH, Kachuee beats (187 samples at 125 Hz in [0, 1]), intra-patient split (seed 0), the full
    training split (70k beats). Every recipe trains with **Ma & Liang's class balancing**
    (``TrainConfig(class_balance="oversample")``: each class tiled to the majority count, reshuffled every
    epoch). Because CPU time is scarce an "epoch" is capped at ``--batches-per-epoch`` batches of 128 drawn
    from that balanced order (so ``epochs x batches`` balanced batches in all, each epoch a fresh draw),
    which is far less training than the papers' 50+ full epochs; the result file says so. Model selection:
    best **balanced** accuracy on a class-capped validation subsample (at most ``--val-per-class`` beats
    per class). Optimiser Adam, lr ``--lr``, batch 128, CNN1 with Ma & Liang's kernel normalisation
    (``weight_norm=True``) for every recipe.

Defences (``medrobust.defenses``)
    ``ce``; ``jacobian`` (Ma & Liang MIT-BIH: L1, β 0.7, exact); ``nsr`` (Method 2, β 0.3, e 0.01, margin 1);
    ``pgd_at`` (ε 0.1, mix 0.5, ``--adv-steps`` sign steps of 1.25·ε/k, random start); ``trades`` (β
    ``--trades-beta``, ε 0.1, same steps). A model whose clean balanced accuracy on the full test split is
    below ``--min-balanced-acc`` is reported as collapsed and not attacked.

Evaluation
    Clean accuracy / balanced accuracy / macro-F1 on the **full** test split. Attacks run on a fixed
    class-capped subset of test beats (at most ``--test-per-class`` per class, seed 2); per-class robust
    recall is measured there and the robust accuracy is the **prevalence-weighted** estimate
    ``Σ_c π_c · recall_c`` (``π`` = full-test class frequencies; the standard stratified estimator), the
    robust balanced accuracy is ``mean_c recall_c``. Attacks: 100-step L∞ PGD (step 0.01, uniform random
    start, clamp to [0, 1], per-sample early stop) with Ma & Liang's Adamax-driven update and with plain
    sign steps; SAP (Han et al.; ``--sap-steps`` PGD + 2× smoothed steps, step 0.01); SPSA if
    ``medrobust.attacks`` registers ``"spsa"`` (skipped with a note otherwise). ε ∈ {0.01, 0.03, 0.05, 0.1}
    swept upwards; a beat broken at a smaller ε counts as broken at every larger ε (the example found is
    admissible there), so only survivors are attacked again. "Worst case" is the per-beat intersection of
    survivors over all attacks. Curve AUC: :func:`medrobust.evaluation.curve_auc` (trapezoid from ε = 0, the
    clean accuracy of the subset estimate, to 0.1, divided by 0.1; Ma & Liang).

Speed
    CPU seconds (``time.thread_time`` of the single compute thread, immune to other jobs on the shared
    machine; wall-clock ratios are recorded too) per epoch of every recipe divided by the CE epoch (same
    batches per epoch), and an interleaved per-batch timing of every defence from the trained CE weights (PGD-AT / TRADES with k = 5 and 10; the
    exact L1 Jacobian as implemented — one backward per class — next to two batched formulations of the
    same quantity, ``torch.autograd.grad(..., is_grads_batched=True)`` and a K-fold replicated batch, and
    the 1-projection Frobenius estimate). Goals: NSR / Jacobian <= 3x; PGD-AT with k steps <= k + 1.3.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, ResultFile  # noqa: E402

from medrobust.attacks import PGD, SAP, available_attacks, get_attack  # noqa: E402
from medrobust.data import load_dataset  # noqa: E402
from medrobust.data.balance import oversample_indices  # noqa: E402
from medrobust.defenses import get_defense  # noqa: E402
from medrobust.evaluation import curve_auc  # noqa: E402
from medrobust.evaluation.metrics import classification_metrics  # noqa: E402
from medrobust.models import build_model  # noqa: E402
from medrobust.train import TrainConfig, seed_everything  # noqa: E402

EPS = (0.01, 0.03, 0.05, 0.1)
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "sensitivity")


def capped_subset(ds: Any, per_class: int, seed: int) -> Any:
    """At most ``per_class`` items of every class (random, seeded), original order kept."""
    rng = np.random.default_rng(seed)
    y = ds.y.numpy()
    keep = [rng.permutation(np.nonzero(y == c)[0])[:per_class] for c in np.unique(y)]
    return ds.subset(np.sort(np.concatenate(keep)))


def defences(adv_steps: int, trades_beta: float) -> dict[str, dict[str, Any]]:
    step = 1.25 * 0.1 / adv_steps
    return {  # the seeds' claim (NSR, adversarial training vs CE) first, so a cut-short run still answers it
        "ce": {},
        "nsr": {"recipe": "mitdb"},
        "pgd_at": {"eps": 0.1, "steps": adv_steps, "step_size": step, "adv_ratio": 0.5, "bounds": (0.0, 1.0)},
        "trades": {"beta": trades_beta, "eps": 0.1, "steps": adv_steps, "step_size": step, "bounds": (0.0, 1.0)},
        "jacobian": {"recipe": "mitdb"},
    }


class Estimator:
    """Per-class recall on the attacked subset -> prevalence-weighted accuracy and balanced accuracy."""

    def __init__(self, y: torch.Tensor, prior: np.ndarray) -> None:
        self.y = y
        self.classes = [c for c in range(len(prior)) if bool((y == c).any())]
        p = np.array([prior[c] for c in self.classes], dtype=np.float64)
        self.prior = p / p.sum()

    def recalls(self, alive: torch.Tensor) -> list[float]:
        return [float(alive[self.y == c].double().mean()) for c in self.classes]

    def __call__(self, alive: torch.Tensor) -> dict[str, Any]:
        r = self.recalls(alive)
        return {"accuracy": float(np.dot(self.prior, r)), "balanced_accuracy": float(np.mean(r)),
                "per_class_recall": r, "subset_accuracy": float(alive.double().mean())}


def sweep(make: Callable[[float], Any], model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, est: Estimator,
          name: str) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """Ascending-ε sweep of one attack: survivors of ε_i are attacked at ε_{i+1}."""
    with torch.no_grad():
        alive = model(x).argmax(1) == y
    clean = est(alive)
    rows, masks, t0, grads, queries = [], [], time.perf_counter(), 0, 0
    for e in EPS:
        idx = alive.nonzero().squeeze(1)
        if idx.numel():
            res = make(e)(x[idx], y[idx])
            alive[idx[res.adv_pred != y[idx]]] = False
            grads += int(res.grad_evals)
            queries += int(getattr(res, "queries", 0) or 0)
        masks.append(alive.clone())
        rows.append({"eps": e, **est(alive)})
    out = {"attack": name, "clean": clean, "curve": rows,
           "auc": curve_auc(EPS, [r["accuracy"] for r in rows], clean_accuracy=clean["accuracy"]),
           "auc_balanced": curve_auc(EPS, [r["balanced_accuracy"] for r in rows],
                                     clean_accuracy=clean["balanced_accuracy"]),
           "grad_evals": grads, "queries": queries, "seconds": time.perf_counter() - t0}
    return out, masks


# ---------------------------------------------------------------------------------------- timing
def _jac_l1_batched(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact L1 Jacobian loss (β 0.7) with all K backward passes in one ``is_grads_batched`` call."""
    x = x.detach().requires_grad_(True)
    z = model(x)
    k = z.shape[1]
    eye = torch.eye(k, dtype=z.dtype).unsqueeze(1).expand(k, *z.shape)
    (g,) = torch.autograd.grad(z, x, grad_outputs=eye, create_graph=True, is_grads_batched=True)
    return F.cross_entropy(z, y) + 0.7 * g.abs().sum() / (x.shape[0] * x[0].numel())


def _jac_l1_replicated(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The same loss from one forward/backward of the batch replicated K times (block k selects class k)."""
    n = x.shape[0]
    k = 5
    xr = x.detach().repeat(k, *[1] * (x.ndim - 1)).requires_grad_(True)
    z = model(xr)
    sel = z.view(k, n, k).diagonal(dim1=0, dim2=2)
    (g,) = torch.autograd.grad(sel.sum(), xr, create_graph=True)
    return F.cross_entropy(z[:n], y) + 0.7 * g.abs().sum() / (n * x[0].numel())


def time_batches(name: str, hp: dict[str, Any], xs: list[torch.Tensor], ys: list[torch.Tensor],
                 state: dict[str, torch.Tensor]) -> tuple[list[float], list[float]]:
    """CPU and wall seconds per training batch (loss, backward, step) from the trained CE weights.

    CPU time (``time.thread_time`` of the one compute thread) is the primary measure: other jobs on a
    shared machine delay the wall clock but do not add CPU seconds to this thread.
    """
    seed_everything(0)
    model = build_model("cnn1", weight_norm=True)
    model.load_state_dict(state)
    custom = {"jacobian_l1_is_grads_batched": _jac_l1_batched, "jacobian_l1_replicated": _jac_l1_replicated}
    base = name.split("_k")[0].replace("_projection", "")
    trainer = get_defense("ce" if name in custom else base, model, TrainConfig(epochs=2, progress=False), **hp)
    trainer.model.train()
    cpu, wall = [], []
    for x, y in zip(xs, ys):
        c0, t0 = time.thread_time(), time.perf_counter()
        normalize = getattr(model, "normalize_kernels", None)
        if normalize is not None:
            normalize()
        loss = custom[name](model, x, y) if name in custom else trainer.compute_loss(x, y)[0]
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - t0)
    return cpu, wall


def timing(train: Any, state: dict[str, torch.Tensor], rounds: int, batches: int, trades_beta: float) -> dict[str, Any]:
    order = oversample_indices(train.y.numpy(), seed=123)
    order = order[np.random.default_rng(0).permutation(len(order))][: 128 * batches]
    xs = [train.x[torch.from_numpy(b)] for b in np.array_split(order, batches)]
    ys = [train.y[torch.from_numpy(b)] for b in np.array_split(order, batches)]
    cfg: dict[str, dict[str, Any]] = {
        "ce": {}, "nsr": {"recipe": "mitdb"}, "jacobian": {"recipe": "mitdb"},
        "jacobian_l1_is_grads_batched": {}, "jacobian_l1_replicated": {},
        "jacobian_projection": {"recipe": "icmla2020", "method": "projection", "projections": 1},
    }
    for k in (5, 10):
        for n in ("pgd_at", "trades"):
            cfg[f"{n}_k{k}"] = dict(defences(k, trades_beta)[n])
    cpu: dict[str, list[float]] = {n: [] for n in cfg}
    wall: dict[str, list[float]] = {n: [] for n in cfg}
    for _ in range(rounds):
        for n, hp in cfg.items():
            c, w = time_batches(n, hp, xs, ys, state)
            cpu[n] += c
            wall[n] += w
    med = {n: statistics.median(v) for n, v in cpu.items()}
    med_wall = {n: statistics.median(v) for n, v in wall.items()}
    ratio = {n: med[n] / med["ce"] for n in med}
    return {
        "cpu_seconds_per_batch_median": med, "ratio_to_ce": ratio,
        "wall_seconds_per_batch_median": med_wall,
        "wall_ratio_to_ce": {n: med_wall[n] / med_wall["ce"] for n in med_wall},
        "measure": "time.thread_time of the single compute thread (torch threads = 1); wall ratios are affected "
                   "by other jobs on the shared 2-core machine",
        "goals": {"nsr_le_3x": ratio["nsr"] <= 3.0, "jacobian_l1_exact_le_3x": ratio["jacobian"] <= 3.0,
                  "jacobian_projection_le_3x": ratio["jacobian_projection"] <= 3.0,
                  "pgd_at_k5_le_6.3x": ratio["pgd_at_k5"] <= 6.3, "pgd_at_k10_le_11.3x": ratio["pgd_at_k10"] <= 11.3},
        "batches": f"{rounds} rounds x {batches} balanced batches of 128, recipes interleaved, from trained CE weights",
        "notes": "jacobian = the implementation (exact L1, one double-backprop pass per class); "
                 "jacobian_l1_is_grads_batched / jacobian_l1_replicated = the same loss computed with one batched "
                 "backward (vmap) or one K-fold replicated batch (equal values, measured here for speed only).",
    }


def spsa_factory(model: torch.nn.Module, args: argparse.Namespace) -> Callable[[float], Any] | None:
    """An SPSA attack builder when ``medrobust.attacks`` registers ``"spsa"`` (keyword names looked up)."""
    if "spsa" not in available_attacks():
        return None
    from medrobust.attacks import attack_class

    params = inspect.signature(attack_class("spsa").__init__).parameters
    wanted = {"steps": args.spsa_steps, "nb_iter": args.spsa_steps, "step_size": 0.01, "lr": 0.01,
              "samples": args.spsa_samples, "nb_sample": args.spsa_samples, "n_samples": args.spsa_samples,
              "delta": 0.01, "early_stop": True, "bounds": (0.0, 1.0)}
    kw = {k: v for k, v in wanted.items() if k in params}

    def make(e: float) -> Any:
        return get_attack("spsa", model, eps=e, generator=torch.Generator().manual_seed(0), **kw)

    make.kwargs = kw  # type: ignore[attr-defined]
    return make


# ---------------------------------------------------------------------------------------- table
def render_table(d: dict[str, Any]) -> str:
    """Markdown tables (docs/defenses.md) from a result file of this script."""
    out = []
    models = d["models"]
    ratio = d.get("epoch_time_ratio_to_ce", {})
    eps_hdr = " | ".join(f"ε {e}" for e in EPS)
    out.append(f"| recipe | clean acc | clean bal. acc | macro-F1 | worst-case robust acc (bal. acc): {eps_hdr} | AUC (bal.) "
               "| epoch time ÷ CE |")
    out.append("|---" * (6 + len(EPS)) + "|")
    for n, m in models.items():
        c = m["clean_full_test"]
        if m.get("collapsed") or "worst_case" not in m:
            cells = " | ".join("not attacked" for _ in EPS)
            auc = "—"
        else:
            cells = " | ".join(f"{r['accuracy']:.3f} ({r['balanced_accuracy']:.3f})" for r in m["worst_case"]["curve"])
            auc = f"{m['worst_case']['auc']:.3f} ({m['worst_case']['auc_balanced']:.3f})"
        out.append(f"| `{n}` | {c['accuracy']:.3f} | {c['balanced_accuracy']:.3f} | {c['macro_f1']:.3f} | {cells} | {auc} "
                   f"| {ratio.get(n, float('nan')):.2f} |")
    out.append("")
    names = [a for a in ("pgd_adamax", "pgd_sign", "sap", "spsa") if any(a in m.get("attacks", {}) for m in models.values())]
    out.append("| recipe | attack | " + eps_hdr + " | AUC | AUC (bal.) |")
    out.append("|---" * (4 + len(EPS)) + "|")
    for n, m in models.items():
        for a in names:
            r = m.get("attacks", {}).get(a)
            if r is None:
                continue
            cells = " | ".join(f"{c['accuracy']:.3f} ({c['balanced_accuracy']:.3f})" for c in r["curve"])
            out.append(f"| `{n}` | {a} | {cells} | {r['auc']:.3f} | {r['auc_balanced']:.3f} |")
    t = d.get("timing", {}).get("ratio_to_ce")
    if t:
        out.append("")
        out.append("| per-batch time ÷ CE | " + " | ".join(f"`{k}`" for k in t) + " |")
        out.append("|---" * (1 + len(t)) + "|")
        out.append("| ratio | " + " | ".join(f"{v:.2f}" for v in t.values()) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DATA))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batches-per-epoch", type=int, default=50)
    p.add_argument("--val-per-class", type=int, default=150)
    p.add_argument("--test-per-class", type=int, default=20)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--adv-steps", type=int, default=5, help="PGD steps of PGD-AT / TRADES during training")
    p.add_argument("--trades-beta", type=float, default=6.0)
    p.add_argument("--min-balanced-acc", type=float, default=0.5, help="below it a model counts as collapsed")
    p.add_argument("--eval-steps", type=int, default=100)
    p.add_argument("--sap-steps", type=int, default=20)
    p.add_argument("--spsa-steps", type=int, default=30)
    p.add_argument("--spsa-samples", type=int, default=16)
    p.add_argument("--spsa-per-class", type=int, default=3, help="0: skip SPSA")
    p.add_argument("--timing-rounds", type=int, default=2)
    p.add_argument("--timing-batches", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default="", help="comma-separated subset of defences (ce always runs)")
    p.add_argument("--no-attack", action="store_true", help="train and measure clean metrics only (pilot runs)")
    p.add_argument("--result-name", default="defenses_mitdb.json")
    p.add_argument("--render", metavar="JSON", help="print the Markdown tables of a result file and exit")
    args = p.parse_args()
    if args.render:
        import json

        print(render_table(json.loads(Path(args.render).read_text())))
        return
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    res = ResultFile(args.result_name, "python " + " ".join(sys.argv))
    cache = tempfile.mkdtemp(prefix="medrobust-bench-cache-")
    kw = dict(root=args.data_dir, scheme="intra", seed=0, cache_dir=cache)
    full = {s: load_dataset("mitdb", split=s, **kw) for s in ("train", "val", "test")}
    train = full["train"]
    val = capped_subset(full["val"], args.val_per_class, 1)
    test = capped_subset(full["test"], args.test_per_class, 2)
    classes = list(train.meta.classes)
    k = len(classes)
    prior = full["test"].class_counts() / len(full["test"])
    est = Estimator(test.y, prior)
    setup = {
        "dataset": "mitdb kachuee beats, intra-patient split (seed 0), units normalized [0, 1]",
        "sizes": {"train_full": len(train), "val_capped": len(val), "test_attacked": len(test),
                  "test_full": len(full["test"])},
        "class_counts": {s: dict(zip(classes, d.class_counts().tolist())) for s, d in
                         (("train", train), ("val_capped", val), ("test_attacked", test), ("test_full", full["test"]))},
        "train": {"epochs": args.epochs, "batches_per_epoch": args.batches_per_epoch, "batch_size": 128,
                  "balanced_beats_seen": args.epochs * args.batches_per_epoch * 128,
                  "class_balance": "oversample (Ma & Liang tiling of the full training split, reshuffled per epoch)",
                  "optimizer": "adam", "lr": args.lr,
                  "model": "cnn1(weight_norm=True): Ma & Liang's kernel normalisation, for every recipe",
                  "selection": "best validation balanced accuracy (class-capped validation subsample)",
                  "reduced": (f"CPU budget: {args.epochs} x {args.batches_per_epoch} balanced batches of 128 per "
                              f"recipe ({args.epochs * args.batches_per_epoch * 128} beats), instead of the papers' "
                              "50+ full epochs")},
        "attacks": {"pgd": {"norm": "linf", "steps": args.eval_steps, "step_size": 0.01, "random_start": True,
                            "early_stop": True, "bounds": [0, 1], "updates": ["adamax (Ma & Liang)", "sign"]},
                    "sap": {"steps": args.sap_steps, "smooth_steps": 2 * args.sap_steps, "step_size": 0.01,
                            "early_stop": True, "bounds": [0, 1]},
                    "eps": list(EPS),
                    "eps_sweep": "ascending; a beat broken at a smaller eps counts as broken at larger eps",
                    "robust_accuracy": "prevalence-weighted per-class recall on the class-capped attacked subset "
                                       "(weights = full-test class frequencies); balanced = mean per-class recall",
                    "auc": "medrobust.evaluation.curve_auc from eps 0 (clean) to 0.1, normalised by 0.1"},
        "collapse_threshold_balanced_accuracy": args.min_balanced_acc,
        "threads": args.threads,
    }
    res.update(setup=setup, models={}, timing={})
    defs = defences(args.adv_steps, args.trades_beta)
    if args.only:
        defs = {n: v for n, v in defs.items() if n in args.only.split(",") or n == "ce"}
    print(f"train {len(train)} (balanced batches), val {len(val)}, attacked test {len(test)} "
          f"(full test {len(full['test'])})", flush=True)

    models: dict[str, Any] = {}
    spsa_note = None
    for name, hp in defs.items():
        seed_everything(0)
        model = build_model("cnn1", weight_norm=True)
        cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=args.lr, optimizer="adam", patience=None,
                          monitor="balanced_accuracy", class_balance="oversample",
                          max_batches_per_epoch=args.batches_per_epoch, progress=False, seed=0)
        trainer = get_defense(name, model, cfg, **hp)
        epoch_cpu: list[float] = []
        plain_epoch = trainer.train_epoch

        def timed_epoch(*a: Any, _f: Any = plain_epoch, _acc: list[float] = epoch_cpu, **kw_: Any) -> Any:
            c0 = time.thread_time()
            out = _f(*a, **kw_)
            _acc.append(time.thread_time() - c0)
            return out

        trainer.train_epoch = timed_epoch  # type: ignore[method-assign]
        result = trainer.fit(train, val)
        model = trainer.model.eval()
        epoch_s = [h["seconds"] for h in result.history]
        with torch.no_grad():
            pred_full = torch.cat([model(c).argmax(1) for c in full["test"].x.split(4096)])
        m_full = classification_metrics(full["test"].y, pred_full, k, classes)
        collapsed = m_full["balanced_accuracy"] < args.min_balanced_acc
        entry: dict[str, Any] = {
            "hyperparameters": trainer.hyperparameters(),
            "history": [{kk: v for kk, v in h.items() if kk != "val_sensitivity"} for h in result.history],
            "best_epoch": result.best_epoch, "seconds_per_epoch": epoch_s, "cpu_seconds_per_epoch": epoch_cpu,
            "clean_full_test": {kk: m_full[kk] for kk in METRICS},
            "collapsed": collapsed, "attacks": {},
        }
        models[name] = entry
        res.update(models=models)
        print(f"{name}: {len(epoch_s)} epochs ({np.mean(epoch_s):.1f} s/epoch, best {result.best_epoch}), full-test "
              f"acc {m_full['accuracy']:.4f} bal {m_full['balanced_accuracy']:.4f} sens "
              f"{ {c: round(s, 3) for c, s in m_full['sensitivity'].items()} }", flush=True)

        if name == "ce" and args.timing_rounds > 0:
            t = timing(train, copy.deepcopy(model.state_dict()), args.timing_rounds, args.timing_batches,
                       args.trades_beta)
            res.update(timing=t)
            print("timing (x CE per batch): " + ", ".join(f"{n} {r:.2f}" for n, r in t["ratio_to_ce"].items()),
                  flush=True)
        if collapsed:
            print(f"  {name}: COLLAPSED (balanced accuracy {m_full['balanced_accuracy']:.3f}); not attacked", flush=True)
            continue
        if args.no_attack:
            continue

        # ---- attacks -----------------------------------------------------------------------------
        g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        makers: dict[str, Callable[[float], Any]] = {
            f"pgd_{u}": (lambda u: lambda e: PGD(model, eps=e, steps=args.eval_steps, step_size=0.01,
                                                   random_start=True, early_stop=True, update=u, bounds=(0.0, 1.0),
                                                   generator=g()))(u)
            for u in ("adamax", "sign")
        }
        makers["sap"] = lambda e: SAP(model, eps=e, steps=args.sap_steps, step_size=0.01, early_stop=True,
                                      bounds=(0.0, 1.0))
        all_masks: list[list[torch.Tensor]] = []
        for an, make in makers.items():
            out, masks = sweep(make, model, test.x, test.y, est, an)
            entry["attacks"][an] = out
            all_masks.append(masks)
            res.update(models=models)
            print(f"  {an}: " + ", ".join(f"eps {r['eps']}: {r['accuracy']:.3f}/{r['balanced_accuracy']:.3f}"
                                          for r in out["curve"]) + f"  AUC {out['auc']:.3f} ({out['seconds']:.0f} s)",
                  flush=True)
        worst = [est(torch.stack([m[i] for m in all_masks]).all(0)) for i in range(len(EPS))]
        clean = entry["attacks"]["pgd_sign"]["clean"]
        entry["worst_case"] = {
            "attacks": list(makers), "curve": [{"eps": e, **w} for e, w in zip(EPS, worst)],
            "auc": curve_auc(EPS, [w["accuracy"] for w in worst], clean_accuracy=clean["accuracy"]),
            "auc_balanced": curve_auc(EPS, [w["balanced_accuracy"] for w in worst],
                                      clean_accuracy=clean["balanced_accuracy"]),
        }
        spsa = spsa_factory(model, args) if args.spsa_per_class > 0 else None
        if args.spsa_per_class <= 0:
            spsa_note = "skipped (--spsa-per-class 0): too slow for this run's CPU budget"
        elif spsa is None:
            spsa_note = "skipped: medrobust.attacks registers no 'spsa' attack at the time of this run"
        else:
            sub = capped_subset(test, args.spsa_per_class, 3)
            try:
                out, _ = sweep(spsa, model, sub.x, sub.y, Estimator(sub.y, prior), "spsa")
            except Exception as err:  # a failing third-party-in-progress attack must not lose the run
                entry["attacks"]["spsa"] = {"error": f"{type(err).__name__}: {err}"}
            else:
                out["settings"] = {**spsa.kwargs, "per_class": args.spsa_per_class}  # type: ignore[attr-defined]
                entry["attacks"]["spsa"] = out
                print(f"  spsa: " + ", ".join(f"eps {r['eps']}: {r['accuracy']:.3f}/{r['balanced_accuracy']:.3f}"
                                              for r in out["curve"]) + f" ({out['seconds']:.0f} s)", flush=True)
            spsa_note = (f"run on a {len(sub)}-beat class-capped subset (budget-limited: {args.spsa_steps} steps, "
                         f"{args.spsa_samples} probes; the seed paper uses 100 x 2048); not part of the worst case")
        res.update(models=models, spsa=spsa_note)

    ce_epoch = float(np.mean(models["ce"]["cpu_seconds_per_epoch"]))
    ce_wall = float(np.mean(models["ce"]["seconds_per_epoch"]))
    res.update(epoch_time_ratio_to_ce={n: float(np.mean(m["cpu_seconds_per_epoch"]) / ce_epoch) for n, m in models.items()},
               epoch_wall_time_ratio_to_ce={n: float(np.mean(m["seconds_per_epoch"]) / ce_wall) for n, m in models.items()},
               complete=True, total_seconds=time.perf_counter() - start)
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
