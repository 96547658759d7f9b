"""Train torchvision ResNet-18 on PneumoniaMNIST and BreastMNIST (28x28) and compare with MedMNIST v2.

Usage (needs torchvision: run it in .venv-images, see `make test-images`)::

    .venv-images/bin/python benchmarks/train_medmnist.py [--data-dir ../shared/data]
        [--epochs-pneumonia 4] [--epochs-breast 25] [--stem imagenet|cifar] [--threads 1]

Reference (Yang et al., MedMNIST v2, Sci. Data 10:41, 2023, Table 3, ResNet-18 (28), test set):
PneumoniaMNIST ACC 0.854 / AUC 0.944; BreastMNIST ACC 0.863 / AUC 0.901. Their recipe: CIFAR-style
ResNet-18, Adam lr 1e-3, batch 128, 100 epochs (lr x0.1 at 50 and 75), model selection by validation
AUC, mean of >= 3 runs.

This benchmark must finish in <= 20 minutes on a shared 2-core CPU machine, so by default it trains
torchvision's ResNet-18 with its ImageNet stem (7x7 stride-2 conv + max-pool, ``small_input=False``;
about 5x cheaper per step than the CIFAR-style stem at 28x28 here) for a few epochs, with Adam lr 1e-3,
batch 128, constant lr, one seed, selection of the epoch by validation balanced accuracy (a Trainer
monitor; validation loss picked BreastMNIST's majority-class epoch 2 in a first run), and evaluation on
the official test split. It also times a few training steps of the CIFAR-style
ResNet-18 (the MedMNIST "ResNet-18 (28)") to show what the full recipe would cost here. Results are
written to benchmarks/results/train_medmnist.json as the run goes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, ResultFile  # noqa: E402

from medrobust.data import load_dataset  # noqa: E402
from medrobust.data.base import ECGDataset  # noqa: E402
from medrobust.evaluation.roc_auc import roc_auc  # noqa: E402
from medrobust.models import build_model  # noqa: E402
from medrobust.train import TrainConfig, Trainer, seed_everything  # noqa: E402

REFERENCE = {  # MedMNIST v2 Table 3, ResNet-18 (28): test ACC / AUC
    "pneumoniamnist": {"accuracy": 0.854, "auc": 0.944},
    "breastmnist": {"accuracy": 0.863, "auc": 0.901},
}


@torch.no_grad()
def scores(model: torch.nn.Module, data: ECGDataset, batch: int = 512) -> torch.Tensor:
    """Softmax probabilities ``(N, K)`` of ``model`` on ``data`` (eval mode)."""
    model.eval()
    return torch.cat([torch.softmax(model(data.x[b]), 1) for b in torch.arange(len(data)).split(batch)])


def acc_auc(model: torch.nn.Module, data: ECGDataset) -> dict[str, float]:
    """MedMNIST's binary rule: ACC = argmax (= 0.5 threshold on P(class 1)), AUC of P(class 1)."""
    p = scores(model, data)
    return {"accuracy": float((p.argmax(1) == data.y).double().mean()), "auc": roc_auc(data.y, p)}


def time_steps(small_input: bool, steps: int, batch: int) -> float:
    """Seconds per Adam training step of ResNet-18 on a (batch, 1, 28, 28) batch."""
    model = build_model("resnet18", in_channels=1, num_classes=2, input_size=28, small_input=small_input)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 2, (batch,))
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return sum(times[1:]) / steps


