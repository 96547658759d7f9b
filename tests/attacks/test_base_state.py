"""AttackContext's per-call state: which masks count as per-sample, the counters' dtype and device, the
base seed, the active set, where draws are allocated (also when the user changed torch's default
device), gradient hygiene and the L2 random start in one dimension (radius ε·u^(1/d) with d = 1).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import pytest
import torch

from medrobust.attacks import AttackContext
from medrobust.attacks.base import _MASK63, Active, as_step, stream_keys
from medrobust.attacks.losses import get_loss
from medrobust.attacks.threat import ThreatModel

from .test_base_context import MaskModel

F64 = torch.float64


def make(x: torch.Tensor, *, y: torch.Tensor | None = None, mask: torch.Tensor | None = None,
         target: torch.Tensor | None = None, label: torch.Tensor | None = None, clean: torch.Tensor | None = None,
         norm: str = "linf", sample_ids: torch.Tensor | None = None, generator: torch.Generator | None = None,
         model: Any = None, eps: torch.Tensor | None = None) -> AttackContext:
    n = x.shape[0]
    s = x.flatten(1).sum(1)
    return AttackContext(
        model=MaskModel() if model is None else model, threat=ThreatModel(eps=1.0, norm=norm), x=x,
        y=torch.zeros(n, dtype=torch.long, device=x.device) if y is None else y, target=target,
        eps=torch.ones(n, dtype=x.dtype, device=x.device) if eps is None else eps, mask=mask, bounds=None,
        loss_fn=get_loss("margin"), clean_logits=torch.stack([s, -s], 1) if clean is None else clean,
        generator=torch.Generator().manual_seed(7) if generator is None else generator, label=label,
        sample_ids=sample_ids)


def test_a_mask_is_per_sample_when_its_first_dimension_is_the_batch_of_two_or_more() -> None:
    def per(n: int, lead: int | None) -> Any:
        mask = None if lead is None else torch.ones(lead, 1, 3)
        return make(torch.zeros(n, 1, 3), mask=mask).mask_per_sample

    assert per(3, None) is False and per(1, None) is False
    assert per(3, 1) is False          # shared by the batch
    assert per(3, 3) is True
    assert per(2, 2) is True
    assert per(1, 1) is False          # one sample: a shared mask and a per-sample one coincide


def test_context_keeps_the_given_labels_generator_and_target() -> None:
    x = torch.zeros(3, 1, 2)
    soft = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    label = soft.argmax(1)
    gen = torch.Generator().manual_seed(3)
    clean = torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
    ctx = make(x, y=soft, label=label, generator=gen, clean=torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0]]))
    assert ctx.y is soft and ctx.label is label and ctx.generator is gen
    assert ctx.success.tolist() == [False, True, True]
    act = ctx.active()
    assert act.label.tolist() == [0] and act.label.ndim == 1 and torch.equal(act.y, soft[:1])
    # targeted: success means predicting the target, not leaving the label
    ctx = make(x, y=torch.tensor([0, 1, 2]), target=torch.tensor([1, 1, 0]), clean=clean)
    assert ctx.success.tolist() == [False, True, False]
    act = ctx.active(only_unsuccessful=False)
    ctx.record_final(act, x + 1.0, torch.tensor([[0.0, 3.0, 1.0], [3.0, 0.0, 1.0], [1.0, 0.0, 3.0]]), overwrite=True)
    assert ctx.success.tolist() == [True, False, False]  # predictions 1, 0, 2 against targets 1, 1, 0


def test_the_base_seed_is_one_draw_below_two_to_the_62() -> None:
    want = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(11)))
    ctx = make(torch.zeros(2, 1, 2), generator=torch.Generator().manual_seed(11))
    assert ctx.seed == want and 2**40 < want < 2**62


def test_counters_and_ids_live_on_the_batch_device() -> None:
    """The ``meta`` device (no data) shows where the context allocates its per-sample state."""
    xm = torch.empty(3, 1, 4, dtype=F64, device="meta")
    ctx = make(xm, sample_ids=torch.tensor([5, 6, 7], dtype=torch.int32))
    assert ctx.n_fwd.dtype == torch.long and ctx.n_grad.dtype == torch.long
    assert ctx.sample_ids.dtype == torch.int64 and ctx._draws.dtype == torch.int64
    for t in (ctx.n_fwd, ctx.n_grad, ctx.sample_ids, ctx._draws, ctx.x_out, ctx.success):
        assert t.device.type == "meta"
    assert make(xm).sample_ids.device.type == "meta"
    assert ctx.active(only_unsuccessful=False).idx.device.type == "meta"
    cpu = make(torch.zeros(3, 1, 2), sample_ids=torch.tensor([5, 6, 7], dtype=torch.int32))
    assert cpu.n_fwd.tolist() == [1, 1, 1] and cpu.n_grad.tolist() == [0, 0, 0] and cpu.n_fwd.dtype == torch.long
    assert cpu.sample_ids.tolist() == [5, 6, 7] and cpu.sample_ids.dtype == torch.int64
    assert make(torch.zeros(2, 1, 2)).sample_ids.tolist() == [0, 1]


def test_the_context_ignores_torchs_default_device() -> None:
    """A user who set another default device (``torch.set_default_device``) still gets a CPU run for CPU data."""
    x = torch.zeros(3, 1, 4, dtype=F64)
    want_seed = make(x).seed
    args = {"y": torch.zeros(3, dtype=torch.long), "clean": torch.zeros(3, 2, dtype=F64),
            "generator": torch.Generator().manual_seed(7), "model": MaskModel(),
            "sample_ids": torch.tensor([4, 1, 9]), "eps": torch.tensor([0.5, 1.0, 2.0], dtype=F64)}
    with torch.device("meta"):
        ctx = make(x, **args)
        assert ctx.seed == want_seed
        act = ctx.active()
        assert act.idx.device.type == "cpu"
        u = ctx.rand(act, 1, 4)
        n = ctx.randn(act, 2)
        k = ctx.randint(act, 5, 3)
        start = ctx.random_start(act)
        step = as_step(0.25, None, ctx.eps)
    for t in (u, n, k, start, step, ctx.n_fwd, ctx.sample_ids, ctx._draws):
        assert t.device.type == "cpu"
    keys = stream_keys(want_seed, torch.tensor([4, 1, 9]), torch.zeros(3, dtype=torch.int64)).tolist()
    for row, key in zip(u, keys):
        g = torch.Generator().manual_seed(key & _MASK63)
        assert torch.equal(row, torch.empty(1, 4, dtype=F64).uniform_(0.0, 1.0, generator=g))
    assert step.tolist() == [0.25] * 3 and bool((start.abs() <= ctx.eps.view(-1, 1, 1)).all())
    assert as_step(0.25, None, torch.ones(2, device="meta")).device.type == "meta"


def test_active_set_leaves_out_the_successful_samples_and_carries_their_masks() -> None:
    x = torch.arange(12.0).view(3, 1, 4)
    mask = torch.tensor([[[1.0, 0, 0, 0]], [[1.0, 1, 0, 0]], [[1.0, 1, 1, 0]]])
    clean = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # sample 1 is misclassified already
    ctx = make(x, mask=mask, clean=clean, y=torch.tensor([1, 1, 1]))
    assert ctx.success.tolist() == [False, True, False] and ctx.mask_per_sample
    act = ctx.active()
    assert act.idx.tolist() == [0, 2] and torch.equal(act.x, x[[0, 2]]) and torch.equal(act.mask, mask[[0, 2]])
    assert act.label.tolist() == [1, 1] and act.mask_per_sample is True
    sub = ctx.active(only_unsuccessful=False).select(torch.tensor([2, 0]))
    assert torch.equal(sub.mask, mask[[2, 0]])
    delta = torch.full((2, 1, 4), 0.5)
    got = ctx.constrain(sub, delta)
    assert torch.equal(got - sub.x, delta * mask[[2, 0]])  # the active samples' own masks
    clean_all = torch.tensor([[1.0, 0.0]] * 3)
    ctx = make(x, clean=clean_all, y=torch.tensor([0, 0, 0]))
    full = ctx.active()
    assert full.idx.tolist() == [0, 1, 2]
    assert full.x.data_ptr() == ctx.x.data_ptr()  # nothing dropped: the batch itself, not a copy


def test_selecting_from_a_single_sample_keeps_a_shared_padding_mask() -> None:
    mm = torch.tensor([[[1.0, 1.0, 0.0]]])
    one = Active(torch.tensor([4]), torch.zeros(1, 1, 3), torch.tensor([0]), None, torch.ones(1), None, None, False,
                 model_mask=mm)
    for keep in (torch.tensor([], dtype=torch.long), torch.tensor([False])):
        empty = one.select(keep)
        assert len(empty) == 0 and torch.equal(empty.model_mask, mm)


def test_randn_returns_the_batch_dtype() -> None:
    x = torch.zeros(2, 1, 3, dtype=torch.float16)
    ctx = make(x)
    out = ctx.randn(ctx.active(), 3)
    assert out.dtype == torch.float16 and out.shape == (2, 3)
    keys = stream_keys(ctx.seed, torch.arange(2), torch.zeros(2, dtype=torch.int64)).tolist()
    for row, key in zip(out, keys):
        want = torch.empty(3).normal_(0.0, 1.0, generator=torch.Generator().manual_seed(key & _MASK63))
        assert torch.equal(row, want.half())  # float32 draws, rounded to float16


class _GradProbe(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.grad_enabled: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.grad_enabled.append(torch.is_grad_enabled())
        s = x.flatten(1).sum(1)
        return torch.stack([s, -s], 1)


def test_evaluate_without_gradient_builds_no_graph() -> None:
    model = _GradProbe()
    ctx = make(torch.ones(2, 1, 3), model=model)
    act = ctx.active()
    with torch.enable_grad():
        ctx.evaluate(act, act.x.clone(), need_grad=False)
        ctx.evaluate(act, act.x.clone(), need_grad=True)
    with torch.no_grad():
        _, _, _, grad = ctx.evaluate(act, act.x.clone(), need_grad=True)
    assert model.grad_enabled == [False, True, True]
    assert grad is not None and grad.shape == (2, 1, 3)


class _Sqrt(torch.nn.Module):
    """Finite logits whose input gradient is infinite at 0 (d√x/dx = 1/(2√x))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sqrt().sum(1)
        return torch.stack([s, -s], 1)


