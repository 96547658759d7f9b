"""Small models and data shared by the evaluation, report and CLI-evaluate tests (loaded by path).

* :func:`tiny_checkpoint`: Ma & Liang's CNN1 with 8 channels, trained for 8 epochs on 400 synthetic
  AAMI beats (about 5 s on one core; ~0.95 validation accuracy), saved once per test session.
* Models built to trigger each reliability flag (:class:`Quantized`, :class:`Saturated`,
  :class:`AlwaysDropout`, :class:`Softmaxed`).
* :class:`RandomSearch`: a tiny score-based (black-box) attack for the ensemble tests.
* :class:`NearestMean`: a fixed nearest-class-mean classifier (no training) for pinned numbers;
  :class:`Constant`: a collapsed model that predicts one class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrobust.attacks import Attack
from medrobust.attacks.base import AttackContext

REPO = Path(__file__).resolve().parents[2]


def tiny_checkpoint(base: Path) -> Path:
    """Train (once per session, cached under ``base``) and return the checkpoint folder."""
    from medrobust.data import load_dataset
    from medrobust.models import build_model
    from medrobust.train import TrainConfig, Trainer, seed_everything

    out = base / "tiny-cnn1"
    ckpt = out / "checkpoint"
    if (ckpt / "card.json").is_file():
        return ckpt
    train = load_dataset("synthetic", split="train", n_per_class=80, seed=0)
    val = load_dataset("synthetic", split="val", n_per_class=20, seed=0)
    seed_everything(0)
    model = build_model("cnn1", in_channels=1, input_length=187, num_classes=5, channels=8)
    Trainer(model, TrainConfig(epochs=8, batch_size=32, lr=3e-3, patience=None, progress=False),
            out_dir=out).fit(train, val)
    return ckpt


def synthetic_beats(n_per_class: int = 12) -> Any:
    from medrobust.data import load_dataset

    return load_dataset("synthetic", split="test", n_per_class=n_per_class, seed=0)


class Quantized(nn.Module):
    """``model(round(x · 8) / 8)``: zero input gradients everywhere (gradient masking by quantisation)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 8) / 8)


class Saturated(nn.Module):
    """Logits × 1e4: softmax saturates, the cross-entropy gradient underflows to zero."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * 1e4


class AlwaysDropout(nn.Module):
    """Dropout on the input even in eval mode: a randomised forward pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(nn.functional.dropout(x, p=0.2, training=True))


class Softmaxed(nn.Module):
    """Returns probabilities instead of logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


class RandomSearch(Attack):
    """Score-based random search over the corners of the L∞ ball (a minimal black-box attack)."""

    name = "test_random_search"
    black_box = True

    def __init__(self, model: nn.Module, *, queries: int = 20, **threat_kwargs: Any) -> None:
        self.queries = queries
        super().__init__(model, **threat_kwargs)

    def _run(self, ctx: AttackContext) -> None:
        act = ctx.active()
        x_in = logits = None
        for _ in range(self.queries):
            if len(act) == 0:
                return
            sign = torch.where(ctx.rand(act, *act.x.shape[1:]) < 0.5, -1.0, 1.0)
            x_adv = ctx.constrain(act, sign * act.eps.view(-1, *[1] * (act.x.ndim - 1)))
            x_in, logits, _, _ = ctx.evaluate(act, x_adv, need_grad=False)
            succ = ctx.record(act, x_in, logits)
            keep = (~succ).nonzero().squeeze(1)
            act, x_in, logits = act.select(keep), x_in[keep], logits[keep]
        if len(act):
            ctx.record_final(act, x_in, logits)


class NearestMean(nn.Module):
    """A fixed, untrained classifier: logits ``scale · (x·μ_c − ‖μ_c‖²/2)`` from the class means ``μ_c``
    of the synthetic training beats (nearest class mean). Deterministic without any training run, so that a
    card's numbers can be pinned."""

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        from medrobust.data import load_dataset

        train = load_dataset("synthetic", split="train", n_per_class=20, seed=0)
        x, y = train.x.double().flatten(1), train.y.long()
        mu = torch.stack([x[y == c].mean(0) for c in range(len(train.meta.classes))])
        self.register_buffer("w", (scale * mu).float())
        self.register_buffer("b", (-scale * 0.5 * (mu ** 2).sum(1)).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


class Constant(nn.Module):
    """A collapsed model: predicts class ``k`` for every input (logits barely depend on the input)."""

    def __init__(self, num_classes: int = 5, k: int = 0) -> None:
        super().__init__()
        bias = torch.zeros(num_classes)
        bias[k] = 5.0
        self.register_buffer("bias", bias)
        self.lin = nn.Linear(1, num_classes)
        with torch.no_grad():
            self.lin.weight.fill_(1e-3)
            self.lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias + self.lin(x.flatten(1).mean(1, keepdim=True))
