"""The GPU fast path against the eager path and torchattacks: PGD-40 and SAP on MIT-BIH CNN1, batch 256.

Prepared for the GPU machine (issue: "scale out ... GPU fast path"); it also runs on CPU (``--device cpu``),
where the fast path is off and the script only proves its own pipeline::

    python benchmarks/gpu_fastpath.py --device cuda [--limit N] [--checkpoint benchmarks/checkpoints/mitdb_cnn1_intra]
    python benchmarks/gpu_fastpath.py --device cpu --limit 256 --out gpu_fastpath_cpu_smoke.json

On the MIT-BIH intra-patient test split (all 21,899 beats by default; a stratified seeded ``--limit``), in
batches of 256, one process, each run timed with ``torch.cuda.synchronize`` around it:

* PGD-40 (L∞ ε = 0.05 in [0, 1] units, step 2.5·ε/40, random start, early stop): ours with ``fast_path="auto"``
  (CUDA graph of the step) and ``"off"`` (eager), and torchattacks' PGD (when installed) with the same settings.
  Goal: ours ≥ 3× faster than torchattacks at robust accuracy within 0.5 pp.
* SAP (Han et al., Nature Medicine 2020: 20 + 40 steps at this ε): ours with and without the fast path.
* bf16: PGD-40 robust accuracy with the forward under bf16 autocast against float32 (goal: within 0.5 pp).

Writes ``benchmarks/results/gpu_fastpath.json`` (``--out``) with the device's name.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import DATA, REPO, ResultFile  # noqa: E402

from medrobust.attacks import PGD, SAP  # noqa: E402
from medrobust.data import load_dataset  # noqa: E402
from medrobust.evaluation.inputs import select_indices  # noqa: E402
from medrobust.models import load_checkpoint  # noqa: E402
from medrobust.models.precision import with_precision  # noqa: E402

DEFAULT_CKPT = REPO / "benchmarks" / "checkpoints" / "mitdb_cnn1_intra"


def timed(fn: Callable[[], float], device: torch.device) -> tuple[float, float]:
    """``(seconds, fn())`` with the device synchronised before and after."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    value = fn()
    sync()
    return time.perf_counter() - t0, value


def robust_accuracy(model: torch.nn.Module, attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """Fraction of samples still classified correctly after ``attack`` (adversarial inputs of each batch)."""
    correct = 0
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        with torch.no_grad():
            correct += int((model(attack(xb, yb)).argmax(1) == yb).sum())
    return correct / len(x)


def ours(cls: Any, model: torch.nn.Module, fast: str, **kw: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    atk = cls(model, generator=torch.Generator().manual_seed(0), **kw)
    atk.fast_path = fast
    return lambda xb, yb: atk(xb, yb).x_adv


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    model = load_checkpoint(args.checkpoint).to(device).eval()
    ds = load_dataset("mitdb", root=args.data_dir, split="test", format="kachuee", scheme="intra")
    idx = select_indices(len(ds), args.limit, 0, labels=ds.y.numpy()) if args.limit else range(len(ds))
    t = torch.as_tensor(list(idx))
    x, y = ds.x[t].to(device), ds.y[t].long().to(device)
    eps, steps = args.eps, 40
    pgd = {"eps": eps, "steps": steps, "step_size": 2.5 * eps / steps, "random_start": True, "bounds": (0, 1)}
    sap = {"eps": eps, "steps": 20, "smooth_steps": 40, "bounds": (0, 1)}
    rows: dict[str, Any] = {}
    plan: list[tuple[str, torch.nn.Module, Callable[..., torch.Tensor]]] = [
        ("pgd40_fast", model, ours(PGD, model, "auto", **pgd)),
        ("pgd40_eager", model, ours(PGD, model, "off", **pgd)),
        ("sap_fast", model, ours(SAP, model, "auto", **sap)),
        ("sap_eager", model, ours(SAP, model, "off", **sap)),
    ]
    low = with_precision(model, "bf16")
    plan.append(("pgd40_bf16", low, ours(PGD, low, "auto", **pgd)))
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
        plan.append(("pgd40_torchattacks", model, lambda xb, yb: ta(xb, yb)))
    except ImportError:
        rows["torchattacks"] = "not installed"
    for name, judge, attack in plan:
        seconds, acc = timed(lambda: robust_accuracy(judge, attack, x, y, args.batch), device)
        rows[name] = {"seconds": seconds, "robust_accuracy": acc}
        print(f"{name:20s} {seconds:8.2f} s  robust accuracy {acc:.4f}", flush=True)
    ratios = {"pgd40_fast_vs_eager": rows["pgd40_eager"]["seconds"] / rows["pgd40_fast"]["seconds"],
              "sap_fast_vs_eager": rows["sap_eager"]["seconds"] / rows["sap_fast"]["seconds"],
              "bf16_minus_fp32_pp": 100 * (rows["pgd40_bf16"]["robust_accuracy"] - rows["pgd40_fast"]["robust_accuracy"])}
    if "pgd40_torchattacks" in rows:
        ratios["pgd40_fast_vs_torchattacks"] = rows["pgd40_torchattacks"]["seconds"] / rows["pgd40_fast"]["seconds"]
        ratios["pgd40_acc_diff_pp"] = 100 * (rows["pgd40_fast"]["robust_accuracy"]
                                             - rows["pgd40_torchattacks"]["robust_accuracy"])
    print(ratios)
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "n": len(x), "batch": args.batch, "eps": eps, "runs": rows, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--checkpoint", default=str(DEFAULT_CKPT))
    p.add_argument("--data-dir", default=str(DATA))
    p.add_argument("--limit", type=int, default=0, help="stratified seeded subset (0: the whole test split)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--out", default="gpu_fastpath.json")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here; run it on the GPU machine, or --device cpu for a smoke run")
    res = ResultFile(args.out, "python benchmarks/gpu_fastpath.py " + " ".join(argv or sys.argv[1:]))
    res.update(**run(args), complete=True)
    res.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
