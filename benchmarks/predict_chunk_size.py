"""CPU time of ``medrobust.models.inference.predict`` per input against the chunk size (``batch_size``).

Why: the UAP solvers predict whole fitting and test sets in chunks of ``eval_batch_size``; on this 2-core CPU
chunks of 1,024 beats were slower per beat than smaller ones, so the default chunk was chosen from this run.

Usage::

    .venv/bin/python benchmarks/predict_chunk_size.py [--n 4096] [--repeats 3] [--threads 1]

Models: the committed MIT-BIH CNN1 (``benchmarks/checkpoints/mitdb_cnn1_intra``, beats of 187 samples) and the
committed CinC 2017 ResNet (``benchmarks/checkpoints/cinc2017_resnet1d``, 4,500 samples). Inputs: ``--n``
random inputs of the model's shape. Each chunk size is timed ``--repeats`` times, in ascending then descending
order alternately, and the minimum CPU time (``time.process_time``) kept; the predictions of every chunk size
are checked equal. Writes ``benchmarks/results/predict_chunk_size.json``: seconds per 1,000 inputs and the ratio
to the fastest chunk size, per model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import REPO, ResultFile  # noqa: E402

from medrobust.models import load_checkpoint  # noqa: E402
from medrobust.models.inference import predict  # noqa: E402

MODELS = {"mitdb_cnn1_intra": 4096, "cinc2017_resnet1d": 512}
SIZES = (64, 128, 256, 512, 1024)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=None, help="inputs per model (default: 4,096 beats, 512 CinC records)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    res = ResultFile("predict_chunk_size.json", "python " + " ".join(sys.argv))
    out = {}
    for name, default_n in MODELS.items():
        model = load_checkpoint(REPO / "benchmarks" / "checkpoints" / name).eval()
        n = args.n or default_n
        x = torch.rand((n, *model.card["input_shape"]), generator=torch.Generator().manual_seed(0)) * 0.6 - 0.1
        best: dict[int, float] = {}
        preds = {}
        for rep in range(args.repeats):
            for bs in (SIZES if rep % 2 == 0 else SIZES[::-1]):
                t0 = time.process_time()
                preds[bs] = predict(model, x, batch_size=bs)
                best[bs] = min(best.get(bs, float("inf")), time.process_time() - t0)
        same = all(torch.equal(preds[bs], preds[SIZES[0]]) for bs in SIZES)
        fastest = min(best.values())
        out[name] = {"n": n, "input_shape": model.card["input_shape"], "predictions_equal": same,
                     "cpu_s_per_1000": {str(bs): 1000 * t / n for bs, t in best.items()},
                     "ratio_to_fastest": {str(bs): t / fastest for bs, t in best.items()}}
        res.update(models=out)
        print(name, {bs: f"{t / fastest:.2f}x" for bs, t in best.items()}, "predictions equal:", same, flush=True)
    res.update(complete=True)


if __name__ == "__main__":
    main()
