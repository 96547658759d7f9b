"""Like-for-like: the seed paper's UAP algorithm, ours against the Adversarial Robustness Toolbox's, in one process.

Hirano, Minagi & Takemoto (BMC Med. Imaging 21:9, 2021) ran ART's ``UniversalPerturbation`` with
``attacker="fgsm"``: passes over the fitting set in random order; each input not yet fooled gets one L∞
FGSM step ``v' = v + ε_a·sign(∇ CE(x_i + v, k̂(x_i)))``, kept (``v ← P_{2,ξ}(v')``) only if it flips
``x_i``; fixed pass count (δ = 1e-6). Here both implementations run that algorithm with the SAME inner
attacker (FGSM, L∞), step ε_a (the paper's 0.0012 of the mean ‖x‖∞, i.e. its 0.0024 on [−1, 1] inputs,
unless ``--step``), passes (``max_iter``), stop rule (δ = 1e-6), outer norm (L2), radius ξ = ζ · mean ‖x‖₂
(computed once, given to both), fitting set and model, no clipping of ``x + v`` (the paper's code has
none; ART ``clip_values=None``, ours ``bounds=None``), in this one process, one thread, CPU time
(``time.process_time``). Only the random pass order differs (ART draws it with Python's ``random``,
ours with a torch generator), so each is run for several seeds and both perturbations are scored by
the same code (:meth:`UniversalPerturbation.evaluate`) on the fitting set and on held-out beats.

Ours (``method="fgsm"``) is the same sequential algorithm, run speculatively in chunks (several inputs
tried from the same ``v`` in one batched call; the first kept step wins and the rest are retried), which
gives the one-at-a-time result (checked in tests/attacks/test_uap_props.py).

Also: our batched solver (``method="batched"``, defaults) asked to reach the higher of the two
fitting-set fooling rates (``fooling_goal``), its CPU time against both.

Needs ART (benchmark environment only)::

    flock /tmp/medrobust-bench.lock env PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 \
        /work/main/.venv-bench/bin/python benchmarks/uap_vs_art_like.py [--zetas 0.04,0.1] [--seeds 0,1,2]

Writes ``benchmarks/results/uap_vs_art_like.json`` (with the command) as it goes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, REPO, ResultFile  # noqa: E402

from medrobust.attacks.universal import UniversalPerturbation, mean_norm, project_uap  # noqa: E402


def art_fgsm_uap(model: nn.Module, x: torch.Tensor, *, xi: float, step: float, passes: int, num_classes: int,
                 seed: int) -> tuple[torch.Tensor, float, dict[str, Any]]:
    """ART's UniversalPerturbation(attacker="fgsm") on ``x``: (noise, CPU seconds, ART's own numbers)."""
    from art.attacks.evasion import UniversalPerturbation as ArtUP
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=num_classes, clip_values=None, device_type="cpu")
    atk = ArtUP(clf, attacker="fgsm", attacker_params={"eps": step, "norm": np.inf}, delta=1e-6, max_iter=passes,
                eps=xi, norm=2, batch_size=256, verbose=False)
    random.seed(seed)  # ART's pass order (random.sample)
    np.random.seed(seed)
    t0 = time.process_time()
    atk.generate(x.numpy())
    seconds = time.process_time() - t0
    noise = torch.from_numpy(np.asarray(atk.noise, dtype=np.float32)).reshape(tuple(x.shape[1:]))
    return noise, seconds, {"art_fooling_rate_on_fit_set": float(atk.fooling_rate)}


def run(model: nn.Module, x_fit: torch.Tensor, x_test: torch.Tensor, *, zeta: float, passes: int,
        step: float | None, seeds: list[int]) -> dict[str, Any]:
    """Both implementations for every seed at one ζ, and our batched solver to the higher fit rate."""
    probe = UniversalPerturbation(model, norm="l2", zeta=zeta, bounds=None)
    xi = probe.resolve_xi(x_fit)
    eps_a = step if step is not None else 0.0012 * mean_norm(x_fit, "linf")
    with torch.no_grad():
        k = int(model(x_fit[:2]).shape[1])
    out: dict[str, Any] = {"zeta": zeta, "xi": xi, "step_eps_a": eps_a, "passes": passes, "runs": []}
    for seed in seeds:
        ours = UniversalPerturbation(model, norm="l2", eps=xi, method="fgsm", step_size=eps_a, max_iter=passes,
                                     fooling_goal=1 - 1e-6, bounds=None, generator=torch.Generator().manual_seed(seed))
        t0 = time.process_time()
        res = ours.fit(x_fit)
        t_ours = time.process_time() - t0
        noise, t_art, info = art_fgsm_uap(model, x_fit, xi=xi, step=eps_a, passes=passes, num_classes=k, seed=seed)
        art_v = project_uap(noise, xi, "l2")  # already inside the ball: ART projects after every kept step
        row = {"seed": seed,
               "ours_fgsm": {"cpu_seconds": t_ours, "fooling_rate_fit": ours.evaluate(x_fit, None, res)["fooling_rate"],
                             "fooling_rate_test": ours.evaluate(x_test, None, res)["fooling_rate"],
                             "accepted_steps": sum(h["accepted"] for h in res.history), "grad_evals": res.grad_evals,
                             "delta_l2": res.norms["l2"]},
               "art_fgsm": {"cpu_seconds": t_art, "fooling_rate_fit": ours.evaluate(x_fit, None, art_v)["fooling_rate"],
                            "fooling_rate_test": ours.evaluate(x_test, None, art_v)["fooling_rate"],
                            "delta_l2": float(noise.double().norm()), **info}}
        goal = max(row["ours_fgsm"]["fooling_rate_fit"], row["art_fgsm"]["fooling_rate_fit"], 1.0 / len(x_fit))
        fast = UniversalPerturbation(model, norm="l2", eps=xi, method="batched", fooling_goal=goal, bounds=None,
                                     generator=torch.Generator().manual_seed(seed))
        t0 = time.process_time()
        rb = fast.fit(x_fit)
        t_b = time.process_time() - t0
        row["ours_batched_to_the_higher_fit_rate"] = {
            "fooling_goal": goal, "cpu_seconds": t_b, "passes": len(rb.history), "fooling_rate_fit": rb.fit_rate,
            "fooling_rate_test": fast.evaluate(x_test, None, rb)["fooling_rate"], "grad_evals": rb.grad_evals}
        row["speedup_ours_fgsm_vs_art_fgsm"] = t_art / t_ours
        row["speedup_ours_batched_vs_art_fgsm"] = t_art / t_b
        row["speedup_ours_batched_vs_ours_fgsm"] = t_ours / t_b
        out["runs"].append(row)
        print(f"zeta={zeta} seed={seed}: ours fgsm {t_ours:.2f} s fit {row['ours_fgsm']['fooling_rate_fit']:.3f} "
              f"test {row['ours_fgsm']['fooling_rate_test']:.3f} | ART fgsm {t_art:.2f} s fit "
              f"{row['art_fgsm']['fooling_rate_fit']:.3f} test {row['art_fgsm']['fooling_rate_test']:.3f} | "
              f"batched to {goal:.3f}: {t_b:.2f} s fit {rb.fit_rate:.3f} | speed-up {t_art / t_ours:.1f}x", flush=True)
    runs = out["runs"]

    def mean(path: tuple[str, str]) -> float:
        return statistics.fmean(r[path[0]][path[1]] for r in runs)

    out["summary"] = {
        f"{m}_{q}": mean((m, q)) for m in ("ours_fgsm", "art_fgsm", "ours_batched_to_the_higher_fit_rate")
        for q in ("cpu_seconds", "fooling_rate_fit", "fooling_rate_test")}
    s = out["summary"]
    s["speedup_ours_fgsm_vs_art_fgsm_total_cpu"] = s["art_fgsm_cpu_seconds"] / s["ours_fgsm_cpu_seconds"]
    s["speedup_ours_batched_vs_art_fgsm_total_cpu"] = (s["art_fgsm_cpu_seconds"]
                                                       / s["ours_batched_to_the_higher_fit_rate_cpu_seconds"])
    s["goal_ours_fgsm_10x_faster_at_equal_or_higher_fit_rate"] = (
        s["speedup_ours_fgsm_vs_art_fgsm_total_cpu"] >= 10.0
        and s["ours_fgsm_fooling_rate_fit"] >= s["art_fgsm_fooling_rate_fit"])
    return out


def main() -> None:
    from medrobust.data import load_dataset
    from medrobust.models import load_checkpoint

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-fit", type=int, default=300)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--zetas", default="0.04,0.1")
    p.add_argument("--passes", type=int, default=15, help="max_iter of both (the seed paper's 15)")
    p.add_argument("--step", type=float, default=None, help="FGSM ε_a of both (default 0.0012 · mean ‖x‖∞)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default="uap_vs_art_like.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    res = ResultFile(args.out, "python " + " ".join(sys.argv))
    model = load_checkpoint(REPO / "benchmarks" / "checkpoints" / "mitdb_cnn1_intra").eval()
    ds = load_dataset("mitdb", root=DATA, split="test")
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
    x_fit, x_test = ds.x[idx[: args.n_fit]], ds.x[idx[args.n_fit: args.n_fit + args.n_test]]
    try:
        import art

        version = art.__version__
    except ImportError:  # pragma: no cover - depends on the environment
        raise SystemExit("the Adversarial Robustness Toolbox is not installed here; run with .venv-bench") from None
    res.update(setup={"model": "benchmarks/checkpoints/mitdb_cnn1_intra (CNN1, Ma & Liang)",
                      "data": f"mitdb Kachuee beats (1, 187), split='test', seeded draw: {args.n_fit} to fit, the next "
                              f"{args.n_test} held out", "art_version": version, "torch_threads": 1,
                      "timing": "time.process_time around each fit, same process, one after the other",
                      "same_for_both": "attacker fgsm (L-inf), step eps_a, passes, delta=1e-6, L2 ball xi, "
                                       "no clipping, fitting set, model"})
    out = []
    for zeta in [float(z) for z in args.zetas.split(",") if z]:
        out.append(run(model, x_fit, x_test, zeta=zeta, passes=args.passes, step=args.step,
                       seeds=[int(s) for s in args.seeds.split(",") if s]))
        res.update(results=out)
    print("\n| ζ | ours fgsm CPU s | ART fgsm CPU s | speed-up | fit FR ours / ART | test FR ours / ART "
          "| batched CPU s to the higher fit FR (fit FR) |")
    print("|---|---|---|---|---|---|---|")
    for r in out:
        s = r["summary"]
        print(f"| {r['zeta']:.2f} | {s['ours_fgsm_cpu_seconds']:.2f} | {s['art_fgsm_cpu_seconds']:.2f} | "
              f"{s['speedup_ours_fgsm_vs_art_fgsm_total_cpu']:.1f}x | {s['ours_fgsm_fooling_rate_fit']:.3f} / "
              f"{s['art_fgsm_fooling_rate_fit']:.3f} | {s['ours_fgsm_fooling_rate_test']:.3f} / "
              f"{s['art_fgsm_fooling_rate_test']:.3f} | {s['ours_batched_to_the_higher_fit_rate_cpu_seconds']:.2f} "
              f"({s['ours_batched_to_the_higher_fit_rate_fooling_rate_fit']:.3f}) |")
    res.update(complete=True)


if __name__ == "__main__":
    main()
