"""Score a CinC 2017 checkpoint on its validation and held-out test splits with the challenge score.

Usage::

    .venv/bin/python benchmarks/score_cinc2017.py --checkpoint runs/cinc2017_resnet1d/checkpoint \\
        [--data-dir ../shared/data] [--result score_cinc2017.json]

The splits are loaded with the data options recorded in the checkpoint card (rate, length, split fractions and
seed), so the test split is the one the training never saw. Written to ``benchmarks/results/<result>``: per
split the CinC 2017 challenge score (mean F1 of N, A and O; Clifford et al., Computing in Cardiology 44, 2017),
the four per-class F1, accuracy with its 95 % Wilson interval, the confusion matrix (rows true), and the
checkpoint's training settings and best epoch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import DATA, REPO, ResultFile  # noqa: E402

from medrobust.data import load_dataset  # noqa: E402
from medrobust.data.cinc2017 import challenge_score  # noqa: E402
from medrobust.evaluation.metrics import classification_metrics, wilson_interval  # noqa: E402
from medrobust.models import load_checkpoint  # noqa: E402
from medrobust.models.inference import predict  # noqa: E402

SPLIT_OPTIONS = ("fs", "seconds", "units", "pad", "test_fraction", "val_fraction", "seed", "labels")


def score(model: torch.nn.Module, data, batch: int) -> dict:
    preds = predict(model, data.x, batch_size=batch, mask=data.mask)
    m = classification_metrics(data.y.numpy(), preds.numpy(), data.num_classes, data.meta.classes)
    correct = int((preds == data.y).sum())
    lo, hi = wilson_interval(correct, len(data))
    s = challenge_score(m["confusion"])
    return {"n": len(data), "challenge_score_mean_F1_NAO": s["score"],
            "F1": {k[3:]: v for k, v in s.items() if k.startswith("F1_")},
            "accuracy": correct / len(data), "accuracy_ci95": [lo, hi], "confusion_rows_true": m["confusion"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-dir", default=str(DATA))
    p.add_argument("--result", default="score_cinc2017.json")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint).eval()
    card = model.card
    if (card.get("data") or {}).get("name") != "cinc2017":
        sys.exit(f"score_cinc2017: {args.checkpoint} was not trained on cinc2017 (card data: "
                 f"{(card.get('data') or {}).get('name')!r}); pass a CinC 2017 checkpoint.")
    options = {k: v for k, v in card["data"]["options"].items() if k in SPLIT_OPTIONS}
    ck = Path(args.checkpoint).resolve()
    res = ResultFile(args.result, "python " + " ".join(sys.argv))
    res.update(checkpoint=str(ck.relative_to(REPO)) if ck.is_relative_to(REPO) else str(ck),
               architecture=card["architecture"], kwargs=card["kwargs"], data_options=options,
               training={k: card["training"].get(k) for k in ("trainer", "config", "best_epoch")},
               parameters=sum(t.numel() for t in model.parameters()))
    for split in ("val", "test"):
        data = load_dataset("cinc2017", root=args.data_dir, split=split, **options)
        res.update(**{split: score(model, data, args.batch_size)})
        print(f"{split}: challenge score {res.data[split]['challenge_score_mean_F1_NAO']:.4f}  "
              f"accuracy {res.data[split]['accuracy']:.4f}  (n = {len(data)})", flush=True)
    res.update(complete=True)


if __name__ == "__main__":
    main()