def run(flag: str, epochs: int, args: argparse.Namespace) -> dict[str, Any]:
    kw = dict(root=args.data_dir, flag=flag)
    train, val, test = (load_dataset("medmnist", split=s, **kw) for s in ("train", "val", "test"))
    seed_everything(0)
    model = build_model("resnet18", in_channels=1, num_classes=2, input_size=28, small_input=args.stem == "cifar")
    cfg = TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr, optimizer="adam", patience=None,
                      monitor="balanced_accuracy", progress=False, seed=0, max_batches_per_epoch=args.max_batches)
    trainer = Trainer(model, cfg)
    result = trainer.fit(train, val)
    epoch_s = [h["seconds"] for h in result.history]
    test_m, val_m = acc_auc(trainer.model, test), acc_auc(trainer.model, val)
    ref = REFERENCE[flag]
    return {
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "class_counts": {s: dict(zip(d.meta.classes, d.class_counts().tolist()))
                         for s, d in (("train", train), ("val", val), ("test", test))},
        "fingerprint": train.meta.fingerprint,
        "model": {"name": "resnet18", "kwargs": trainer.model.medrobust_arch["kwargs"],
                  "parameters": sum(p.numel() for p in trainer.model.parameters())},
        "config": vars(cfg),
        "epochs_run": len(result.history),
        "best_epoch_by_val_balanced_accuracy": result.best_epoch,
        "seconds_per_epoch_mean": sum(epoch_s) / len(epoch_s),
        "train_seconds_total": result.seconds,
        "history": [{k: v for k, v in h.items() if k != "val_sensitivity"} for h in result.history],
        "val": val_m,
        "test": test_m,
        "reference_medmnist_v2_resnet18_28": ref,
        "test_minus_reference": {k: test_m[k] - ref[k] for k in ref},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DATA / "medmnist"))
    p.add_argument("--epochs-pneumonia", type=int, default=4)
    p.add_argument("--epochs-breast", type=int, default=25)
    p.add_argument("--stem", choices=("imagenet", "cifar"), default="imagenet",
                   help="imagenet: torchvision's 7x7/2 stem + max-pool; cifar: 3x3/1 stem, no max-pool (MedMNIST's)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: best on a busy 2-core machine)")
    p.add_argument("--probe-steps", type=int, default=1, help="timed steps of each stem (0: skip the probe)")
    p.add_argument("--max-batches", type=int, default=None, help="cap batches per epoch (smoke tests only)")
    p.add_argument("--out", default="train_medmnist.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    res = ResultFile(args.out, "python " + " ".join(sys.argv))
    start = time.perf_counter()
    res.update(settings={"stem": args.stem, "threads": args.threads, "batch_size": args.batch_size, "lr": args.lr,
                         "epochs": {"pneumoniamnist": args.epochs_pneumonia, "breastmnist": args.epochs_breast},
                         "selection": "epoch with the highest validation balanced accuracy; evaluation on test",
                         "differences_from_medmnist_recipe": [
                             f"{args.stem} stem" + (" (MedMNIST uses the CIFAR-style 3x3/1 stem)" if args.stem != "cifar" else ""),
                             "few epochs (MedMNIST: 100 with lr x0.1 at 50 and 75)",
                             "selection by validation balanced accuracy (MedMNIST: validation AUC)",
                             "one seed (MedMNIST: mean of >= 3 runs)",
                             "PneumoniaMNIST train split has 4,707 of the official 4,708 images"]})
    if args.probe_steps > 0:
        probe = {}
        for stem, small in (("imagenet", False), ("cifar", True)):
            s = time_steps(small, args.probe_steps, args.batch_size)
            probe[stem] = {"seconds_per_step": s, "projected_seconds_per_pneumonia_epoch": s * -(-4707 // args.batch_size)}
            print(f"probe: {stem} stem {s:.2f} s/step of {args.batch_size}")
        probe["cifar_over_imagenet"] = probe["cifar"]["seconds_per_step"] / probe["imagenet"]["seconds_per_step"]
        res.update(step_time_probe=probe)
    for flag, epochs in (("pneumoniamnist", args.epochs_pneumonia), ("breastmnist", args.epochs_breast)):
        out = run(flag, epochs, args)
        res.update(**{flag: out})
        t, r = out["test"], out["reference_medmnist_v2_resnet18_28"]
        print(f"{flag}: test ACC {t['accuracy']:.3f} (MedMNIST v2 {r['accuracy']:.3f}), AUC {t['auc']:.3f} "
              f"(MedMNIST v2 {r['auc']:.3f}); best epoch {out['best_epoch_by_val_balanced_accuracy']}/{out['epochs_run']}, "
              f"{out['seconds_per_epoch_mean']:.0f} s/epoch")
    res.update(complete=True, wall_seconds=time.perf_counter() - start)


if __name__ == "__main__":
    main()
