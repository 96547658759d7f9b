"""Universal adversarial perturbations on PneumoniaMNIST (the chest X-ray task of Hirano, Minagi & Takemoto, BMC Med. Imaging 21:9, 2021).

Hirano, Minagi & Takemoto, BMC Medical Imaging 21:9 (2021) report non-targeted and targeted UAPs at
ζ = 2 % and 4 % (L2) against seven ImageNet architectures on 299x299 chest X-rays. This benchmark runs
the same protocol at MedMNIST scale on CPU: PneumoniaMNIST 28x28 (Kermany's paediatric CXR), for
torchvision's ResNet-18 (ImageNet stem, trained from scratch, as ``benchmarks/train_medmnist.py``) and a
small two-block CNN defined here (a second, much smaller architecture), each trained for a few epochs
(model selection on the official val split by balanced accuracy, never on test).

For every model and ζ ∈ {0.02, 0.04} (L2, ξ = ζ · mean ‖x‖₂ of the fitting images, all in [0, 1]
intensity units with the model's own normalisation inside): a non-targeted UAP and targeted UAPs
(targets ``pneumonia``, the seed code's default, and ``normal``, the clinically dangerous direction),
all with our batched solver (:class:`medrobust.attacks.UniversalPerturbation`), fitted on a seeded random subset of the training
split; a uniform-in-the-ball random control of the same ξ. Each is evaluated on that fitting subset
("train", as the paper's train metrics are on the generation set) and on the official test split:
fooling rate vs the clean prediction, misclassification rate vs the label, targeted success over all
inputs and over inputs not already predicted as the target.

Usage (torchvision lives only in .venv-images)::

    flock /tmp/medrobust-bench.lock .venv-images/bin/python benchmarks/uap_medmnist.py \
        [--epochs-resnet 2] [--epochs-cnn 5] [--n-fit 512] [--passes 4] [--threads 1]

Writes ``benchmarks/results/uap_medmnist.json`` as it goes. Checkpoints are not saved in the repo
(``--save-dir`` writes them elsewhere, e.g. /tmp).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, ResultFile  # noqa: E402

from medrobust.attacks import UniversalPerturbation  # noqa: E402
from medrobust.data import load_dataset  # noqa: E402
from medrobust.models import build_model, save_checkpoint  # noqa: E402
from medrobust.train import TrainConfig, Trainer, seed_everything  # noqa: E402


class SmallCNN(nn.Module):
    """Two conv blocks (16, 32 channels) + linear head for (N, 1, 28, 28) in [0, 1] (normalises inside)."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - 0.5) / 0.5))


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> dict[str, float]:
    model.eval()
    pred = torch.cat([model(c).argmax(1) for c in x.split(batch)])
    recalls = [float((pred[y == c] == c).double().mean()) for c in y.unique()]
    return {"accuracy": float((pred == y).double().mean()), "balanced_accuracy": sum(recalls) / len(recalls)}


def train(name: str, epochs: int, train_ds: Any, val_ds: Any, test_ds: Any, args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any]]:
    seed_everything(0)
    if name == "resnet18":
        model = build_model("resnet18", in_channels=1, num_classes=2, input_size=28, small_input=False)
    else:
        model = SmallCNN(2)
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, optimizer="adam", patience=None,
                      monitor="balanced_accuracy", progress=False, seed=0)
    trainer = Trainer(model, cfg)
    t0 = time.perf_counter()
    result = trainer.fit(train_ds, val_ds)
    model = trainer.model.eval()
    info = {"epochs": epochs, "best_epoch_by_val_balanced_accuracy": result.best_epoch,
            "train_seconds": time.perf_counter() - t0, "parameters": sum(p.numel() for p in model.parameters()),
            "val": accuracy(model, val_ds.x, val_ds.y), "test": accuracy(model, test_ds.x, test_ds.y),
            "architecture": "torchvision resnet18, ImageNet stem (small_input=False), 1 input channel, no pretraining"
            if name == "resnet18" else SmallCNN.__doc__}
    if args.save_dir:
        if name == "resnet18":
            save_checkpoint(model, Path(args.save_dir) / f"pneumoniamnist_{name}", classes=list(train_ds.meta.classes),
                            fs=0.0, input_shape=list(train_ds.x.shape[1:]), units="intensity [0, 1]")
        else:
            torch.save(model.state_dict(), Path(args.save_dir) / f"pneumoniamnist_{name}.pt")
    return model, info


