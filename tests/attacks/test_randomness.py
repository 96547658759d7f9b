"""Per-sample random streams: a sample's result depends on its seed and id only, not on its batch."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import PGD, SAP
from medrobust.attacks.base import Active, AttackContext, stream_keys
from medrobust.attacks.threat import ThreatModel

from .conftest import SmallECGNet


@pytest.fixture()
def beat_problem(beats_x: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = SmallECGNet(1, classes=5).double()
    x = beats_x.double()
    with torch.no_grad():  # centre the logits: small margins, so samples stop after different numbers of steps
        model.net[-1].bias -= model(x).mean(0)
        y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("make", [
    lambda m, g: PGD(m, eps=0.02, steps=12, rel_step_size=0.25, random_start=True, restarts=2, bounds=(0, 1),
                     generator=g),
    lambda m, g: SAP(m, eps=0.02, steps=4, smooth_steps=6, random_start=True, early_stop=True, bounds=(0, 1),
                     fs=125.0, generator=g),
], ids=["pgd", "sap"])
def test_sample_alone_equals_sample_in_a_batch_with_early_stoppers(make, beat_problem) -> None:
    model, x, y = beat_problem
    batch = make(model, torch.Generator().manual_seed(3))(x, y)
    # the batch is heterogeneous: some samples stop early, others run longer
    assert len(set(batch.grad_evals_per_sample.tolist())) >= 2
    for i in range(len(x)):
        alone = make(model, torch.Generator().manual_seed(3))(x[i:i + 1], y[i:i + 1], sample_ids=torch.tensor([i]))
        torch.testing.assert_close(alone.x_adv[0], batch.x_adv[i], rtol=0, atol=1e-12)
        assert int(alone.grad_evals_per_sample[0]) == int(batch.grad_evals_per_sample[i])
    # the identity, not the position, keys the stream: another id gives another start
    other = make(model, torch.Generator().manual_seed(3))(x[:1], y[:1], sample_ids=torch.tensor([5]))
    assert not torch.equal(other.x_adv[0], batch.x_adv[0]) or bool(batch.success[0] and other.success[0])


def test_seeded_generator_reproduces_and_successive_calls_differ(beat_problem) -> None:
    model, x, y = beat_problem
    g = torch.Generator().manual_seed(11)
    atk = PGD(model, eps=0.01, steps=1, random_start=True, bounds=(0, 1), generator=g)
    first, second = atk(x, y).x_adv, atk(x, y).x_adv
    assert not torch.equal(first, second)  # one base seed drawn per call
    again = PGD(model, eps=0.01, steps=1, random_start=True, bounds=(0, 1),
                generator=torch.Generator().manual_seed(11))(x, y).x_adv
    assert torch.equal(first, again)


def _ctx(n: int, dtype: torch.dtype = torch.float64) -> tuple[AttackContext, Active]:
    x = torch.zeros(n, 3, dtype=dtype)
    model = torch.nn.Linear(3, 2).to(dtype)
    ctx = AttackContext(model=model, threat=ThreatModel(eps=1.0), x=x, y=torch.zeros(n, dtype=torch.long),
                        target=None, eps=torch.ones(n, dtype=dtype), mask=None, bounds=None,
                        loss_fn=lambda z, y, t: z[:, 0], clean_logits=torch.tensor([[1.0, 0.0]] * n, dtype=dtype),
                        generator=torch.Generator().manual_seed(0))
    return ctx, ctx.active(only_unsuccessful=False)


def test_stream_distributions() -> None:
    ctx, act = _ctx(4)
    u = ctx.rand(act, 20000)
    z = ctx.randn(act, 20000)
    k = ctx.randint(act, 5, 20000)
    assert u.shape == (4, 20000) and bool(((u >= 0) & (u < 1)).all())
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.002
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1.0) < 0.02
    assert abs(float((z.abs() < 1.96).double().mean()) - 0.95) < 0.005
    assert set(k.unique().tolist()) == {0, 1, 2, 3, 4}
    assert abs(float((k == 0).double().mean()) - 0.2) < 0.01
    # rows are independent streams, successive draws of a row differ
    assert float(torch.corrcoef(u[:2])[0, 1]).__abs__() < 0.03
    assert not torch.equal(ctx.rand(act, 5), ctx.rand(act, 5))


def test_stream_is_a_function_of_seed_id_and_counter() -> None:
    keys = stream_keys(7, torch.tensor([0, 1, 0]), torch.tensor([0, 0, 1]))
    assert len(set(keys.tolist())) == 3
    assert torch.equal(stream_keys(7, torch.tensor([1]), torch.tensor([0])), keys[1:2])
    assert not torch.equal(stream_keys(8, torch.tensor([1]), torch.tensor([0])), keys[1:2])
    # a sample's draws do not depend on the other rows drawn with it
    ctx, act = _ctx(5)
    both = ctx.rand(act.select(torch.tensor([1, 3])), 6)
    ctx2, act2 = _ctx(5)
    alone = ctx2.rand(act2.select(torch.tensor([3])), 6)
    assert torch.equal(both[1], alone[0])
    ctx2.sample_ids = torch.tensor([0, 1, 2, 9, 4])  # another identity: another stream
    ctx3, act3 = _ctx(5)
    ctx3.sample_ids = torch.tensor([0, 1, 2, 9, 4])
    assert not torch.equal(ctx3.rand(act3.select(torch.tensor([3])), 6)[0], alone[0])
