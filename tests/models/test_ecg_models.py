"""Han et al.'s 13-layer CNN and Ma & Liang's 12-lead ResNet-18: the published structure, forward and
backward passes, masked pooling and checkpoint round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medrobust.errors import ConfigError
from medrobust.models import build_model, load_checkpoint, save_checkpoint
from medrobust.models.han_cnn import HAN_LAYERS, HanCNN
from medrobust.models.resnet18_12lead import ResNet18Lead12, pooled_mask


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_han_cnn_matches_the_published_table() -> None:
    model = HanCNN()
    convs = [b.conv for b in model.blocks]
    # Han et al. 2020 (Nat. Med.): channels, kernels, dilations and paddings of the 13 layers
    assert [(c.in_channels, c.out_channels) for c in convs] == [(i, o) for i, o, *_ in HAN_LAYERS]
    assert [c.kernel_size[0] for c in convs] == [24, 16, 16, 16, 16, 8, 8, 8, 8, 8, 8, 8, 8]
    assert [c.dilation[0] for c in convs] == [1, 2, 4, 4, 4, 4, 6, 6, 6, 6, 8, 8, 8]
    assert [c.padding[0] for c in convs] == [11, 15, 30, 30, 30, 14, 21, 21, 21, 21, 28, 28, 28]
    pooled = [i + 1 for i, b in enumerate(model.blocks) if isinstance(b.pool, nn.MaxPool1d)]
    assert pooled == [1, 6, 11]
    assert all(b.drop.p == 0.3 for b in model.blocks)
    by_hand = sum(i * o * k + o + 2 * o for i, o, k, _, _ in HAN_LAYERS) + 64 * 4 + 4  # conv + bias + BN
    assert _n_params(model) == by_hand == 5486916  # "≈ 5.49 M parameters"


def test_han_cnn_lengths_per_block() -> None:
    # the lengths do not depend on the width: check them on a thin copy
    model = HanCNN(width_scale=1 / 64).eval()
    h = torch.zeros(1, 1, 18000)
    lengths = []
    with torch.no_grad():
        for block in model.blocks:
            h = block(h)
            lengths.append(h.shape[-1])
    assert lengths == [9000] * 5 + [4500] * 5 + [2250] * 3
    with torch.no_grad():
        assert model.features(torch.zeros(1, 1, 9000)).shape[-1] == 1125  # Shao et al.'s 30 s input


def test_han_cnn_scaled_forward_backward_any_length() -> None:
    model = build_model("han_cnn", width_scale=1 / 16, length_scale=0.5, num_classes=4)
    assert [b.conv.kernel_size[0] for b in model.blocks][:3] == [12, 8, 8]
    assert model.blocks[1].conv.out_channels == 16 and model.head.in_features == 4
    for length in (2000, 1237):
        x = torch.randn(3, 1, length, requires_grad=True)
        out = model(x)
        assert out.shape == (3, 4)
        out.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(ConfigError, match="width_scale"):
        HanCNN(width_scale=0)


def test_resnet18_12lead_structure() -> None:
    model = ResNet18Lead12()
    gns = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert gns and all(g.num_groups == g.num_channels for g in gns)  # one group per channel
    assert model.stem_conv.kernel_size == (11,) and model.stem_conv.stride == (2,) and model.stem_conv.bias is None
    blocks = list(model.blocks)
    assert len(blocks) == 8 and all(b.conv1.stride == (2,) and b.short[0].stride == (2,) for b in blocks)
    assert [b.conv2.out_channels for b in blocks] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert model.final_conv.padding == (0,) and model.head.in_features == 512 and model.head.out_features == 9
    thin = ResNet18Lead12(width_scale=1 / 16).eval()
    with torch.no_grad():
        h = thin.features(torch.zeros(1, 8, 33792))
    assert h.shape == (1, 32, 31)  # 33,792 -> ... -> 33 -> 31 positions (Ma & Liang 2022, arXiv 2110.09759)
    assert pooled_mask(torch.ones(1, 1, 33792), 31).shape == (1, 31)


def test_resnet18_12lead_masked_pooling_by_hand() -> None:
    torch.manual_seed(0)
    model = ResNet18Lead12(in_channels=12, num_classes=5, width_scale=1 / 16).eval()
    x = torch.randn(2, 12, 6144)
    mask = torch.zeros(2, 1, 6144)
    mask[0, :, -3500:] = 1  # left-padded record
    mask[1] = 1
    with torch.no_grad():
        h = model.features(x * mask)  # (2, 32, 4): the padding is zeroed before the network
        m = torch.nn.functional.avg_pool1d(mask, 3072, 1024).flatten(1)
        assert m.shape == (2, h.shape[-1]) == (2, 4)
        m = torch.where(m < 0.5, torch.zeros_like(m), m)
        assert m[0, :2].tolist() == [0, 0] and m[0, -1] == 1 and 0.5 <= m[0, 2] < 1  # fractions kept
        expected = model.head((h * m[:, None]).sum(-1) / (m.sum(-1, keepdim=True) + 1e-8))
        masked, plain = model(x, mask), model(x)
        torch.testing.assert_close(masked, expected)
        torch.testing.assert_close(masked[1], plain[1])  # a full mask is the plain mean
        assert not torch.allclose(masked[0], plain[0])
    with pytest.raises(ConfigError, match="mask shape"):
        model(x, mask[:, :, :100])
    with pytest.raises(ConfigError, match=">= 3072"):
        model(torch.randn(1, 12, 2000))


def test_resnet18_12lead_forward_backward() -> None:
    model = build_model("resnet18_12lead", in_channels=8, num_classes=9, width_scale=1 / 16)
    x = torch.randn(2, 8, 4096, requires_grad=True)
    mask = torch.ones(2, 1, 4096)
    out = model(x, mask)
    assert out.shape == (2, 9)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("han_cnn", {"width_scale": 1 / 16, "length_scale": 0.5, "num_classes": 4}, (1, 2000)),
        ("resnet18_12lead", {"in_channels": 12, "num_classes": 7, "width_scale": 1 / 16}, (12, 3072)),
    ],
)
def test_checkpoint_round_trip(name: str, kwargs: dict, shape: tuple, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model(name, **kwargs)
    x = torch.randn(3, *shape)
    model.train()
    model(x)  # update batch-norm running statistics so the state is not the initial one
    model.eval()
    with torch.no_grad():
        before = model(x)
    save_checkpoint(model, tmp_path / name, classes=[str(i) for i in range(kwargs["num_classes"])], fs=150.0,
                    input_shape=shape, units="mV")
    loaded = load_checkpoint(tmp_path / name)
    assert type(loaded) is type(model) and not loaded.training and loaded.card["kwargs"] == kwargs
    with torch.no_grad():
        assert torch.equal(loaded(x), before)
