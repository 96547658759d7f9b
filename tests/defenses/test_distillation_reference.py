"""Defensive distillation (Papernot et al., IEEE S&P 2016) against hand computations on tiny linear models.

Stage 1 trains a teacher (a fresh initialisation of the student, seeded ``config.seed + 1``) on
``H(onehot(y), f(x)/T)``; stage 2 trains the student on ``H(softmax(teacher(x)/T), f(x)/T)``. Every loss here
is recomputed term by term in float64; the two-stage settings (generator, config, out_dir, names, recorded
hyper-parameters) are pinned, and the error messages are matched whole.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.defenses import DefensiveDistillation, soft_cross_entropy
from medrobust.defenses import distillation as dist
from medrobust.defenses.distillation import _StageTrainer, fresh_initialisation
from medrobust.errors import ConfigError
from medrobust.train import TrainConfig

from .conftest import Linear

K, D = 3, 4
W_T = torch.tensor([[0.5, -1.0, 0.25, 2.0], [-0.75, 0.5, 1.5, -0.5], [1.0, 0.0, -2.0, 0.5]], dtype=torch.float64)
W_S = torch.tensor([[0.2, 0.1, -0.3, 0.4], [0.0, -0.6, 0.7, 0.1], [-0.5, 0.3, 0.2, -0.2]], dtype=torch.float64)
X = torch.tensor([[[0.3, -0.2, 0.8, 0.1]], [[-0.5, 0.9, 0.0, 0.4]], [[1.0, 0.2, -0.7, -0.3]]], dtype=torch.float64)
MASK = torch.tensor([[[1.0, 1.0, 1.0, 0.0]], [[1.0, 1.0, 0.0, 0.0]], [[1.0, 1.0, 1.0, 1.0]]], dtype=torch.float64)


class MaskedLinear(Linear):
    """``W·flatten(x·mask)``: a linear model that takes the padding mask (like masked pooling)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x if mask is None else x * mask)


def _hand_softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def _hand_ce(z: list[float], q: list[float], t: float) -> float:
    """``−Σ_k q_k log softmax(z/T)_k`` written out."""
    lse = math.log(sum(math.exp(v / t) for v in z))
    return -sum(qk * (v / t - lse) for qk, v in zip(q, z))


def _logits(w: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> list[list[float]]:
    xm = x if mask is None else x * mask
    return [[sum(float(w[k, j]) * float(xm[i, 0, j]) for j in range(D)) for k in range(K)] for i in range(x.shape[0])]


def _data(n: int = 12, *, split: str = "train", seed: int = 0, d: int = D) -> ECGDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, d, generator=g)
    y = torch.arange(n) % K
    meta = DatasetMeta(name="tiny", fs=100.0, classes=("a", "b", "c"), units="mV", ids=np.arange(n), split=split)
    return ECGDataset(x, y, meta)


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=1, batch_size=4, max_batches_per_epoch=1, progress=False, patience=None)
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------------- soft cross-entropy
def test_soft_cross_entropy_every_reduction_by_hand() -> None:
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, -0.5]], dtype=torch.float64)
    q = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=torch.float64)
    per = [_hand_ce(z[i].tolist(), q[i].tolist(), 2.5) for i in range(2)]
    got = soft_cross_entropy(z, q, temperature=2.5, reduction="none")
    assert got.shape == (2,) and got.tolist() == pytest.approx(per, rel=1e-12)
    assert soft_cross_entropy(z, q, temperature=2.5).item() == pytest.approx(sum(per) / 2, rel=1e-12)
    assert soft_cross_entropy(z, q, temperature=2.5, reduction="sum").item() == pytest.approx(sum(per), rel=1e-12)
    assert soft_cross_entropy(z, q).item() == pytest.approx(sum(_hand_ce(z[i].tolist(), q[i].tolist(), 1.0)
                                                                for i in range(2)) / 2, rel=1e-12)


