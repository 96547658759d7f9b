"""Adversarial examples export: npz round trip; WFDB records read back with wfdb.rdrecord within quantisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from medrobust.errors import ConfigError
from medrobust.evaluation.export import save_npz, save_wfdb, wfdb_units


def _signals(units_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(360) / 360.0
    x = np.stack([[np.sin(2 * np.pi * 1.2 * t) + 0.1 * rng.standard_normal(360),
                   0.5 * np.cos(2 * np.pi * 1.2 * t)] for _ in range(3)]) * units_scale
    x_adv = x + 0.01 * np.sign(rng.standard_normal(x.shape)) * units_scale
    return x.astype(np.float32), x_adv.astype(np.float32)


@pytest.mark.parametrize("units", ["mV", "normalized [0, 1]"])
def test_wfdb_reads_back_within_quantisation(tmp_path: Path, units: str) -> None:
    x, x_adv = _signals()
    names = save_wfdb(tmp_path, x=x, x_adv=x_adv, fs=360.0, units=units, leads=["MLII", "V5"], prefix="pgd",
                      comments=[[f"attack=pgd eps=0.01 sample={i}"] for i in range(3)])
    assert names == ["pgd_000", "pgd_001", "pgd_002"]
    assert (tmp_path / "RECORDS").read_text().split() == names
    for i, name in enumerate(names):
        rec = wfdb.rdrecord(str(tmp_path / name))
        assert rec.fs == 360 and rec.sig_name == ["MLII_adv", "V5_adv", "MLII_clean", "V5_clean"]
        assert rec.units == [wfdb_units(units)] * 4
        assert rec.comments == [f"attack=pgd eps=0.01 sample={i}"]
        expected = np.concatenate([x_adv[i], x[i]], axis=0).T
        step = 1.0 / np.asarray(rec.adc_gain)
        err = np.abs(rec.p_signal - expected)
        assert (err <= step / 2 + 1e-6 * np.abs(expected).max()).all(), err.max(0) / step
        # the perturbation survives the round trip: 0.01 is hundreds of quantisation steps
        delta = rec.p_signal[:, :2] - rec.p_signal[:, 2:]
        assert np.abs(delta - (x_adv[i] - x[i]).T).max() <= step.max()


def test_wfdb_rejects_images_and_npz_round_trip(tmp_path: Path) -> None:
    img = np.zeros((2, 1, 4, 4), dtype=np.float32)
    with pytest.raises(ConfigError, match="npz only"):
        save_wfdb(tmp_path, x=img, x_adv=img, fs=0.0, units="intensity [0, 1]", leads=["gray"])
    x, x_adv = _signals()
    p = save_npz(tmp_path / "adv.npz", x=x, x_adv=x_adv, y=np.array([0, 1, 2]), clean_pred=np.array([0, 1, 1]),
                 adv_pred=np.array([1, 1, 1]), success=np.array([True, False, False]), extra={"eps": 0.01})
    with np.load(p, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["x_adv"], x_adv)
        np.testing.assert_allclose(z["delta"], x_adv - x)
        assert float(z["eps"]) == 0.01 and z["success"].tolist() == [True, False, False]
