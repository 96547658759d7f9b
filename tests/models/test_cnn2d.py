"""cnn2d: the small image CNN (core torch only): shapes, normalisation inside, size-independence, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medrobust.errors import ConfigError
from medrobust.models import build_model
from medrobust.models.cnn2d import CNN2d


def _pair(**kw: object) -> tuple[CNN2d, CNN2d]:
    torch.manual_seed(0)
    a = CNN2d(**kw).eval()  # type: ignore[arg-type]
    b = CNN2d(**{**kw, "mean": 0.0, "std": 1.0}).eval()  # type: ignore[arg-type]
    b.load_state_dict(a.state_dict())
    return a, b


def test_registered_and_shapes() -> None:
    m = build_model("cnn2d", in_channels=3, num_classes=4, input_size=[28, 28]).eval()
    assert m.medrobust_arch == {"name": "cnn2d", "kwargs": {"in_channels": 3, "num_classes": 4, "input_size": [28, 28]}}
    for hw in [(28, 28), (64, 64), (32, 40), (4, 4)]:
        assert m(torch.rand(2, 3, *hw)).shape == (2, 4)
    assert m.input_size == (28, 28)


def test_parameter_count_follows_width_and_hidden() -> None:
    w, h, c, k = 8, 16, 1, 3
    m = CNN2d(in_channels=c, num_classes=k, width=w, hidden=h)
    conv = (c * 9 + 1) * w + 2 * w + (w * 9 + 1) * 2 * w + 2 * 2 * w
    head = (2 * w * 49 + 1) * h + (h + 1) * k
    assert sum(p.numel() for p in m.parameters()) == conv + head


def test_normalisation_is_inside_the_model() -> None:
    a, b = _pair(in_channels=1, mean=0.25, std=0.5)
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(a(x), b((x - 0.25) / 0.5), atol=1e-5)
    assert not torch.allclose(a(x), b(x), atol=1e-3)


def test_per_channel_statistics() -> None:
    a, b = _pair(in_channels=3, mean=[0.1, 0.2, 0.3], std=[0.5, 1.0, 2.0])
    x = torch.rand(2, 3, 28, 28)
    ref = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1)
    assert torch.allclose(a(x), b(ref), atol=1e-5)


def test_statistics_are_not_saved_in_the_state_dict() -> None:
    keys = set(CNN2d().state_dict())
    assert "mean" not in keys and "std" not in keys


def test_gradients_reach_the_input() -> None:
    m = CNN2d().eval()
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"in_channels": 0}, r"in_channels must be an integer >= 1"),
    ({"num_classes": True}, r"num_classes must be an integer >= 1"),
    ({"width": 0}, r"width must be an integer >= 1"),
    ({"hidden": 1.5}, r"hidden must be an integer >= 1"),
    ({"input_size": 3}, r"input_size must be an integer >= 4"),
    ({"input_size": [28]}, r"input_size must be an int or \(height, width\)"),
    ({"input_size": "28"}, r"input_size must be an int or \(height, width\)"),
    ({"std": 0.0}, r"std must be finite and positive"),
    ({"mean": float("nan")}, r"mean must be finite, got nan"),
    ({"in_channels": 3, "mean": [0.5, 0.5]}, r"mean must be a number or 3 numbers"),
    ({"std": True}, r"std must be a number or 1 numbers"),
])
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CNN2d(**kwargs)  # type: ignore[arg-type]


def test_bad_inputs_give_one_clear_line() -> None:
    m = CNN2d(in_channels=1)
    with pytest.raises(ConfigError, match=r"expects images \(batch, 1, H, W\), got \(2, 3, 28, 28\)"):
        m(torch.rand(2, 3, 28, 28))
    with pytest.raises(ConfigError, match=r"expects images .* got \(1, 28, 28\)"):
        m(torch.rand(1, 28, 28))
    with pytest.raises(ConfigError, match=r"at least 4x4 pixels, got \(3, 28\)"):
        m(torch.rand(1, 1, 3, 28))
    assert m.eval()(torch.rand(1, 1, 4, 4)).shape == (1, 2)


def test_train_cli_builds_an_image_model_from_the_data_shape(shared_data: Path, tmp_path: Path) -> None:
    """`medrobust train` passes (channels, H, W) as in_channels + input_size (image models have no input_length)."""
    from medrobust.cli.main import main
    from medrobust.models import load_checkpoint

    out = tmp_path / "run"
    assert main(["train", "--dataset", "medmnist", "--data-dir", str(shared_data), "--option", "flag=breastmnist",
                 "--model", "cnn2d", "--model-option", "width=4", "--model-option", "hidden=8", "--epochs", "1",
                 "--no-progress", "--threads", "1", "--out", str(out)]) == 0
    ck = load_checkpoint(out / "checkpoint")
    assert ck.card["architecture"] == "cnn2d"
    assert ck.card["kwargs"] == {"in_channels": 1, "input_size": [28, 28], "num_classes": 2,
                                         "width": 4, "hidden": 8}
    assert json.loads((out / "summary.json").read_text())["config"]["model"]["name"] == "cnn2d"
