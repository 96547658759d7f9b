"""Speed and strength of medrobust's black-box attacks on MIT-BIH CNN1: SPSA vs torchattacks, UAP vs ART.

Needs the benchmark venv (torchattacks and ART are installed only there, never in .venv)::

    flock /tmp/medrobust-bench.lock .venv-bench/bin/python benchmarks/blackbox_speed.py \
        [--checkpoint benchmarks/checkpoints/mitdb_cnn1_intra] [--data-dir ../shared/data]

One process, one torch thread, the same model and the same seeded random test beats of the MIT-BIH
intra-patient test split (``load_dataset("mitdb", split="test")``: Kachuee beats in [0, 1], 125 Hz):

(i) SPSA, L∞, ε = ``--eps`` (0.05 twice, then 0.01), ``--steps`` iterations (20), ``--nb-samples``
    probes (64), δ = 0.01, lr = 0.01, bounds [0, 1]:

    * **raw forward limit**: our SPSA's wall / CPU time divided by the time of the same number of plain
      batched forwards (same chunk size, no attack logic): the attack's overhead over pure querying.
      Forwards per second of both are reported.
    * **torchattacks' SPSA** (advertorch's code) with the same ε, δ, lr, steps and probes, all probes of a
      sample in one chunk (``max_batch_size = nb_samples``, its fastest setting). Our SPSA runs in the
      same algorithmic mode (Adam on the raw estimate, no random start: ``update="adam", sign=False,
      random_start=False``) plus our defaults of per-sample early stop and independent probes per
      sample; the forward chunk size is the same (``nb_samples · batch`` rows per forward). Goal: ≥ 3×
      faster with equal or lower robust accuracy. The seed paper's mode (Adamax on the sign,
      random start) is reported as a third row.

(ii) UAP vs the Adversarial Robustness Toolbox's UniversalPerturbation: ``uap_vs_art(model, x_train,
     x_test, y_test, seed=0)`` from ``benchmarks/_uap_vs_art.py`` (written with the universal
     perturbations); recorded as ``"not run: module missing"`` when that module is absent.

Writes ``benchmarks/results/blackbox_speed.json`` (updated as the run goes) and prints the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import DATA, REPO, ResultFile  # noqa: E402

from medrobust.attacks import SPSA  # noqa: E402
from medrobust.data import load_dataset  # noqa: E402
from medrobust.models import load_checkpoint  # noqa: E402

DEFAULT_CKPT = REPO / "benchmarks" / "checkpoints" / "mitdb_cnn1_intra"


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall-clock and process-CPU seconds of ``fn()`` and its value."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


class Counting(torch.nn.Module):
    """Counts the rows forwarded through ``model`` (for the torchattacks run)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.model(x)


def raw_forwards(model: torch.nn.Module, rows: int, chunk: int, like: torch.Tensor) -> tuple[float, float]:
    """Wall and CPU seconds of ``rows`` plain forwards in chunks of ``chunk`` rows."""
    xb = like[torch.arange(chunk) % len(like)].clone() + 0.001

    def run() -> None:
        with torch.no_grad():
            done = 0
            while done < rows:
                k = min(chunk, rows - done)
                model(xb[:k])
                done += k

    w, c, _ = timed(run)
    return w, c


def robust_acc(model: torch.nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).double().mean())


