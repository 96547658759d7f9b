"""Train a compact 1-D ResNet on PhysioNet/CinC 2017 (AF classification) within a wall-time budget.

Usage::

    .venv/bin/python benchmarks/train_cinc2017.py [--data-dir ../shared/data] [--budget-min 25]

What it measures (written to benchmarks/results/train_cinc2017.json after every step):

* dataset build time: reading all 8,528 ``.mat``/``.hea`` records and resampling them to ``--fs``
  into an empty cache, then loading the three splits from the cache;
* the compact ``resnet1d`` (widths 8-16-32-64, one block per stage, 5 taps; ~45 k parameters) on
  single-lead records resampled to 150 Hz and cut/padded (Han's symmetric padding) to 30 s = 4,500
  samples, in mV; Han et al.'s training-set oversampling (noisy x6, AF x2); Adam lr 1e-3, batch 64;
* the split: stratified and seeded (seed 0): 20 % of every class is the held-out test split, 10 % of
  the rest validation (model selection on the validation challenge score), the rest training;
* per epoch: seconds, training loss, validation accuracy and challenge score; training stops when
  the next epoch would not fit in the wall-time budget (``--budget-min``, whole script) or after
  ``--max-epochs``;
* on the held-out test split, for the best-on-validation epoch: the CinC 2017 challenge score
  (mean F1 of N, A, O; Clifford et al. 2017), the four per-class F1, accuracy and the confusion matrix.

The reduced resolution, width and epoch count are what fits this 2-core machine shared with other
jobs; they are recorded in the JSON. ``torch.set_num_threads(1)``: on the loaded shared machine one
thread trained faster than two (measured while choosing the model).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import DATA, REPO, ResultFile  # noqa: E402

from medrobust.data import load_dataset  # noqa: E402
from medrobust.data.cinc2017 import build_cinc2017, challenge_score  # noqa: E402
from medrobust.models import build_model, save_checkpoint  # noqa: E402
from medrobust.train import TrainConfig, Trainer, seed_everything  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DATA))
    p.add_argument("--fs", type=float, default=150.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--budget-min", type=float, default=25.0, help="wall-time budget of the whole script")
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="first N records only (smoke test)")
    p.add_argument("--result", default="train_cinc2017.json")
    p.add_argument("--checkpoint", default=str(REPO / "benchmarks" / "checkpoints" / "cinc2017_resnet1d"))
    args = p.parse_args()
    start = time.perf_counter()
    budget = args.budget_min * 60.0
    torch.set_num_threads(args.threads)
    res = ResultFile(args.result, "python " + " ".join(sys.argv))

    cache = tempfile.mkdtemp(prefix="medrobust-cinc2017-")
    try:
        t0 = time.perf_counter()
        arrays, opts = build_cinc2017(args.data_dir, fs=args.fs, limit=args.limit, cache_dir=cache)
        build_s = time.perf_counter() - t0
        data_kw = dict(root=args.data_dir, fs=args.fs, seconds=args.seconds, units="mV", pad="symmetric",
                       test_fraction=0.2, val_fraction=0.1, seed=0, limit=args.limit,
                       cache_dir=cache)
        t0 = time.perf_counter()
        train = load_dataset("cinc2017", split="train", balance="han", **data_kw)
        val = load_dataset("cinc2017", split="val", **data_kw)
        test = load_dataset("cinc2017", split="test", **data_kw)
        load_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    res.update(dataset={
        "records": int(opts["n_records"]),
        "build_seconds_uncached": build_s,
        "load_three_splits_from_cache_seconds": load_s,
        "note": "build = read 8,528 .hea/.mat + resample 300 -> fs + SHA-256 of the files, into an empty cache "
                "(the OS page cache may already hold the files)",
        "options": {k: v for k, v in data_kw.items() if k not in ("root", "cache_dir")} | {"train_balance": "han"},
        "sizes": {"train_with_han_oversampling": len(train), "val": len(val), "test": len(test)},
        "class_counts": {s: dict(zip(d.meta.classes, d.class_counts().tolist()))
                         for s, d in (("train", train), ("val", val), ("test", test))},
    })

    seed_everything(0)
    model_kw = dict(in_channels=1, num_classes=4, widths=[8, 16, 32, 64], blocks=1, kernel_size=5)
    model = build_model("resnet1d", **model_kw)
    cfg = TrainConfig(epochs=args.max_epochs, batch_size=args.batch_size, lr=1e-3, optimizer="adam",
                      class_balance="none", patience=None, monitor="macro_f1", progress=False, seed=0,
                      eval_batch_size=512)
    trainer = Trainer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    n_params = sum(p.numel() for p in model.parameters())
    history, best, best_state, epoch_s = [], None, None, []
    reserve = 90.0  # test evaluation + checkpoint + margin
    stop = "max_epochs"
    for epoch in range(args.max_epochs):
        elapsed = time.perf_counter() - start
        if epoch_s and elapsed + max(epoch_s) + reserve > budget:
            stop = f"time budget ({args.budget_min} min): next epoch would end after it"
            break
        t0 = time.perf_counter()
        row = {"epoch": epoch + 1, **trainer.train_epoch(train, gen, epoch)}
        row["train_seconds"] = time.perf_counter() - t0
        vm = trainer.evaluate(val)
        row["seconds"] = time.perf_counter() - t0
        epoch_s.append(row["seconds"])
        score = challenge_score(vm["confusion"])
        row.update(val_accuracy=vm["accuracy"], val_challenge_score=score["score"], val_macro_f1=vm["macro_f1"])
        if best is None or score["score"] > best["val_challenge_score"]:
            best, best_state = row, copy.deepcopy(trainer.model.state_dict())
        history.append(row)
        print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f} val acc {vm['accuracy']:.4f} "
              f"score {score['score']:.4f} ({row['seconds']:.0f}s)", flush=True)
        res.update(model={"name": "resnet1d", "kwargs": model_kw, "parameters": n_params},
                   training={"config": vars(cfg) | {"time_budget_min": args.budget_min, "torch_threads": args.threads},
                             "epochs_run": len(history), "seconds_per_epoch": epoch_s,
                             "seconds_per_epoch_mean": sum(epoch_s) / len(epoch_s), "history": history,
                             "best_epoch": best["epoch"]})

    trainer.model.load_state_dict(best_state)
    trainer.model.eval()
    t0 = time.perf_counter()
    tm = trainer.evaluate(test)
    test_s = time.perf_counter() - t0
    score = challenge_score(tm["confusion"])
    save_checkpoint(trainer.model, args.checkpoint, classes=train.meta.classes, fs=train.meta.fs,
                    input_shape=train.input_shape, units=train.meta.units,
                    training={"trainer": "ce", "config": vars(cfg), "best_epoch": best["epoch"],
                              "val_challenge_score": best["val_challenge_score"]},
                    data=train.meta.card())
    res.update(
        training=res.data["training"] | {"stopped_by": stop},
        test={"split": "held-out test (never used for selection)", "n": tm["n"],
              "challenge_score_mean_F1_NAO": score["score"],
              "F1": {k[3:]: v for k, v in score.items() if k.startswith("F1_")},
              "accuracy": tm["accuracy"], "macro_f1_4_classes": tm["macro_f1"],
              "sensitivity": tm["sensitivity"], "confusion": tm["confusion"], "eval_seconds": test_s},
        checkpoint=str(Path(args.checkpoint).relative_to(REPO)) if Path(args.checkpoint).is_relative_to(REPO)
        else args.checkpoint,
        total_seconds=time.perf_counter() - start,
        loadavg_at_end=os.getloadavg(),
        complete=True,
    )
    print(f"test: challenge score {score['score']:.4f}  accuracy {tm['accuracy']:.4f}  "
          f"({len(history)} epochs, {res.data['total_seconds']:.0f}s total)")


if __name__ == "__main__":
    main()
