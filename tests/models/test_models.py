"""Seed beat models, kernel normalisation, registry and safe checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medrobust.errors import CheckpointError, ConfigError
from medrobust.models import CNN1, MLP1, available_models, build_model, load_checkpoint, read_card, save_checkpoint

ECG_MODELS = ["cnn1", "mlp1", "resnet1d"]


def test_paper_parameter_counts() -> None:
    # Ma & Liang 2020 (arXiv 2005.09134): CNN1 ≈ 54 k parameters, MLP1 ≈ 61.4 k.
    n_cnn = sum(p.numel() for p in CNN1().parameters())
    n_mlp = sum(p.numel() for p in MLP1().parameters())
    assert n_cnn == (32 * 5 + 32) + 10 * (32 * 32 * 5 + 32) + (64 * 32 + 32) + (32 * 5 + 5) == 53957
    assert n_mlp == (187 * 128 + 128) + 2 * (128 * 128 + 128) + (128 * 32 + 32) + (32 * 5 + 5) == 61381


@pytest.mark.parametrize("name", ECG_MODELS)
def test_forward_backward_shapes(name: str) -> None:
    model = build_model(name, in_channels=2, input_length=300, num_classes=4)
    x = torch.randn(3, 2, 300, requires_grad=True)
    out = model(x)
    assert out.shape == (3, 4)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_cnn1_length_check() -> None:
    with pytest.raises(ConfigError, match="too short"):
        build_model("cnn1", input_length=40)


def test_kernel_normalisation_rescales_units_without_changing_sign() -> None:
    model = build_model("cnn1", weight_norm=True)
    for layer in model.norm_layers():
        assert torch.allclose(layer.weight.flatten(1).norm(dim=1), torch.ones(layer.weight.shape[0]), atol=1e-5)
        assert torch.count_nonzero(layer.bias) == 0
    with torch.no_grad():
        model.conv0.weight.mul_(3.0)
        model.conv0.bias.fill_(0.6)
    x = torch.randn(2, 1, 187)
    pre = torch.relu(model.conv0(x))
    model.normalize_kernels()
    post = torch.relu(model.conv0(x))
    assert torch.allclose(model.conv0.weight.flatten(1).norm(dim=1), torch.ones(32), atol=1e-5)
    assert torch.allclose(model.conv0.bias, torch.full((32,), 0.2), atol=1e-5)
    assert torch.allclose(post, pre / 3.0, atol=1e-5)  # same unit, scaled by 1/norm


def test_bias_free_variant_has_no_bias() -> None:
    for name in ("cnn1", "mlp1"):
        model = build_model(name, bias=False)
        assert all(not n.endswith("bias") for n, _ in model.named_parameters())


def test_dead_unit_reinit() -> None:
    model = build_model("mlp1", weight_norm=True)
    acc = {"fc2": torch.ones_like(model.fc2.weight)}
    acc["fc2"][3] = 0.0
    before = model.fc2.weight.clone()
    assert model.reinit_dead_units(acc, generator=torch.Generator().manual_seed(1)) == 1
    changed = (model.fc2.weight != before).any(1)
    assert changed.tolist() == [i == 3 for i in range(128)]
    assert model.fc2.weight[3].norm().item() == pytest.approx(1.0, abs=1e-5)


def test_unknown_model_name() -> None:
    with pytest.raises(ConfigError, match="unknown model name 'cnn9'; available: .*cnn1"):
        build_model("cnn9")
    with pytest.raises(ConfigError, match="invalid arguments"):
        build_model("cnn1", depth=3)
    assert set(ECG_MODELS) <= set(available_models())


@pytest.mark.parametrize("name", ECG_MODELS)
def test_checkpoint_round_trip_gives_identical_logits(name: str, tmp_path: Path) -> None:
    model = build_model(name, in_channels=1, input_length=187, num_classes=5)
    model.train()
    for m in model.modules():  # make batch-norm running statistics non-trivial
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(6, 1, 187)
    save_checkpoint(model, tmp_path / "ck", classes="NSVFQ", fs=125.0, input_shape=(1, 187), units="mV",
                    training={"epochs": 3})
    loaded = load_checkpoint(tmp_path / "ck")
    assert not loaded.training
    assert torch.equal(model(x), loaded(x))
    card = read_card(tmp_path / "ck")
    assert card["architecture"] == name and card["classes"] == list("NSVFQ") and card["training"] == {"epochs": 3}
    assert loaded.card["input_shape"] == [1, 187]
    assert load_checkpoint(tmp_path / "ck" / "model.safetensors").card == {**card, "weights_verified": True}


def test_checkpoint_bad_input(tmp_path: Path) -> None:
    model = build_model("mlp1")
    ck = save_checkpoint(model, tmp_path / "ck", classes="NSVFQ", fs=125.0, input_shape=(1, 187))
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="architecture is unknown"):
        save_checkpoint(torch.nn.Linear(3, 2), tmp_path / "x", classes="ab", fs=1.0, input_shape=(3,))
    weights = ck / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or was replaced"):
        load_checkpoint(ck)
    weights.write_bytes(good)
    card = json.loads((ck / "card.json").read_text())
    card["kwargs"] = {"width": 64}
    (ck / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not fit architecture 'mlp1'"):
        load_checkpoint(ck)
    (ck / "card.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(ck)
    (ck / "card.json").unlink()
    with pytest.raises(CheckpointError, match="card missing"):
        load_checkpoint(ck)


def test_checkpoint_never_unpickles(tmp_path: Path) -> None:
    """A pickle file put in place of the weights is rejected, not executed."""
    model = build_model("mlp1")
    ck = save_checkpoint(model, tmp_path / "ck", classes="NSVFQ", fs=125.0, input_shape=(1, 187))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"x": Evil()}, ck / "model.safetensors")
    card = json.loads((ck / "card.json").read_text())
    card.pop("weights_sha256")
    (ck / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="records no weights_sha256"):
        load_checkpoint(ck)
    with pytest.warns(UserWarning, match="UNVERIFIED"), pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ck, trust_unverified=True)
    assert not marker.exists()
