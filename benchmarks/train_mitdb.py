"""Train Ma & Liang's CNN1 on MIT-BIH beats (Kachuee format) and report test metrics.

Usage::

    .venv/bin/python benchmarks/train_mitdb.py [--data-dir ../shared/data] [--epochs 12]

Measures (written to benchmarks/results/train_mitdb.json as the run goes):
* time to build the beat dataset from all 48 WFDB records (no cache) and to reload it from the cache;
* CNN1 on the intra-patient split (stratified 80/20 test, 20 % of the rest as validation, seed 0):
  test accuracy (goal >= 0.97), class-balanced accuracy, macro-F1, per-class sensitivity and precision,
  seconds per epoch. The best-on-validation checkpoint is saved to benchmarks/checkpoints/mitdb_cnn1_intra;
* the same recipe on the inter-patient split DS1 -> DS2 (de Chazal 2004), reported as measured.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, REPO, ResultFile  # noqa: E402

from medrobust.data import load_dataset  # noqa: E402
from medrobust.data.mitdb import build_mitdb  # noqa: E402
from medrobust.models import build_model, save_checkpoint  # noqa: E402
from medrobust.train import TrainConfig, Trainer, seed_everything  # noqa: E402


def run_split(scheme: str, args: argparse.Namespace, cache: str, epochs: int) -> tuple[dict, Trainer, object, object]:
    kw = dict(root=args.data_dir, scheme=scheme, cache_dir=cache, seed=0)
    train, val, test = (load_dataset("mitdb", split=s, **kw) for s in ("train", "val", "test"))
    seed_everything(0)
    model = build_model("cnn1", in_channels=1, input_length=187, num_classes=5)
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, optimizer="adam", patience=3,
                      monitor="accuracy", progress=False, seed=0)
    trainer = Trainer(model, cfg)
    result = trainer.fit(train, val)
    test_m = trainer.evaluate(test)
    epoch_s = [h["seconds"] for h in result.history]
    return {
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "class_counts_test": dict(zip(test.meta.classes, test.class_counts().tolist())),
        "config": vars(cfg),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "seconds_per_epoch_mean": sum(epoch_s) / len(epoch_s),
        "seconds_per_epoch": epoch_s,
        "history": [{k: v for k, v in h.items() if k != "val_sensitivity"} for h in result.history],
        "test": {k: test_m[k] for k in ("n", "correct", "accuracy", "balanced_accuracy", "macro_f1",
                                         "sensitivity", "precision", "confusion")},
    }, trainer, train, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DATA))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--inter-epochs", type=int, default=8)
    p.add_argument("--checkpoint-out", default=str(REPO / "benchmarks" / "checkpoints" / "mitdb_cnn1_intra"))
    args = p.parse_args()
    res = ResultFile("train_mitdb.json", "python " + " ".join(sys.argv))
    cache = tempfile.mkdtemp(prefix="medrobust-bench-cache-")
    try:
        t0 = time.perf_counter()
        arrays, _ = build_mitdb(args.data_dir, cache_dir=cache)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_mitdb(args.data_dir, cache_dir=cache)
        cached_s = time.perf_counter() - t0
        res.update(dataset={"records": 48, "beats": int(len(arrays["y"])), "build_seconds_uncached": build_s,
                            "load_seconds_cached": cached_s})
        print(f"dataset: {len(arrays['y'])} beats, build {build_s:.1f} s, cached reload {cached_s:.2f} s")

        intra, trainer, train, result = run_split("intra", args, cache, args.epochs)
        out = Path(args.checkpoint_out)
        if out.exists():
            shutil.rmtree(out)
        trainer.save(out, train, result)
        res.update(intra_patient=intra, checkpoint=str(out.relative_to(REPO)))
        t = intra["test"]
        print(f"intra: test acc {t['accuracy']:.4f} (goal >= 0.97), balanced {t['balanced_accuracy']:.4f}, "
              f"macro-F1 {t['macro_f1']:.4f}, {intra['seconds_per_epoch_mean']:.1f} s/epoch")
        print("       sensitivity " + ", ".join(f"{k} {v:.3f}" for k, v in t["sensitivity"].items()))

        inter, _, _, _ = run_split("inter", args, cache, args.inter_epochs)
        res.update(inter_patient=inter)
        t = inter["test"]
        print(f"inter (DS1->DS2): test acc {t['accuracy']:.4f}, balanced {t['balanced_accuracy']:.4f}, "
              f"macro-F1 {t['macro_f1']:.4f}")
        print("       sensitivity " + ", ".join(f"{k} {v:.3f}" for k, v in t["sensitivity"].items()))
        res.update(complete=True, goal_intra_accuracy_097_met=intra["test"]["accuracy"] >= 0.97)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
