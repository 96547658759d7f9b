"""Kaggle heartbeat CSV reader: Ma & Liang's split, validation of rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medrobust.data import load_dataset
from medrobust.errors import DataError


def _write(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 187)).round(6)
    y = rng.integers(0, 5, n)
    np.savetxt(path, np.c_[x, y.astype(float)], delimiter=",", fmt="%.6e")
    return x, y


@pytest.fixture()
def kaggle_dir(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    x, y = _write(tmp_path / "mitbih_train.csv", 50, 0)
    _write(tmp_path / "mitbih_test.csv", 20, 1)
    return tmp_path, x, y


def test_split_follows_ma_liang(kaggle_dir) -> None:
    root, x, y = kaggle_dir
    train = load_dataset("kaggle_heartbeat", root=root, split="train")
    val = load_dataset("kaggle_heartbeat", root=root, split="val")
    test = load_dataset("kaggle_heartbeat", root=root, split="test")
    perm = np.random.RandomState(0).permutation(50)
    assert len(train) == int(0.8 * 50) == 40 and len(val) == 10 and len(test) == 20
    assert np.allclose(train.x[:, 0].numpy(), x[perm[:40]], atol=1e-6)
    assert np.array_equal(val.y.numpy(), y[perm[40:]])
    assert train.x.shape == (40, 1, 187) and train.meta.fs == 125.0


def test_bad_rows(tmp_path: Path) -> None:
    np.savetxt(tmp_path / "mitbih_train.csv", np.random.rand(3, 100), delimiter=",")
    with pytest.raises(DataError, match="100 columns; expected 188"):
        load_dataset("kaggle_heartbeat", root=tmp_path)
    rows = np.c_[np.random.rand(3, 187), [0, 7, 1]]
    np.savetxt(tmp_path / "mitbih_train.csv", rows, delimiter=",")
    with pytest.raises(DataError, match="row 2 has label 7"):
        load_dataset("kaggle_heartbeat", root=tmp_path)
    rows[1, 5] = np.nan
    rows[1, -1] = 0
    np.savetxt(tmp_path / "mitbih_train.csv", rows, delimiter=",")
    with pytest.raises(DataError, match="row 2 has missing"):
        load_dataset("kaggle_heartbeat", root=tmp_path)
    with pytest.raises(DataError, match="dataset folder not found"):
        load_dataset("kaggle_heartbeat", root=tmp_path, split="test")