def rates(ev: dict[str, Any]) -> dict[str, Any]:
    keep = ("fooling_rate", "misclassification_rate", "clean_accuracy", "targeted_success_rate",
            "targeted_success_rate_excluding_target", "clean_target_rate", "n")
    return {k: ev[k] for k in keep if k in ev}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DATA / "medmnist"))
    p.add_argument("--epochs-resnet", type=int, default=2)
    p.add_argument("--epochs-cnn", type=int, default=5)
    p.add_argument("--n-fit", type=int, default=512, help="training images the UAPs are fitted on (seeded draw)")
    p.add_argument("--passes", type=int, default=4, help="passes of the batched solver over the fitting set")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--zetas", default="0.02,0.04")
    p.add_argument("--targets", default="pneumonia,normal", help="target classes of the targeted UAPs")
    p.add_argument("--models", default="resnet18,small_cnn")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-dir", default=None, help="where to save the trained models (outside the repo)")
    p.add_argument("--out", default="uap_medmnist.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    res = ResultFile(args.out, "python " + " ".join(sys.argv))
    kw = dict(root=args.data_dir, flag="pneumoniamnist")
    tr, va, te = (load_dataset("medmnist", split=s, **kw) for s in ("train", "val", "test"))
    classes = list(tr.meta.classes)
    targets = [classes.index(t) for t in args.targets.split(",") if t]
    fit_idx = torch.randperm(len(tr), generator=torch.Generator().manual_seed(0))[: args.n_fit]
    x_fit, y_fit = tr.x[fit_idx], tr.y[fit_idx]
    zetas = [float(z) for z in args.zetas.split(",")]
    res.update(settings={"dataset": "PneumoniaMNIST 28x28 (MedMNIST v2), classes " + str(classes),
                         "sizes": {"train": len(tr), "val": len(va), "test": len(te)},
                         "fit_set": f"{args.n_fit} training images, seeded random draw (seed 0); 'train' metrics are on it",
                         "norm": "l2", "zetas": zetas, "targets": {classes[t]: t for t in targets},
                         "solver": {"method": "batched", "passes": args.passes, "batch_size": args.batch_size},
                         "control": "one uniform-in-the-L2-ball vector of the same radius (seed 0)",
                         "threads": args.threads, "units": "intensity [0, 1]; models normalise (x-0.5)/0.5 inside"},
               models={})
    out: dict[str, Any] = {}
    for name in [m for m in args.models.split(",") if m]:
        epochs = args.epochs_resnet if name == "resnet18" else args.epochs_cnn
        model, info = train(name, epochs, tr, va, te, args)
        print(f"{name}: {epochs} epochs, test acc {info['test']['accuracy']:.3f} "
              f"(balanced {info['test']['balanced_accuracy']:.3f}), {info['train_seconds']:.0f} s")
        entry: dict[str, Any] = {"training": info, "uap": []}
        out[name] = entry
        res.update(models=out)
        for zeta in zetas:
            for tgt in (None, *targets):
                uap = UniversalPerturbation(model, norm="l2", zeta=zeta, method="batched", target=tgt,
                                            max_iter=args.passes, batch_size=args.batch_size, bounds=(0.0, 1.0),
                                            generator=torch.Generator().manual_seed(0))
                r = uap.fit(x_fit)
                ctrl = uap.random_control(kind="uniform", generator=torch.Generator().manual_seed(0))
                row = {"zeta": zeta, "targeted": tgt is not None, "target": tgt, "xi": r.xi, "mean_l2_norm": r.mean_norm,
                       "delta_norms": r.norms, "fit_seconds": r.seconds, "grad_evals": r.grad_evals,
                       "history": r.history}
                for split, (x, y) in (("train", (x_fit, y_fit)), ("test", (te.x, te.y))):
                    row[split] = {"uap": rates(uap.evaluate(x, y, r, target=tgt)),
                                  "random_control": rates(uap.evaluate(x, y, ctrl, target=tgt))}
                entry["uap"].append(row)
                res.update(models=out)
                key = "targeted_success_rate" if tgt is not None else "fooling_rate"
                extra = ""
                if tgt is not None:
                    k2 = "targeted_success_rate_excluding_target"
                    extra = (f"; excluding inputs already predicted {classes[tgt]}: test {row['test']['uap'][k2]:.3f} "
                             f"(control {row['test']['random_control'][k2]:.3f})")
                print(f"  zeta={zeta} {'targeted->' + classes[tgt] if tgt is not None else 'non-targeted'}: "
                      f"test {key} {row['test']['uap'][key]:.3f} (control {row['test']['random_control'][key]:.3f}), "
                      f"train {row['train']['uap'][key]:.3f}{extra}; fit {r.seconds:.0f} s")
    res.update(complete=True, wall_seconds=time.perf_counter() - start)


if __name__ == "__main__":
    main()