def test_soft_cross_entropy_class_axis_is_dim_1_like_cross_entropy() -> None:
    """(N, K, L) logits (per-position classes): the classes are dim 1, as in ``F.cross_entropy``."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    q = torch.softmax(torch.randn(2, 3, 5, generator=g, dtype=torch.float64), 1)
    ref = F.cross_entropy(z / 2.0, q, reduction="none")
    torch.testing.assert_close(soft_cross_entropy(z, q, temperature=2.0, reduction="none"), ref, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------- fresh initialisation
class _Net(nn.Module):
    """Two resettable layers under a root that has its own ``reset_parameters`` (which must not run)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(3, 2)
        self.root_resets = 0

    def reset_parameters(self) -> None:
        self.root_resets += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x.flatten(1)))


def test_fresh_initialisation_reseeds_every_child_layer_and_not_the_root() -> None:
    torch.manual_seed(0)
    net = _Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state = torch.random.get_rng_state()
    fresh, reset = fresh_initialisation(net, 7)
    assert reset is True and fresh is not net and fresh.root_resets == 0
    assert torch.equal(torch.random.get_rng_state(), state)  # the global stream is untouched
    for k, v in net.state_dict().items():  # the original keeps its weights
        assert torch.equal(v, before[k])
    torch.manual_seed(7)
    ref_a, ref_b = nn.Linear(4, 3), nn.Linear(3, 2)  # same draws, same order (a then b)
    torch.manual_seed(7)
    ref_a.reset_parameters()
    ref_b.reset_parameters()
    for name, ref in (("a", ref_a), ("b", ref_b)):
        assert torch.equal(getattr(fresh, name).weight, ref.weight)
        assert torch.equal(getattr(fresh, name).bias, ref.bias)
    again, _ = fresh_initialisation(net, 7)
    other, _ = fresh_initialisation(net, 8)
    assert torch.equal(again.a.weight, fresh.a.weight) and not torch.equal(other.a.weight, fresh.a.weight)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fresh_initialisation_leaves_the_cuda_rng_alone() -> None:
    torch.cuda.manual_seed(123)
    torch.rand(8, device="cuda")
    state = torch.cuda.get_rng_state()
    fresh_initialisation(_Net(), 7)
    assert torch.equal(torch.cuda.get_rng_state(), state)


def test_fresh_initialisation_without_resettable_layers_is_a_plain_copy() -> None:
    net = Linear(W_T.clone())
    fresh, reset = fresh_initialisation(net, 3)
    assert reset is False
    assert fresh is not net and torch.equal(fresh.weight, W_T)


class _UnitNet(nn.Module):
    """Ma & Liang's unit-norm layers: ``weight_norm`` and ``norm_layers()``."""

    def __init__(self, weight_norm: bool | None) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.out = nn.Linear(3, 3)
        if weight_norm is not None:
            self.weight_norm = weight_norm

    def norm_layers(self) -> list[nn.Module]:
        return [self.fc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(x.flatten(1)))


def test_fresh_initialisation_redraws_unit_norm_rows_from_the_seed() -> None:
    fresh, reset = fresh_initialisation(_UnitNet(True), 11)
    assert reset is True
    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(11))
    w = w / w.norm(dim=1, keepdim=True)
    torch.testing.assert_close(fresh.fc.weight.detach(), w, rtol=1e-6, atol=0)
    assert torch.equal(fresh.fc.bias, torch.zeros(3))
    torch.manual_seed(11)  # the unlisted layer keeps its seeded default reset
    ref_fc, ref_out = nn.Linear(4, 3), nn.Linear(3, 3)
    torch.manual_seed(11)
    ref_fc.reset_parameters()
    ref_out.reset_parameters()
    assert torch.equal(fresh.out.weight, ref_out.weight)


@pytest.mark.parametrize("flag", [False, None])
def test_fresh_initialisation_without_weight_norm_keeps_the_default_reset(flag: bool | None) -> None:
    fresh, _ = fresh_initialisation(_UnitNet(flag), 11)
    torch.manual_seed(11)
    ref = nn.Linear(4, 3)
    torch.manual_seed(11)
    ref.reset_parameters()
    assert torch.equal(fresh.fc.weight, ref.weight) and torch.equal(fresh.fc.bias, ref.bias)