def _step(ctx: AttackContext, act: Active) -> Any:
    return ctx.evaluate(act, act.x.clone(), need_grad=True)


def _attack_loop(ctx: AttackContext, act: Active) -> tuple[Any, int]:
    frame = inspect.currentframe()
    assert frame is not None
    return _step(ctx, act), frame.f_lineno


def test_the_non_finite_gradient_warning_points_at_the_caller_of_the_step() -> None:
    """stacklevel=4: _finite ← evaluate ← the step that evaluates ← the attack loop calling that step."""
    ctx = make(torch.zeros(2, 1, 3), model=_Sqrt())
    with pytest.warns(RuntimeWarning, match="non-finite input gradients were set to zero") as rec:
        (_, _, _, grad), line = _attack_loop(ctx, ctx.active())
    assert len(rec) == 1
    if not hasattr(AttackContext.evaluate, "__wrapped__"):  # mutmut's wrapper frames move the target
        assert rec[0].filename == __file__ and rec[0].lineno == line
    assert grad.tolist() == [[[0.0, 0.0, 0.0]]] * 2


def test_l2_random_start_in_one_dimension() -> None:
    """With d = 1 the radius is ε·u and the direction is the sign of the Gaussian draw, whatever its size."""
    for n in (1, 4):
        x = torch.zeros(n, 1, dtype=F64)
        eps = torch.linspace(0.5, 2.0, n, dtype=F64)
        ctx = make(x, norm="l2", eps=eps, sample_ids=torch.arange(10, 10 + n))
        got = ctx.random_start(ctx.active())
        ids = ctx.sample_ids
        g = [torch.empty(1, dtype=F64).normal_(0.0, 1.0, generator=torch.Generator().manual_seed(k & _MASK63))
             for k in stream_keys(ctx.seed, ids, torch.zeros(n, dtype=torch.int64)).tolist()]
        u = [torch.empty((), dtype=F64).uniform_(0.0, 1.0, generator=torch.Generator().manual_seed(k & _MASK63))
             for k in stream_keys(ctx.seed, ids, torch.ones(n, dtype=torch.int64)).tolist()]
        want = torch.stack([gi.sign() * e * ui for gi, e, ui in zip(g, eps, u)])
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
        if n == 4:
            assert any(abs(float(gi)) < 1.0 for gi in g)  # a draw inside the unit interval is still rescaled


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (a CPU-only machine has one kind)")
def test_cuda_batches_draw_from_cuda_generators() -> None:
    """CUDA batches draw from per-sample CUDA (Philox) generators, allocated on the batch's device."""
    x = torch.zeros(2, 1, 5, dtype=F64, device="cuda")
    ctx = make(x, sample_ids=torch.tensor([3, 8]))
    act = ctx.active()
    gens = ctx.generators(act)
    assert all(g.device.type == "cuda" for g in gens)
    got = ctx.rand(act, 5)
    assert got.device.type == "cuda"
    keys = stream_keys(ctx.seed, torch.tensor([3, 8]), torch.ones(2, dtype=torch.int64)).tolist()
    for row, key in zip(got, keys):
        g = torch.Generator(device="cuda").manual_seed(key & _MASK63)
        assert torch.equal(row, torch.empty(5, dtype=F64, device="cuda").uniform_(0.0, 1.0, generator=g))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ctx.randint(act, 4, 3).device.type == "cuda"