def part_spsa(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace,
              eps: float) -> dict[str, Any]:
    """One comparison at radius ``eps`` (ours, raw forwards, seed mode, torchattacks, in this order)."""
    out: dict[str, Any] = {"eps": eps, "steps": args.steps, "nb_samples": args.nb_samples, "delta": 0.01,
                           "lr": 0.01, "n": len(x), "norm": "linf", "bounds": [0, 1]}
    chunk_ta = args.nb_samples * len(x)
    raw_forwards(model, 3 * chunk_ta, chunk_ta, x)  # warm-up (allocator, kernels) before any timing
    common = dict(eps=eps, steps=args.steps, nb_samples=args.nb_samples, delta=0.01, lr=0.01, bounds=(0, 1))
    ours = SPSA(model, update="adam", sign=False, random_start=False, max_batch_size=chunk_ta,
                generator=torch.Generator().manual_seed(0), **common)
    w, c, r = timed(lambda: ours(x, y))
    out["ours_adam"] = {"wall_s": w, "cpu_s": c, "queries": r.queries, "robust_accuracy": r.robust_accuracy,
                        "robust_accuracy_check": robust_acc(model, r.x_adv, y), "forwards_per_s_wall": r.queries / w,
                        "max_linf": float(r.norms.max()), "config": r.config}
    print(f"  ours (adam, raw estimate, early stop): {w:.1f} s wall, {c:.1f} s CPU, {r.queries} queries, "
          f"robust accuracy {r.robust_accuracy:.4f}")
    rw, rc = raw_forwards(model, r.queries, chunk_ta, x)
    out["raw_forward_limit"] = {"rows": r.queries, "chunk": chunk_ta, "wall_s": rw, "cpu_s": rc,
                                "forwards_per_s_wall": r.queries / rw,
                                "ratio_ours_over_raw_wall": w / rw, "ratio_ours_over_raw_cpu": c / rc}
    print(f"  raw forward limit: {r.queries} forwards in {rw:.1f} s wall ({r.queries / rw:.0f}/s) vs ours "
          f"{r.queries / w:.0f}/s: time ratio ours/raw = {w / rw:.3f} wall, {c / rc:.3f} CPU")

    seed = SPSA(model, generator=torch.Generator().manual_seed(0), max_batch_size=chunk_ta, **common)
    w2, c2, r2 = timed(lambda: seed(x, y))
    out["ours_seed_mode"] = {"wall_s": w2, "cpu_s": c2, "queries": r2.queries, "robust_accuracy": r2.robust_accuracy,
                             "forwards_per_s_wall": r2.queries / w2, "config": r2.config}
    print(f"  ours (seed paper: adamax on sign, random start): {w2:.1f} s wall, {r2.queries} queries, "
          f"robust accuracy {r2.robust_accuracy:.4f}")

    try:
        import torchattacks
    except ImportError:
        out["torchattacks"] = "not run: torchattacks not installed (use .venv-bench)"
        print("  torchattacks not installed: comparison skipped")
        return out
    cm = Counting(model).eval()
    torch.manual_seed(0)
    ta = torchattacks.SPSA(cm, eps=eps, delta=0.01, lr=0.01, nb_iter=args.steps, nb_sample=args.nb_samples,
                           max_batch_size=args.nb_samples)
    w3, c3, xa = timed(lambda: ta(x, y))
    ra = robust_acc(model, xa, y)
    out["torchattacks"] = {"version": getattr(torchattacks, "__version__", "?"), "wall_s": w3, "cpu_s": c3,
                           "forwards": cm.rows, "robust_accuracy": ra, "forwards_per_s_wall": cm.rows / w3,
                           "max_linf": float((xa - x).abs().flatten(1).amax(1).max())}
    out["speedup_wall"] = w3 / w
    out["speedup_cpu"] = c3 / c
    out["robust_accuracy_ours_minus_theirs"] = r.robust_accuracy - ra
    out["goal_met"] = bool(out["speedup_wall"] >= 3.0 and r.robust_accuracy <= ra)
    print(f"  torchattacks SPSA: {w3:.1f} s wall, {c3:.1f} s CPU, {cm.rows} forwards, robust accuracy {ra:.4f}")
    print(f"  => speed-up vs torchattacks {w3 / w:.2f}x wall, {c3 / c:.2f}x CPU (goal >= 3); robust accuracy "
          f"ours {r.robust_accuracy:.4f} vs theirs {ra:.4f} (goal: ours <=)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--n", type=int, default=32, help="test beats attacked by SPSA")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.05, 0.01],
                    help="one comparison per value (repeat a value to repeat the measurement)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--nb-samples", type=int, default=64)
    ap.add_argument("--uap-train", type=int, default=1000, help="training beats given to uap_vs_art")
    ap.add_argument("--uap-test", type=int, default=1000, help="test beats given to uap_vs_art")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-uap", action="store_true")
    ap.add_argument("--out", default="blackbox_speed.json")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    cmd = "python benchmarks/blackbox_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res = ResultFile(args.out, cmd.strip())
    print(f"interpreter {sys.executable}; torch threads {args.threads}")
    model = load_checkpoint(args.checkpoint)
    model.eval()
    test = load_dataset("mitdb", root=args.data_dir, split="test")
    perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))
    x, y = test.x[perm[: args.n]].contiguous(), test.y[perm[: args.n]].contiguous()
    card = getattr(model, "card", {}) or {}
    res.update(
        checkpoint={"path": str(args.checkpoint), "weights_sha256": card.get("weights_sha256"),
                    "architecture": card.get("architecture")},
        data={"dataset": "mitdb", "split": "test", "n_split": len(test), "fingerprint": test.meta.fingerprint,
              "sample_seed": args.seed, "fs": test.meta.fs, "units": test.meta.units},
        clean_accuracy_spsa_sample=robust_acc(model, x, y),
    )
    runs = []
    for eps in args.eps:
        print(f"(i) SPSA on {args.n} test beats, eps {eps}, {args.steps} steps, {args.nb_samples} probes")
        runs.append(part_spsa(model, x, y, args, eps))
        res.update(spsa=runs)
    summary = {}
    for eps in sorted(set(args.eps), reverse=True):
        rs = [r for r in runs if r["eps"] == eps and isinstance(r.get("torchattacks"), dict)]
        if rs:
            summary[str(eps)] = {
                "runs": len(rs),
                "speedup_wall_median": statistics.median(r["speedup_wall"] for r in rs),
                "speedup_cpu_median": statistics.median(r["speedup_cpu"] for r in rs),
                "ratio_ours_over_raw_cpu_median": statistics.median(
                    r["raw_forward_limit"]["ratio_ours_over_raw_cpu"] for r in rs),
                "robust_accuracy_ours": [r["ours_adam"]["robust_accuracy"] for r in rs],
                "robust_accuracy_torchattacks": [r["torchattacks"]["robust_accuracy"] for r in rs],
            }
            print(f"  eps {eps}: median speed-up {summary[str(eps)]['speedup_wall_median']:.2f}x wall, "
                  f"{summary[str(eps)]['speedup_cpu_median']:.2f}x CPU over {len(rs)} run(s)")
    res.update(spsa_summary=summary)

    if args.skip_uap:
        res.update(uap_vs_art="not run: --skip-uap")
    else:
        try:
            from _uap_vs_art import uap_vs_art
        except ImportError as e:
            res.update(uap_vs_art="not run: module missing")
            print(f"(ii) UAP vs ART: not run, module missing ({e})")
        else:
            train = load_dataset("mitdb", root=args.data_dir, split="train")
            pt = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed + 1))[: args.uap_train]
            x_train = train.x[pt].contiguous()
            x_test, y_test = test.x[perm[: args.uap_test]].contiguous(), test.y[perm[: args.uap_test]].contiguous()
            print(f"(ii) UAP vs ART: {len(x_train)} training beats, {len(x_test)} test beats")
            try:
                w, c, out = timed(lambda: uap_vs_art(model, x_train, x_test, y_test, seed=0))
            except Exception as e:  # keep the SPSA numbers; record the failure
                traceback.print_exc()
                res.update(uap_vs_art=f"failed: {type(e).__name__}: {e}")
            else:
                res.update(uap_vs_art=out, uap_vs_art_wall_s=w)
                print(f"  uap_vs_art returned: {out}")
    res.update(complete=True)
    print(f"wrote {res.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
