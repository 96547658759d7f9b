"""torchvision image architectures: small-input adaptations, gradients, checkpoints, missing torchvision."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

from medrobust.errors import ConfigError
from medrobust.models import available_models, build_model, load_checkpoint, save_checkpoint

ARCHS = ["resnet18", "resnet50", "vgg16", "vgg19", "densenet121", "densenet169", "mobilenet_v2", "inception_v3"]


def test_names_registered_and_clear_error_without_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(ARCHS) <= set(available_models())
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision...` fail
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    for name in ("resnet18", "inception_v3"):
        with pytest.raises(ConfigError, match=r"medrobust\[images\]"):
            build_model(name)


@pytest.fixture(scope="module")
def tv() -> Iterator[object]:
    """torchvision (skip without it); the tests run on one intra-op thread (tests/conftest.py)."""
    yield pytest.importorskip("torchvision")


@pytest.mark.images
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward_and_checkpoint_round_trip(tv: object, arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(arch, in_channels=1, num_classes=3, input_size=28)
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    model.train()
    logits = model(x)
    assert logits.shape == (2, 3)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    first = next(p for p in model.parameters() if p.ndim == 4)
    assert first.shape[1] == 1  # the stem takes one channel
    assert first.grad is not None and torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0  # input gradients for attacks
    model.eval()
    probe = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        before = model(probe)
    ckpt = save_checkpoint(model, tmp_path / arch, classes=["a", "b", "c"], fs=0.0, input_shape=(1, 28, 28),
                           units="intensity [0, 1]")
    loaded = load_checkpoint(ckpt)
    assert loaded.card["architecture"] == arch and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(probe), before)


@pytest.mark.images
def test_small_input_stems(tv: object) -> None:
    r = build_model("resnet18", input_size=28)
    assert r.net.conv1.kernel_size == (3, 3) and r.net.conv1.stride == (1, 1)
    assert isinstance(r.net.maxpool, torch.nn.Identity)
    seen: dict[str, tuple[int, ...]] = {}
    r.net.layer1.register_forward_hook(lambda m, i, o: seen.__setitem__("layer1", tuple(o.shape)))
    r.eval()(torch.rand(1, 1, 28, 28))
    assert seen["layer1"][-2:] == (28, 28)  # no early downsampling
    big = build_model("resnet18", in_channels=3, input_size=224)
    assert big.net.conv1.kernel_size == (7, 7) and big.net.conv1.stride == (2, 2) and big.net.conv1.in_channels == 3
    assert isinstance(big.net.maxpool, torch.nn.MaxPool2d)
    v = build_model("vgg16", input_size=28)
    assert all(m.ceil_mode for m in v.net.features if isinstance(m, torch.nn.MaxPool2d))
    assert isinstance(v.net.classifier, torch.nn.Linear) and v.net.classifier.in_features == 512
    m = build_model("mobilenet_v2", input_size=28)
    m.net.features.register_forward_hook(lambda mod, i, o: seen.__setitem__("mobilenet", tuple(o.shape)))
    m.eval()(torch.rand(1, 1, 28, 28))
    assert seen["mobilenet"][-2:] == (4, 4)  # overall stride 8 instead of 32
    d = build_model("densenet121", input_size=28)
    assert d.net.features.conv0.stride == (1, 1) and isinstance(d.net.features.pool0, torch.nn.Identity)


@pytest.mark.images
def test_inception_upsamples_small_inputs_to_75(tv: object) -> None:
    model = build_model("inception_v3", in_channels=1, num_classes=2).eval()
    seen: list[tuple[int, ...]] = []
    model.net.Conv2d_1a_3x3.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    model(torch.rand(2, 1, 28, 28))
    assert seen[-1] == (2, 1, 75, 75)
    model(torch.rand(1, 1, 80, 90))
    assert seen[-1] == (1, 1, 80, 90)  # large enough: unchanged


@pytest.mark.images
def test_in_model_scaling_and_channel_mismatch(tv: object) -> None:
    model = build_model("resnet18", in_channels=3, num_classes=4, mean=[0.2, 0.3, 0.4], std=0.25).eval()
    x = torch.rand(2, 3, 28, 28)
    mean = torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model.net((x - mean) / 0.25))
    with pytest.raises(ConfigError, match="Grayscale/RGB mismatch"):
        model(torch.rand(2, 1, 28, 28))
    with pytest.raises(ConfigError, match="expects images"):
        model(torch.rand(3, 28, 28))
    with pytest.raises(ConfigError, match="in_channels"):
        build_model("vgg16", in_channels=2)
    with pytest.raises(ConfigError, match="mean"):
        build_model("resnet18", in_channels=3, mean=[0.5, 0.5])
    with pytest.raises(ConfigError, match="invalid arguments"):
        build_model("inception_v3", small_input=True)


@pytest.mark.images
def test_checkpoint_keeps_kwargs_of_rgb_large_input(tv: object, tmp_path: Path) -> None:
    model = build_model("densenet121", in_channels=3, num_classes=2, input_size=[64, 96], small_input=False).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        before = model(x)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "d", classes=["a", "b"], fs=0.0, input_shape=(3, 64, 96)))
    assert loaded.card["kwargs"]["small_input"] is False and loaded.net.features.conv0.stride == (2, 2)
    with torch.no_grad():
        assert torch.equal(loaded(x), before)
