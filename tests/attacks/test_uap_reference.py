"""UAP random controls and the UAP file format, checked against their documented laws (fast, no fitting).

Random controls (Hirano et al., MedicalAI-UAP, 2021): ``"uniform"`` is uniform in the ball (L∞: i.i.d.
``U[−ξ, ξ]``; L2: a Gaussian direction at radius ``ξ·u^{1/d}``), ``"sign"`` is independent random signs
(``±ξ`` for L∞, ``±ξ/√d`` for L2). The draws are reproduced here from a generator with the same seed.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from medrobust.attacks import UAPResult, UniversalPerturbation
from medrobust.attacks.universal import _FORMAT, random_control
from medrobust.errors import ConfigError, DataError

D = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(1, 7), (2, 3, 4), (1,)])
def test_sign_controls_are_random_signs_at_the_corner_or_on_the_sphere(shape: tuple[int, ...]) -> None:
    d = math.prod(shape)
    signs = torch.randint(0, 2, shape, generator=gen(5), dtype=torch.int64).double() * 2 - 1
    v = random_control(shape, xi=0.3, norm="linf", kind="sign", generator=gen(5), dtype=D)
    assert v.dtype == D and torch.equal(v, signs * 0.3)
    v = random_control(shape, xi=0.3, norm="l2", kind="sign", generator=gen(5), dtype=D)
    torch.testing.assert_close(v, signs * (0.3 / math.sqrt(d)), rtol=1e-14, atol=0)
    assert float(v.norm()) == pytest.approx(0.3, rel=1e-12)
    if d > 4:
        assert bool((signs > 0).any()) and bool((signs < 0).any())


@pytest.mark.parametrize("shape", [(1, 7), (3, 5, 2)])
def test_uniform_controls_follow_their_laws(shape: tuple[int, ...]) -> None:
    d = math.prod(shape)
    g = gen(9)
    want = (torch.rand(shape, generator=g, dtype=D) * 2 - 1) * 0.4
    v = random_control(shape, xi=0.4, norm="linf", generator=gen(9), dtype=D)
    torch.testing.assert_close(v, want, rtol=0, atol=0)
    assert float(v.abs().max()) <= 0.4 and float(v.min()) < 0 < float(v.max())
    g = gen(9)
    direction = torch.randn(shape, generator=g, dtype=D)
    u = float(torch.rand((), generator=g, dtype=D)) ** (1.0 / d)
    v = random_control(shape, xi=0.4, norm="l2", generator=gen(9), dtype=D)
    torch.testing.assert_close(v, direction / direction.norm() * (0.4 * u), rtol=1e-14, atol=0)
    assert float(v.norm()) < 0.4


def test_controls_default_generator_and_dtype() -> None:
    a = random_control((2, 5), xi=1.0, norm="l2")
    assert a.dtype == torch.float32
    assert torch.equal(a, random_control((2, 5), xi=1.0, norm="l2", generator=gen(0)))
    assert not torch.equal(a, random_control((2, 5), xi=1.0, norm="l2", generator=gen(1)))
    b = random_control((2, 5), xi=1.0, norm="linf", kind="sign")
    assert torch.equal(b, random_control((2, 5), xi=1.0, norm="linf", kind="sign", generator=gen(0)))


@pytest.mark.parametrize(("kw", "message"), [
    ({"kind": "gauss"}, "kind must be one of ('uniform', 'sign'), got 'gauss'."),
    ({"xi": 0.0}, "xi must be a positive finite radius, got 0.0."),
    ({"xi": -1.0}, "xi must be a positive finite radius, got -1.0."),
    ({"xi": float("inf")}, "xi must be a positive finite radius, got inf."),
    ({"xi": "1"}, "xi must be a positive finite radius, got '1'."),
])
def test_control_arguments(kw: dict, message: str) -> None:
    args = {"xi": 1.0, "norm": "l2", **kw}
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        random_control((1, 4), **args)  # type: ignore[arg-type]


def test_the_attacks_random_control_is_a_result_in_its_ball() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 2))
    uap = UniversalPerturbation(model, norm="linf", zeta=0.1, target=1, generator=gen(4))
    with pytest.raises(ConfigError, match=re.escape("random_control needs shape= and xi= (or call fit() / "
                                                    "resolve_xi() first).")):
        uap.random_control()
    with pytest.raises(ConfigError, match="random_control needs shape="):
        uap.random_control(shape=(1, 6))
    with pytest.raises(ConfigError, match="random_control needs shape="):
        uap.random_control(xi=0.5)
    res = uap.random_control(kind="sign", shape=(1, 6), xi=0.5)
    assert torch.equal(res.delta, random_control((1, 6), xi=0.5, norm="linf", kind="sign", generator=gen(4)))
    assert (res.xi, res.norm, res.zeta, res.mean_norm, res.method, res.target, res.config) == (
        0.5, "linf", 0.1, None, "random_sign", 1, {"kind": "sign"})
    x = torch.full((3, 1, 6), 2.0)
    xi = uap.resolve_xi(x)  # ζ · mean ‖x‖∞ = 0.2
    res = uap.random_control(shape=(1, 6), generator=gen(8))
    assert res.xi == xi == pytest.approx(0.2) and res.mean_norm == pytest.approx(2.0) and res.method == "random_uniform"
    assert torch.equal(res.delta, random_control((1, 6), xi=xi, norm="linf", generator=gen(8)))
    assert res.delta.shape == (1, 6)
    r = repr(UniversalPerturbation(model, norm="l2", eps=0.25))
    assert r.startswith("UniversalPerturbation(norm='l2', zeta=None, eps=0.25, method='batched', ")
    assert r.endswith(", units=None)")


def _result() -> UAPResult:
    return UAPResult(delta=torch.linspace(-1, 1, 6).view(1, 6), xi=1.5, norm="l2", zeta=0.04, mean_norm=37.5,
                     method="fgsm", target=2, fit_rate=0.75, history=[{"pass": 1, "rate": 0.5}], converged=True,
                     grad_evals=12, queries=34, seconds=1.25, config={"w": np.float32(0.25)})


def test_summary_and_save_load_round_trip(tmp_path: Path) -> None:
    res = _result()
    s = res.summary()
    assert set(s) == {"method", "norm", "xi", "zeta", "mean_norm", "target", "fit_rate", "delta_norms", "shape",
                      "converged", "grad_evals", "queries", "seconds", "history", "config"}
    assert s["method"] == "fgsm" and s["shape"] == [1, 6] and s["converged"] is True
    assert s["delta_norms"]["linf"] == 1.0
    p = res.save(tmp_path / "deep" / "er" / "uap.pt")  # parents are created, the suffix appended
    assert p == tmp_path / "deep" / "er" / "uap.pt.safetensors" and p.is_file()
    assert res.save(tmp_path / "plain") == tmp_path / "plain.safetensors"
    assert res.save(tmp_path / "u.safetensors") == tmp_path / "u.safetensors"
    back = UAPResult.load(p)
    assert torch.equal(back.delta, res.delta)
    assert (back.xi, back.norm, back.zeta, back.mean_norm, back.method, back.target, back.fit_rate, back.history,
            back.converged, back.grad_evals, back.queries, back.seconds, back.config) == (
        1.5, "l2", 0.04, 37.5, "fgsm", 2, 0.75, [{"pass": 1, "rate": 0.5}], True, 12, 34, 1.25, {"w": 0.25})


def test_load_fills_missing_summary_fields_with_defaults(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    p = tmp_path / "min.safetensors"
    save_file({"delta": torch.zeros(1, 3)}, str(p), metadata={"format": _FORMAT,
                                                             "summary": json.dumps({"xi": 0.5, "norm": "linf"})})
    r = UAPResult.load(p)
    assert (r.xi, r.norm, r.zeta, r.mean_norm, r.method, r.target, r.history, r.converged, r.grad_evals, r.queries,
            r.seconds, r.config) == (0.5, "linf", None, None, "batched", None, [], False, 0, 0, 0.0, {})
    assert math.isnan(r.fit_rate)
    assert type(r.grad_evals) is int and type(r.seconds) is float and type(r.converged) is bool


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    with pytest.raises(DataError, match=re.escape(f"UAP file {tmp_path / 'none.safetensors'} not found")):
        UAPResult.load(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match=re.escape(f"{bad} is not a readable safetensors UAP file")):
        UAPResult.load(bad)
    other = tmp_path / "other.safetensors"
    save_file({"delta": torch.zeros(1, 3)}, str(other), metadata={"format": "x/1", "summary": "{}"})
    with pytest.raises(DataError, match="^" + re.escape(
            f"{other} is not a medrobust UAP file (format 'x/1', expected '{_FORMAT}').") + "$"):
        UAPResult.load(other)
    nosum = tmp_path / "nosum.safetensors"
    save_file({"delta": torch.zeros(1, 3)}, str(nosum), metadata={"format": _FORMAT})
    with pytest.raises(DataError, match=re.escape(f"format '{_FORMAT}', expected")):
        UAPResult.load(nosum)
