"""What ``evaluate(precision="bf16")`` uses: bf16 when the check passes, float32 (and a warning) when not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.errors import ConfigError
from medrobust.evaluation import ProtocolConfig, evaluate

FAST = {"large_eps_check": False, "n_examples": 0, "batch_size": 32}
PGD = {"name": "pgd", "steps": 4, "random_start": False}


def test_evaluate_in_bf16_when_the_check_passes(tiny_model: nn.Module, beats: Any, tmp_path: Path) -> None:
    cfg = ProtocolConfig(attacks=[PGD], eps=(0.02, 0.05, 0.1), **FAST)
    full = evaluate(tiny_model, beats, cfg, progress=False)
    low = evaluate(tiny_model, beats, cfg, progress=False, precision="bf16", out_dir=tmp_path / "bf16")
    p = low["precision"]
    assert p["requested"] == p["used"] == "bf16" and p["check"]["within"] and p["check"]["eps"] == 0.05
    assert p["check"]["n"] == len(beats) and p["check"]["attack"] == "pgd"
    assert "precision" not in full
    ra = lambda c: [r["robust_accuracy"]["value"] for r in c["results"]]  # noqa: E731
    assert np.allclose(ra(low), ra(full), atol=0.05)
    with pytest.raises(ConfigError):         # a float32 state is never continued in bf16 (nor the reverse)
        evaluate(tiny_model, beats, cfg, progress=False, out_dir=tmp_path / "bf16")


class Fragile(nn.Module):
    """Class 0 iff mean(x) > t, from two logits near 256 that differ by less than 1: bf16 (spacing 2 at 256)
    rounds both to 256, a tie that argmax gives to class 0, so every class-1 decision changes."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.lin = nn.Linear(187, 5)
        with torch.no_grad():
            self.lin.weight.zero_()
            self.lin.weight[0].fill_(1 / 187)
            self.lin.bias.copy_(torch.tensor([256.0 - t, 256.0, -1e3, -1e3, -1e3]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def test_a_model_that_bf16_changes_is_evaluated_in_float32(beats: Any) -> None:
    model = Fragile(float(beats.x.mean((1, 2)).median())).eval()
    cfg = ProtocolConfig(attacks=[PGD], eps=(0.001, 0.003, 0.01), **FAST)
    with pytest.warns(RuntimeWarning, match=r"precision='bf16' changed robust accuracy by .* evaluating in float32"):
        low = evaluate(model, beats, cfg, progress=False, precision="bf16")
    full = evaluate(model, beats, cfg, progress=False)
    assert low["precision"]["used"] == "fp32" and not low["precision"]["check"]["within"]
    assert abs(low["precision"]["check"]["difference_pp"]) > 0.5
    assert [r["robust_accuracy"] for r in low["results"]] == [r["robust_accuracy"] for r in full["results"]]


def test_bad_runtime_options_are_refused_before_any_work(tiny_model: nn.Module, beats: Any) -> None:
    cfg = ProtocolConfig(attacks=[PGD], eps=(0.05,), **FAST)
    with pytest.raises(ConfigError, match="precision must be one of"):
        evaluate(tiny_model, beats, cfg, progress=False, precision="fp16")
    with pytest.raises(ConfigError, match="fast_path='cuda_graph' needs CUDA inputs"):
        evaluate(tiny_model, beats, cfg, progress=False, fast_path="cuda_graph")
