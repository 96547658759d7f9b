"""AttackContext's per-sample random streams, random starts, gradient hygiene, counting and the final check, by hand.

SplitMix64 (Steele, Lea & Flood, OOPSLA 2014) is replayed on Python integers; the random starts are Madry et
al.'s uniform L∞ box and a uniform point of the L2 ball (Gaussian direction, radius ε·u^(1/d)), rebuilt from
the same per-sample draws.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from medrobust.attacks import Attack, AttackContext
from medrobust.attacks.base import _MASK63, _mix, _srl, as_step, stream_keys
from medrobust.attacks.threat import ThreatModel
from medrobust.errors import DataError

from .test_base_context import MaskModel, _ctx

M64 = 1 << 64
F64 = torch.float64


def mix_ref(z: int) -> int:
    z %= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % M64
    return z ^ (z >> 31)


def as_u64(t: torch.Tensor) -> list[int]:
    return [v % M64 for v in t.tolist()]


VALUES = [0, 1, -1, 2**62 + 12345, -(2**63), 0x0123456789ABCDEF, -0x0123456789ABCDEF, 2**63 - 1]


@pytest.mark.parametrize("k", [1, 27, 30, 31, 63])
def test_logical_shift_matches_unsigned_arithmetic(k: int) -> None:
    z = torch.tensor(VALUES, dtype=torch.int64)
    assert as_u64(_srl(z, k)) == [(v % M64) >> k for v in VALUES]


def test_splitmix_finaliser_matches_the_reference() -> None:
    z = torch.tensor(VALUES, dtype=torch.int64)
    assert as_u64(_mix(z)) == [mix_ref(v) for v in VALUES]
    # the reference itself: SplitMix64 seeded with 0 outputs 0xE220A8397B1DCDAF, then 0x6E789E6AA1B965F4
    assert [mix_ref(k * 0x9E3779B97F4A7C15) for k in (1, 2)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


@pytest.mark.parametrize("seed", [0, 7, 2**63 + 9, 2**64 + 5, 2**70 + 3])
def test_stream_keys_are_splitmix_of_seed_id_and_counter(seed: int) -> None:
    ids = torch.tensor([0, 1, 5, 2**40], dtype=torch.int64)
    counters = torch.tensor([0, 3, 1, 2], dtype=torch.int64)
    base = mix_ref(seed % M64)
    want = [mix_ref((mix_ref((base + i * 0x9E3779B97F4A7C15) % M64) + c) % M64)
            for i, c in zip(ids.tolist(), counters.tolist())]
    assert as_u64(stream_keys(seed, ids, counters)) == want


def test_rand_draws_in_the_batch_dtype_from_each_stream() -> None:
    x = torch.zeros(3, 1, 4, dtype=F64)
    ids = torch.tensor([6, 2, 8])
    ctx = _ctx(MaskModel(), x, sample_ids=ids)
    act = ctx.active()
    got = ctx.rand(act, 1, 50)
    keys = stream_keys(ctx.seed, ids, torch.zeros(3, dtype=torch.int64)).tolist()
    for row, key in zip(got, keys):
        want = torch.empty(1, 50, dtype=F64).uniform_(0.0, 1.0, generator=torch.Generator().manual_seed(key & _MASK63))
        assert torch.equal(row, want)  # float64 draws, not float32 draws cast up
    assert got.dtype == F64 and float(got.min()) >= 0.0 and float(got.max()) < 1.0
    xi = torch.zeros(2, 1, 3, dtype=torch.float16)
    ctx16 = _ctx(MaskModel(), xi)
    assert ctx16._float() == torch.float32 and ctx16.rand(ctx16.active(), 3).dtype == torch.float16


def _draws(ctx: AttackContext, ids: torch.Tensor, counter: int, shape: tuple[int, ...], kind: str) -> torch.Tensor:
    keys = stream_keys(ctx.seed, ids, torch.full((len(ids),), counter, dtype=torch.int64)).tolist()
    rows = []
    for key in keys:
        g = torch.Generator().manual_seed(key & _MASK63)
        t = torch.empty(shape, dtype=F64)
        rows.append(t.uniform_(0.0, 1.0, generator=g) if kind == "rand" else t.normal_(0.0, 1.0, generator=g))
    return torch.stack(rows)


def test_linf_random_start_is_uniform_in_the_box_by_hand() -> None:
    x = torch.full((3, 1, 5), 0.5, dtype=F64)
    ids = torch.tensor([0, 1, 2])
    ctx = _ctx(MaskModel(), x, sample_ids=ids)
    ctx.eps = torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    act = ctx.active()
    got = ctx.random_start(act)
    u = _draws(ctx, ids, 0, (1, 5), "rand")
    want = x + (2.0 * u - 1.0) * ctx.eps.view(-1, 1, 1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)


def test_l2_random_start_is_a_uniform_point_of_the_ball_by_hand() -> None:
    x = torch.zeros(2, 1, 4, dtype=F64)
    ids = torch.tensor([3, 9])
    mask = torch.tensor([[[1.0, 1.0, 0.0, 1.0]]], dtype=F64)
    model = MaskModel()
    z = torch.zeros(2, 2, dtype=F64)
    from medrobust.attacks.losses import get_loss

    ctx = AttackContext(model=model, threat=ThreatModel(eps=1.0, norm="l2"), x=x, y=torch.zeros(2, dtype=torch.long),
                        target=None, eps=torch.tensor([0.5, 2.0], dtype=F64), mask=mask, bounds=None,
                        loss_fn=get_loss("margin"), clean_logits=z, generator=torch.Generator().manual_seed(7),
                        sample_ids=ids)
    got = ctx.random_start(ctx.active())
    g = _draws(ctx, ids, 0, (1, 4), "randn") * mask
    u = _draws(ctx, ids, 1, (), "rand") ** (1.0 / 4)  # d = 4 coordinates of one sample (the mask does not change d)
    want = g / g.flatten(1).norm(dim=1).view(-1, 1, 1) * (ctx.eps * u).view(-1, 1, 1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
    assert got[..., 2].abs().max() == 0  # the masked coordinate stays untouched
    norms = got.flatten(1).norm(dim=1)
    assert bool((norms < ctx.eps).all())


def test_non_finite_gradients_become_zero_with_one_warning() -> None:
    ctx = _ctx(MaskModel(), torch.zeros(1, 1, 4))
    fine = torch.tensor([1.0, -2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ctx._finite(fine) is fine  # finite gradients pass through untouched, without a warning
    bad = torch.tensor([float("nan"), float("inf"), -float("inf"), 2.5])
    with pytest.warns(RuntimeWarning) as rec:
        out = ctx._finite(bad)
    assert [str(w.message) for w in rec] == ["non-finite input gradients were set to zero; the model may be "
                                             "numerically unstable at the perturbed inputs."]
    assert out.tolist() == [0.0, 0.0, 0.0, 2.5]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per call of the attack, not at every step
        assert ctx._finite(bad).tolist() == [0.0, 0.0, 0.0, 2.5]


def test_evaluate_counts_one_forward_per_active_sample_and_passes_the_mask() -> None:
    model = MaskModel()
    mm = torch.tensor([[[1.0, 0.0, 1.0]], [[1.0, 1.0, 0.0]], [[0.0, 1.0, 1.0]]])
    x = torch.ones(3, 1, 3)
    ctx = _ctx(model, x, model_mask=mm)
    act = ctx.active().select(torch.tensor([0, 2]))
    before = ctx.n_fwd.clone()
    _, _, _, grad = ctx.evaluate(act, act.x.clone(), need_grad=False)
    assert grad is None
    x_in, logits, _, grad = ctx.evaluate(act, act.x.clone(), need_grad=True, transform=lambda t: 2 * t)
    assert grad is not None and torch.equal(x_in, 2 * act.x)
    assert (ctx.n_fwd - before).tolist() == [2, 0, 2] and ctx.n_grad.tolist() == [1, 0, 1]
    assert torch.equal(model.masks[-1], mm[[0, 2]])
    assert logits[:, 0].tolist() == [4.0, 4.0]  # transform applied: 2 · (two unmasked ones)


def test_as_step_absolute_per_sample_and_relative() -> None:
    eps = torch.tensor([0.1, 0.2, 0.4], dtype=F64)
    assert as_step(0.05, None, eps).tolist() == [0.05] * 3
    per = as_step(torch.tensor([[1.0], [2.0], [3.0]]), None, eps)
    assert per.tolist() == [1.0, 2.0, 3.0] and per.shape == (3,) and per.dtype == F64
    with pytest.raises(DataError, match=r"^step_size has 2 values but the batch has 3 samples\.$"):
        as_step(torch.tensor([1.0, 2.0]), None, eps)
    torch.testing.assert_close(as_step(None, 0.25, eps), eps * 0.25)


class _Outside(Attack):
    """Returns x + 3 (outside every ball and the bounds) as its output: the final check must repair it."""

    name = "outside"
    default_loss = "margin"

    def _run(self, ctx: AttackContext) -> None:
        act = ctx.active(only_unsuccessful=False)
        ctx.record_final(act, act.x + 3.0, ctx.clean_logits[act.idx])


def test_final_check_projects_an_out_of_ball_output_and_reevaluates_it() -> None:
    x = torch.tensor([[[0.2, 0.5, 0.9]], [[0.1, 0.1, 0.1]]], dtype=F64)
    mask = torch.tensor([[[1.0, 0.0, 1.0]]], dtype=F64)
    model = MaskModel()
    res = _Outside(model, eps=0.25, bounds=(0.0, 1.0), mask=mask)(x, torch.zeros(2, dtype=torch.long))
    want = torch.minimum(x + 0.25 * mask, torch.ones_like(x))
    torch.testing.assert_close(res.x_adv, want, rtol=0, atol=0)
    s = want.flatten(1).sum(1)
    assert res.adv_pred.tolist() == (torch.stack([s, -s], 1).argmax(1)).tolist()
    assert res.queries_per_sample.tolist() == [2, 2]  # the clean forward and the re-evaluation


def test_record_final_keeps_successes_unless_overwritten() -> None:
    x = torch.zeros(3, 1, 2, dtype=F64)
    ctx = _ctx(MaskModel(), x)
    act = ctx.active(only_unsuccessful=False)
    ctx.target = None
    win = torch.tensor([[0.0, 5.0], [0.0, 5.0], [0.0, 5.0]], dtype=F64)  # class 1 ≠ label 0: success
    lose = torch.tensor([[5.0, 0.0]] * 3, dtype=F64)
    ctx.record(act.select(torch.tensor([1])), torch.full((1, 1, 2), 7.0, dtype=F64), win[:1])
    ctx.record_final(act, torch.full((3, 1, 2), 1.0, dtype=F64), lose)
    assert ctx.x_out[:, 0, 0].tolist() == [1.0, 7.0, 1.0] and ctx.success.tolist() == [False, True, False]
    ctx.record_final(act, torch.full((3, 1, 2), 2.0, dtype=F64), win, overwrite=True)
    assert ctx.x_out[:, 0, 0].tolist() == [2.0, 2.0, 2.0] and ctx.success.tolist() == [True, True, True]