class _FlagOnly(nn.Module):
    weight_norm = True  # no norm_layers(): nothing to re-draw

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)


def test_fresh_initialisation_weight_norm_flag_without_layers() -> None:
    fresh, reset = fresh_initialisation(_FlagOnly(), 2)
    assert reset is True and fresh.fc.weight.shape == (2, 4)


# ----------------------------------------------------------------------------------- construction
def test_settings_reach_the_base_trainer(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(99)
    cfg = _cfg(epochs=3, seed=4)
    d = DefensiveDistillation(MaskedLinear(W_S), cfg, out_dir=tmp_path / "o", generator=gen, temperature=5.0)
    assert d.generator is gen and d.out_dir == tmp_path / "o" and d.config.epochs == 3 and d.config.seed == 4
    assert d.name == "distillation" and d.temperature == 5.0 and d.teacher is None
    default = DefensiveDistillation(MaskedLinear(W_S), _cfg(seed=6))
    assert default.out_dir is None and default.temperature == 100.0 and default.soft_labels_train_mode is False
    assert torch.equal(default.generator.get_state(), torch.Generator().manual_seed(6).get_state())


def test_hyperparameters_pinned() -> None:
    d = DefensiveDistillation(MaskedLinear(W_S), _cfg())
    assert d.hyperparameters() == {"temperature": 100.0, "teacher": "trained in stage 1 from a fresh initialisation",
                                   "teacher_init": "fresh", "soft_labels_mode": "eval", "adversarial_teacher": False,
                                   "adversarial_student": False}
    g = DefensiveDistillation(MaskedLinear(W_S), _cfg(), temperature=2.0, teacher=MaskedLinear(W_T),
                              soft_labels_train_mode=True)
    assert g.hyperparameters() == {"temperature": 2.0, "teacher": "given (in-memory model)", "teacher_init": "fresh",
                                   "soft_labels_mode": "train", "adversarial_teacher": False,
                                   "adversarial_student": False}


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_temperature_must_be_positive(value: float) -> None:
    with pytest.raises(ConfigError, match=f"^temperature must be > 0.0, got {value}.$"):
        DefensiveDistillation(MaskedLinear(W_S), _cfg(), temperature=value)


def test_teacher_of_a_wrong_type_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^teacher must be None, a model or a checkpoint path, got int\.$"):
        DefensiveDistillation(MaskedLinear(W_S), _cfg(), teacher=3)


def test_teacher_from_a_checkpoint(tmp_path: Path) -> None:
    from medrobust.models import build_model
    from medrobust.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    teacher = build_model("mlp1")
    path = save_checkpoint(teacher, tmp_path / "t", classes=("N", "S", "V", "F", "Q"), fs=125.0, input_shape=(1, 187),
                           units="normalized [0, 1]")
    d = DefensiveDistillation(build_model("mlp1"), _cfg(), teacher=path)
    assert d.hyperparameters()["teacher"] == f"checkpoint {path}"
    for a, b in zip(d.teacher.state_dict().values(), teacher.state_dict().values()):
        assert torch.equal(a, b)


def test_no_teacher_errors_are_whole_messages() -> None:
    d = DefensiveDistillation(MaskedLinear(W_S), _cfg())
    with pytest.raises(ConfigError, match=r"^no teacher yet: call fit\(\) \(which trains one\) or pass teacher=\.$"):
        d.soft_labels(X)
    with pytest.raises(ConfigError, match=re.escape("the teacher is trained inside fit(train, val); call fit or "
                                                    "pass teacher=.") + "$"):
        d.prepare(_data())
    with pytest.raises(NotImplementedError, match="^DefensiveDistillation has no training adversary.$"):
        d._adversarial(d.model, X, X, None)


# ----------------------------------------------------------------------------------- soft labels and losses
@pytest.mark.parametrize("train_mode", [False, True])
def test_soft_labels_by_hand_with_the_mask(train_mode: bool) -> None:
    teacher = MaskedLinear(W_T)
    d = DefensiveDistillation(MaskedLinear(W_S), _cfg(), temperature=3.0, teacher=teacher,
                              soft_labels_train_mode=train_mode)
    q = d.soft_labels(X, MASK)
    assert teacher.training is train_mode and not q.requires_grad
    hand = [_hand_softmax(z, 3.0) for z in _logits(W_T, X, MASK)]
    torch.testing.assert_close(q, torch.tensor(hand, dtype=torch.float64), rtol=1e-12, atol=0)


class _SeqTeacher(nn.Module):
    """(N, K, L) logits: the classes are dim 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0], 2 * x[:, 0], -x[:, 0]], 1)


def test_soft_labels_class_axis_is_dim_1() -> None:
    d = DefensiveDistillation(MaskedLinear(W_S), _cfg(), temperature=2.0, teacher=_SeqTeacher())
    q = d.soft_labels(X)
    assert q.shape == (3, 3, 4)
    torch.testing.assert_close(q.sum(1), torch.ones(3, 4, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_student_loss_by_hand_with_the_mask() -> None:
    """Stage 2: ``H(softmax(t(x)/T), s(x)/T)`` with the mask reaching both models; the logits are ``s(x)``."""
    d = DefensiveDistillation(MaskedLinear(W_S), _cfg(), temperature=4.0, teacher=MaskedLinear(W_T))
    loss, logits = d.compute_loss(X, torch.tensor([0, 1, 2]), MASK)
    zs, zt = _logits(W_S, X, MASK), _logits(W_T, X, MASK)
    hand = sum(_hand_ce(s, _hand_softmax(t, 4.0), 4.0) for s, t in zip(zs, zt)) / 3
    assert loss.item() == pytest.approx(hand, rel=1e-12)
    torch.testing.assert_close(logits, torch.tensor(zs, dtype=torch.float64), rtol=1e-12, atol=1e-15)
    loss.backward()
    assert d.model.weight.grad is not None


class _Adversarial(DefensiveDistillation):
    """A test subclass with a known adversary ``x + δ`` (as ADT's): records what it is given."""

    adversarial_teacher = True
    adversarial_student = True
    delta = torch.tensor([0.1, -0.2, 0.05, 0.3], dtype=torch.float64).view(1, 1, D)

    def _adversarial(self, model, x, q, mask):
        self.calls.append((model, q.clone(), None if mask is None else mask.clone()))
        return x + self.delta.to(x.dtype)

    calls: list


def test_adversarial_student_loss_is_the_mean_of_both_terms_by_hand() -> None:
    d = _Adversarial(MaskedLinear(W_S), _cfg(), temperature=2.0, teacher=MaskedLinear(W_T))
    d.calls = []
    loss, logits = d.compute_loss(X, torch.tensor([0, 1, 2]), MASK)
    q = [_hand_softmax(t, 2.0) for t in _logits(W_T, X, MASK)]
    clean = sum(_hand_ce(s, qi, 2.0) for s, qi in zip(_logits(W_S, X, MASK), q)) / 3
    adv = sum(_hand_ce(s, qi, 2.0) for s, qi in zip(_logits(W_S, X + d.delta, MASK), q)) / 3
    assert loss.item() == pytest.approx(0.5 * (clean + adv), rel=1e-12)
    torch.testing.assert_close(logits, torch.tensor(_logits(W_S, X, MASK), dtype=torch.float64), rtol=1e-12,
                               atol=1e-15)
    (model, q_seen, mask_seen), = d.calls
    assert model is d.model and torch.equal(mask_seen, MASK)
    torch.testing.assert_close(q_seen, torch.tensor(q, dtype=torch.float64), rtol=1e-12, atol=0)
    assert d.hyperparameters()["adversarial_teacher"] is True and d.hyperparameters()["adversarial_student"] is True


# ----------------------------------------------------------------------------------- stage 1
def test_stage_trainer_passes_settings_and_the_mask(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    seen = []

    def loss_fn(x, y, mask):
        seen.append(mask)
        return x.sum(), x

    st = _StageTrainer(MaskedLinear(W_S), _cfg(epochs=2), out_dir=tmp_path, generator=gen, loss_fn=loss_fn,
                       name="n-teacher", hp={"a": 1})
    assert st.generator is gen and st.name == "n-teacher" and st.hyperparameters() == {"a": 1}
    assert st.out_dir == tmp_path and st.config.epochs == 2
    st.compute_loss(X, torch.tensor([0, 1, 2]), MASK)
    assert seen[0] is MASK


@pytest.fixture()
def stages(monkeypatch):
    """Records every stage-1 trainer at the start of its fit (initial weights, settings) and its result."""
    rec: list[dict] = []
    orig = _StageTrainer.fit

    def fit(self, train, val):
        entry = {"stage": self, "init": {k: v.clone() for k, v in self.model.state_dict().items()}}
        rec.append(entry)
        entry["result"] = orig(self, train, val)
        return entry["result"]

    monkeypatch.setattr(_StageTrainer, "fit", fit)
    return rec


@pytest.mark.filterwarnings("ignore:distillation-teacher. degenerate model")
def test_train_teacher_settings_and_record(stages, tmp_path: Path) -> None:
    from medrobust.models import build_model

    torch.manual_seed(0)
    student = build_model("mlp1", num_classes=3)  # a checkpointable architecture
    gen = torch.Generator().manual_seed(5)
    d = DefensiveDistillation(student, _cfg(seed=3, epochs=2), out_dir=tmp_path, generator=gen, temperature=2.0)
    teacher = d.train_teacher(_data(10, d=187), _data(6, split="val", seed=1, d=187))
    (e,) = stages
    st, result = e["stage"], e["result"]
    ref, _ = fresh_initialisation(student, 4)  # seeded config.seed + 1
    for k, v in ref.state_dict().items():
        assert torch.equal(e["init"][k], v)
    assert teacher is st.model and teacher is not student
    assert st.generator is gen and st.name == "distillation-teacher" and st.out_dir == tmp_path / "teacher"
    assert st.config == d.config and st.config is not d.config
    assert st.hyperparameters() == {"temperature": 2.0, "adversarial": False}
    assert d.teacher_result == {"best_epoch": result.best_epoch, "epochs_run": 2, "seconds": result.seconds,
                                "val_accuracy": result.best_metrics["accuracy"], "degenerate": result.degenerate,
                                "checkpoint": str(tmp_path / "teacher" / "checkpoint")}
    assert d.teacher_result["val_accuracy"] is not None
    assert d.hyperparameters()["teacher"] == "trained in stage 1 from a fresh initialisation"


@pytest.mark.filterwarnings("ignore:distillation-teacher. degenerate model")
def test_teacher_init_student_starts_stage_1_from_a_copy_of_the_students_weights(stages) -> None:
    """Fine-tuning (``teacher_init="student"``): the teacher starts from the student's weights at fit time, not
    from a fresh draw, and is a separate network (training it leaves the student's weights alone)."""
    from medrobust.models import build_model

    torch.manual_seed(0)
    student = build_model("mlp1", num_classes=3)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    d = DefensiveDistillation(student, _cfg(seed=3), temperature=2.0, teacher_init="student")
    assert d.hyperparameters()["teacher"] == "trained in stage 1 from a copy of the student's starting weights"
    assert d.hyperparameters()["teacher_init"] == "student"
    teacher = d.train_teacher(_data(10, d=187), _data(6, split="val", seed=1, d=187))
    fresh, _ = fresh_initialisation(student, 4)
    for k, v in before.items():
        assert torch.equal(stages[0]["init"][k], v)
        assert torch.equal(student.state_dict()[k], v)  # the student itself is not trained in stage 1
    assert any(not torch.equal(stages[0]["init"][k], v) for k, v in fresh.state_dict().items())
    assert teacher is not student
    assert any(not torch.equal(teacher.state_dict()[k], v) for k, v in before.items())  # the copy was trained
    assert d.teacher_source == "trained in stage 1 from a copy of the student's starting weights"


def test_teacher_init_is_checked_and_exclusive_with_a_given_teacher() -> None:
    with pytest.raises(ConfigError, match=r"^teacher_init must be one of \('fresh', 'student'\), got 'copy'\.$"):
        DefensiveDistillation(MaskedLinear(W_S), _cfg(), teacher_init="copy")
    with pytest.raises(ConfigError, match=r"^teacher_init='student' sets how stage 1 starts; a given teacher= "
                                          r"skips stage 1: pass one of the two\.$"):
        DefensiveDistillation(MaskedLinear(W_S), _cfg(), teacher=MaskedLinear(W_T), teacher_init="student")


def test_train_teacher_without_out_dir_and_without_resettable_layers(stages) -> None:
    d = DefensiveDistillation(MaskedLinear(W_S.float()), _cfg())
    d.train_teacher(_data(), _data(6, split="val", seed=1))
    assert stages[0]["stage"].out_dir is None and d.teacher_result["checkpoint"] is None
    assert torch.equal(stages[0]["init"]["weight"], W_S.float())
    assert d.teacher_source == "trained in stage 1 from the student's initial weights (no resettable layers)"


def test_teacher_loss_is_soft_ce_on_one_hot_labels_by_hand(stages) -> None:
    """Stage 1's loss: ``H(onehot(y), f(x)/T)`` with K = the dataset's classes (also when the batch lacks one)."""
    d = _Adversarial(MaskedLinear(W_S.float()), _cfg(), temperature=2.0)
    d.calls = []
    d.train_teacher(_data(), _data(6, split="val", seed=1))
    st = stages[0]["stage"]
    st.model.weight = nn.Parameter(W_T.clone())  # float64 for the comparison by hand
    d.calls = []
    y = torch.tensor([0, 1, 0])  # class 2 absent from the batch
    loss, logits = st.compute_loss(X, y, MASK)
    clean = sum(_hand_ce(z, [1.0 if k == yi else 0.0 for k in range(K)], 2.0)
                for z, yi in zip(_logits(W_T, X, MASK), y.tolist())) / 3
    adv = sum(_hand_ce(z, [1.0 if k == yi else 0.0 for k in range(K)], 2.0)
              for z, yi in zip(_logits(W_T, X + d.delta, MASK), y.tolist())) / 3
    assert loss.item() == pytest.approx(0.5 * (clean + adv), rel=1e-12)
    (model, q_seen, mask_seen), = d.calls
    assert model is st.model and torch.equal(mask_seen, MASK)
    assert torch.equal(q_seen, F.one_hot(y, K).double())
    assert st.hyperparameters() == {"temperature": 2.0, "adversarial": True}


@pytest.mark.filterwarnings("ignore:distillation-teacher. degenerate model")
def test_fit_trains_the_teacher_then_freezes_it(stages) -> None:
    d = DefensiveDistillation(_UnitNet(None), _cfg(), temperature=2.0)
    train = _data()
    d.fit(train, _data(6, split="val", seed=1))
    assert d.teacher is stages[0]["stage"].model
    assert all(not p.requires_grad for p in d.teacher.parameters())
    assert d.hyperparameters()["teacher_training"] == d.teacher_result
    d.teacher = None  # the validation set is released after fit
    with pytest.raises(ConfigError, match=re.escape("the teacher is trained inside fit(train, val)")):
        d.prepare(train)


def test_prepare_moves_the_teacher_to_the_device_and_freezes_it() -> None:
    teacher = MaskedLinear(W_T)
    d = DefensiveDistillation(MaskedLinear(W_S), _cfg(device="meta"), teacher=teacher)
    d.prepare(_data())
    assert d.teacher.weight.device.type == "meta"
    assert all(not p.requires_grad for p in d.teacher.parameters())
    assert "teacher_training" not in d.hyperparameters()


def test_module_exports() -> None:
    assert dist.DefensiveDistillation is DefensiveDistillation


def test_resuming_is_refused_before_the_teacher_is_trained(tmp_path: Path) -> None:
    d = DefensiveDistillation(MaskedLinear(W_S), _cfg(), out_dir=tmp_path / "o")
    d.resume = True
    with pytest.raises(ConfigError, match=r"^defence 'distillation' cannot resume an interrupted training yet "):
        d.fit(_data(), _data(split="val", seed=1))
    assert d.teacher is None and not (tmp_path / "o").exists()        # nothing trained, nothing written
