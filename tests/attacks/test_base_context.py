"""Attack template and context pieces that the query-based attacks rely on: the completed ``__init__``
signatures, ``AttackContext.randint`` (per-sample streams), ``forward`` (the owners' padding masks) and
``clip`` (the bounds)."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from medrobust.attacks import PGD, Attack, AttackContext, Boundary, Square
from medrobust.attacks.base import _MASK63, stream_keys
from medrobust.attacks.losses import get_loss
from medrobust.attacks.threat import ThreatModel

SHARED = ["eps", "norm", "eps_mode", "bounds", "mask", "threat", "loss", "generator", "units"]


def test_signatures_list_own_then_shared_arguments_with_the_class_loss() -> None:
    base = inspect.signature(Attack.__init__).parameters
    for cls, own in ((Square, ["steps", "p_init", "early_stop", "max_redraws"]), (PGD, None), (Boundary, None)):
        params = inspect.signature(cls.__init__).parameters
        names = list(params)
        assert names[:2] == ["self", "model"] and names[-len(SHARED):] == SHARED
        assert not any(p.kind == p.VAR_KEYWORD for p in params.values())
        assert cls.own_parameters() == names[2:-len(SHARED)]
        if own is not None:
            assert cls.own_parameters() == own
        assert params["loss"].default == cls.default_loss
        for name in SHARED:
            if name != "loss":
                assert params[name].default is base[name].default
                assert params[name].kind == inspect.Parameter.KEYWORD_ONLY
    assert inspect.signature(Square.__init__).parameters["loss"].default == "margin"
    assert inspect.signature(PGD.__init__).parameters["loss"].default == "ce"


def test_subclass_signatures_with_and_without_threat_kwargs() -> None:
    class Fixed(Attack):
        name = "fixed"

        def __init__(self, model: Any, *, k: int = 1) -> None:
            self.k = k
            super().__init__(model, eps=1.0)

        def _run(self, ctx: AttackContext) -> None:
            pass

    class Open(Attack):
        name = "open"
        default_loss = "margin"

        def __init__(self, model: Any, *, k: int = 1, **threat_kwargs: Any) -> None:
            self.k = k
            super().__init__(model, **threat_kwargs)

        def _run(self, ctx: AttackContext) -> None:
            pass

    class Deeper(Open):
        def __init__(self, model: Any, *, k: int = 2, j: int = 3, **threat_kwargs: Any) -> None:
            self.j = j
            super().__init__(model, k=k, **threat_kwargs)

    assert list(inspect.signature(Fixed.__init__).parameters) == ["self", "model", "k"]
    assert Fixed.own_parameters() == ["k"]
    assert list(inspect.signature(Open.__init__).parameters) == ["self", "model", "k", *SHARED]
    assert list(inspect.signature(Deeper.__init__).parameters) == ["self", "model", "k", "j", *SHARED]
    assert inspect.signature(Deeper.__init__).parameters["k"].default == 2
    assert inspect.signature(Deeper.__init__).parameters["loss"].default == "margin"
    base = inspect.signature(Attack.__init__).parameters
    for cls in (Open, Deeper):
        params = inspect.signature(cls.__init__).parameters
        assert all(params[n].default is base[n].default for n in SHARED if n != "loss")  # only loss is replaced
    assert Deeper.own_parameters() == ["k", "j"]
    hp = Deeper(torch.nn.Identity(), eps=1.0).hyperparameters()
    assert hp == {"k": 2, "j": 3, "loss": "margin"}


class MaskModel(torch.nn.Module):
    """Takes ``mask=``; records every mask it is given; logits from the masked sum."""

    def __init__(self) -> None:
        super().__init__()
        self.masks: list[torch.Tensor | None] = []

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.masks.append(None if mask is None else mask.clone())
        s = (x * (1 if mask is None else mask)).flatten(1).sum(1)
        return torch.stack([s, -s], 1)


def _ctx(model: torch.nn.Module, x: torch.Tensor, *, model_mask: torch.Tensor | None = None,
         bounds: tuple[torch.Tensor, torch.Tensor] | None = None, sample_ids: torch.Tensor | None = None
         ) -> AttackContext:
    z = torch.stack([x.flatten(1).sum(1), -x.flatten(1).sum(1)], 1)
    return AttackContext(model=model, threat=ThreatModel(eps=1.0), x=x, y=torch.zeros(len(x), dtype=torch.long),
                         target=None, eps=torch.ones(len(x), dtype=x.dtype), mask=None, bounds=bounds,
                         loss_fn=get_loss("margin"), clean_logits=z, generator=torch.Generator().manual_seed(7),
                         model_mask=model_mask, sample_ids=sample_ids)


def test_randint_draws_each_samples_integers_from_its_own_stream() -> None:
    x = torch.zeros(5, 1, 3)
    ids = torch.tensor([4, 10, 2, 7, 3])
    ctx = _ctx(MaskModel(), x, sample_ids=ids)
    act = ctx.active().select(torch.tensor([0, 2, 3]))
    ctx.rand(act)  # advances the draw counters of the active samples to 1
    got = ctx.randint(act, 6, 40)
    assert got.shape == (3, 40) and got.dtype == torch.int64
    keys = stream_keys(ctx.seed, ids[[0, 2, 3]], torch.ones(3, dtype=torch.int64)).tolist()
    for row, key in zip(got, keys):
        want = torch.empty(40, dtype=torch.int64).random_(0, 6, generator=torch.Generator().manual_seed(key & _MASK63))
        assert torch.equal(row, want)
    assert int(got.min()) == 0 and int(got.max()) == 5
    one = ctx.randint(act, 3)
    assert one.shape == (3,) and set(one.tolist()) <= {0, 1, 2}


def test_randn_draws_each_samples_normals_from_its_own_stream() -> None:
    for dtype in (torch.float64, torch.float32):
        x = torch.zeros(4, 1, 3, dtype=dtype)
        ids = torch.tensor([9, 1, 5, 3])
        ctx = _ctx(MaskModel(), x, sample_ids=ids)
        act = ctx.active().select(torch.tensor([1, 3]))
        got = ctx.randn(act, 2, 30)
        assert got.shape == (2, 2, 30) and got.dtype == dtype
        keys = stream_keys(ctx.seed, ids[[1, 3]], torch.zeros(2, dtype=torch.int64)).tolist()
        for row, key in zip(got, keys):
            g = torch.Generator().manual_seed(key & _MASK63)
            want = torch.empty(2, 30, dtype=dtype).normal_(0.0, 1.0, generator=g)
            assert torch.equal(row, want)
        assert abs(float(got.mean())) < 0.5 and 0.5 < float(got.std()) < 1.5


def test_forward_hands_each_row_its_owners_padding_mask() -> None:
    x = torch.ones(3, 1, 4)
    per = torch.tensor([[[1.0, 1, 0, 0]], [[1.0, 1, 1, 0]], [[1.0, 1, 1, 1]]])
    model = MaskModel()
    ctx = _ctx(model, x, model_mask=per)
    z = ctx.forward(torch.ones(4, 1, 4), torch.tensor([2, 0, 0, 1]))
    assert torch.equal(model.masks[-1], per[[2, 0, 0, 1]])
    assert z[:, 0].tolist() == [4.0, 2.0, 2.0, 3.0]
    shared = torch.tensor([[[0.0, 1, 1, 0]]])
    ctx = _ctx(model, x, model_mask=shared)
    z = ctx.forward(torch.ones(2, 1, 4), torch.tensor([1, 2]))
    assert torch.equal(model.masks[-1], shared.expand(2, 1, 4)) and z[:, 0].tolist() == [2.0, 2.0]
    ctx = _ctx(model, x)
    z = ctx.forward(torch.ones(2, 1, 4), torch.tensor([1, 2]))
    assert model.masks[-1] is None and z[:, 0].tolist() == [4.0, 4.0]


def test_clip_to_the_bounds() -> None:
    x = torch.zeros(2, 1, 3)
    t = torch.tensor([[[-2.0, 0.5, 3.0]], [[0.9, -0.1, 1.2]]])
    ctx = _ctx(MaskModel(), x)
    assert torch.equal(ctx.clip(t), t)
    ctx = _ctx(MaskModel(), x, bounds=(torch.tensor(-1.0), torch.tensor(1.0)))
    assert torch.equal(ctx.clip(t), torch.tensor([[[-1.0, 0.5, 1.0]], [[0.9, -0.1, 1.0]]]))
    ctx = _ctx(MaskModel(), x, bounds=(torch.tensor(0.0), torch.tensor(2.0)))
    assert torch.equal(ctx.clip(t), torch.tensor([[[0.0, 0.5, 2.0]], [[0.9, 0.0, 1.2]]]))


def test_active_select_keeps_every_per_sample_field_aligned() -> None:
    from medrobust.attacks.base import Active

    n = 3
    x = torch.arange(n * 4, dtype=torch.float64).view(n, 1, 4)
    y_soft = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=torch.float64)
    label = y_soft.argmax(1)
    mask = (torch.arange(n * 4).view(n, 1, 4) % 2).double()
    mm = torch.ones(n, 1, 4)
    mm[1, 0, 3] = 0
    act = Active(torch.tensor([4, 5, 6]), x, y_soft, torch.tensor([1, 0, 1]),
                 torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64),
                 torch.tensor([1.0, 2.0, 3.0]), mask, True, label=label, model_mask=mm)
    sub = act.select(torch.tensor([2, 1]))
    assert sub.idx.tolist() == [6, 5] and torch.equal(sub.x, x[[2, 1]]) and torch.equal(sub.y, y_soft[[2, 1]])
    assert sub.label.tolist() == [0, 1] and sub.target.tolist() == [1, 0] and sub.eps.tolist() == [0.3, 0.2]
    assert sub.step.tolist() == [3.0, 2.0] and torch.equal(sub.mask, mask[[2, 1]]) and sub.mask_per_sample is True
    assert torch.equal(sub.model_mask, mm[[2, 1]])
    again = sub.select(torch.tensor([False, True]))
    assert again.idx.tolist() == [5] and torch.equal(again.mask, mask[[1]]) and torch.equal(again.model_mask, mm[[1]])
    shared = Active(torch.arange(2), x[:2], label[:2], None, torch.ones(2), None, mask[:1], False,
                    model_mask=mm[:1])
    s2 = shared.select(torch.tensor([1]))
    assert s2.target is None and s2.step is None and s2.label.tolist() == [label[1].item()]
    assert torch.equal(s2.mask, mask[:1]) and torch.equal(s2.model_mask, mm[:1])  # shared masks stay whole
    two = Active(torch.arange(2), x[:2], label[:2], None, torch.ones(2), None, None, False, model_mask=mm[:2])
    assert torch.equal(two.select(torch.tensor([1])).model_mask, mm[[1]])


def test_result_summary_and_attack_repr() -> None:
    from medrobust.attacks import AttackResult

    def result(norms: torch.Tensor) -> AttackResult:
        n = len(norms)
        return AttackResult(
            x_adv=torch.zeros(n, 1, 2), success=torch.tensor([True, False, True][:n]), norms=norms,
            eps=torch.full((n,), 0.5), clean_pred=torch.tensor([0, 1, 1][:n]), adv_pred=torch.tensor([1, 1, 0][:n]),
            y=torch.tensor([0, 1, 0][:n]), target=None, grad_evals=7, queries=11,
            grad_evals_per_sample=torch.zeros(n), queries_per_sample=torch.zeros(n), attack="pgd", norm="l2",
            targeted=False, config={"steps": 3})

    s = result(torch.tensor([0.25, 0.0, 0.5])).summary()
    assert s == {"attack": "pgd", "norm": "l2", "targeted": False, "n": 3, "clean_accuracy": 2 / 3,
                 "robust_accuracy": 2 / 3, "attack_success_rate": 0.5, "success_rate": 2 / 3, "max_norm": 0.5,
                 "grad_evals": 7, "queries": 11, "config": {"steps": 3}}
    empty = result(torch.zeros(0)).summary()
    assert empty["max_norm"] == 0.0 and empty["n"] == 0
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    r = repr(Square(model, eps=0.1, steps=7))
    assert r.startswith("Square(norm='linf', eps=0.1, ") and r.endswith(")") and "attack=" not in r
    assert ", steps=7, p_init=0.05, early_stop=True, max_redraws=100, loss='margin')" in r
