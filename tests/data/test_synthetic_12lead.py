"""Synthetic 12-lead records in the CPSC 2018 layout: read back by the real CPSC 2018 reader, balanced, seeded,
one visible trait per class, and never written over real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medrobust.data import load_dataset
from medrobust.data.cpsc2018 import CLASSES, read_cpsc_record
from medrobust.data.synthetic_12lead import FS, _r_times, synth_record, write_synthetic_cpsc2018
from medrobust.errors import ConfigError


def test_records_are_read_by_the_cpsc2018_reader_with_balanced_labels(tmp_path: Path) -> None:
    root = write_synthetic_cpsc2018(tmp_path / "cpsc2018", records_per_class=2, seconds=6.0, seed=1)
    rows = (root / "REFERENCE.csv").read_text().splitlines()
    assert rows[0] == "Recording,First_label,Second_label,Third_label" and len(rows) == 19
    assert sorted(int(r.split(",")[1]) for r in rows[1:]) == sorted(list(range(1, 10)) * 2)
    data, sex, age = read_cpsc_record(root / "A0001.mat")
    assert data.shape == (12, 3000) and sex in ("Male", "Female") and 20 <= age < 90
    ds = load_dataset("cpsc2018", root=root, split="all")
    assert len(ds) == 18 and ds.meta.fs == FS and np.bincount(ds.y.numpy(), minlength=9).tolist() == [2] * 9
    assert ds.meta.classes == CLASSES


def test_the_same_seed_writes_the_same_records(tmp_path: Path) -> None:
    a = write_synthetic_cpsc2018(tmp_path / "a", records_per_class=1, seconds=4.0, seed=3)
    b = write_synthetic_cpsc2018(tmp_path / "b", records_per_class=1, seconds=4.0, seed=3)
    c = write_synthetic_cpsc2018(tmp_path / "c", records_per_class=1, seconds=4.0, seed=4)
    assert (a / "REFERENCE.csv").read_text() == (b / "REFERENCE.csv").read_text()
    assert np.array_equal(read_cpsc_record(a / "A0005.mat")[0], read_cpsc_record(b / "A0005.mat")[0])
    assert not np.array_equal(read_cpsc_record(a / "A0005.mat")[0], read_cpsc_record(c / "A0005.mat")[0])


def _rr(label: int, seed: int = 0) -> np.ndarray:
    times, _ = _r_times(label, 30.0, np.random.default_rng(seed))
    return np.diff(times)


def test_af_is_irregular_and_premature_beats_come_early() -> None:
    normal, af = _rr(0), _rr(1)
    assert normal.std() / normal.mean() < 0.03 and af.std() / af.mean() > 0.15
    for label in (5, 6):                                          # PAC, PVC: one beat at 65 % of the R-R
        times, early = _r_times(label, 30.0, np.random.default_rng(2))
        assert early is not None and 1 <= early <= len(times) - 3
        rr = np.diff(times)
        assert rr[early - 1] == pytest.approx(0.65 * np.median(rr), rel=0.06)
        assert np.sum(rr < 0.8 * np.median(rr)) == 1
    assert _r_times(0, 30.0, np.random.default_rng(2))[1] is None


def _mean_beat(label: int, lead: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Lead ``lead`` around every R peak (the generator's own R times), averaged over 15 records, and the time axis."""
    window, acc = np.arange(int(-0.4 * FS), int(0.4 * FS)), []
    for seed in range(15):
        rng = np.random.default_rng(seed)
        times, early = _r_times(label, 10.0, np.random.default_rng(seed))
        x = synth_record(label, rng, seconds=10.0)[lead]
        for i, r in enumerate(times):
            centre = int(round(r * FS))
            if i != early and window[0] + centre >= 0 and window[-1] + centre < x.shape[0]:
                acc.append(x[window + centre])
    return np.mean(acc, axis=0), window / FS


def test_each_class_shows_its_trait_in_the_signal() -> None:
    normal, t = _mean_beat(0)
    at = lambda beat, s: float(beat[np.argmin(np.abs(t - s))])  # noqa: E731
    assert at(normal, -0.20) > 0.08 and abs(at(normal, 0.14)) < 0.05       # upright P, flat ST
    assert abs(at(_mean_beat(1)[0], -0.20)) < 0.05                          # AF: no P
    avb = _mean_beat(2)[0]
    assert at(avb, -0.32) > 0.08 and abs(at(avb, -0.20)) < 0.05             # I-AVB: P 0.32 s before R
    assert at(_mean_beat(3)[0], 0.03) > 0.4 > at(normal, 0.03)             # LBBB: R still high 30 ms on
    assert at(_mean_beat(4)[0], 0.06) > 0.3 > at(normal, 0.06) + 0.2        # RBBB: R' at 60 ms
    assert at(_mean_beat(7)[0], 0.14) < -0.08 and at(_mean_beat(8)[0], 0.14) > 0.08   # STD / STE


def test_refuses_bad_arguments_and_never_writes_over_a_label_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        write_synthetic_cpsc2018(tmp_path / "x", records_per_class=0)
    assert str(info.value) == "records_per_class must be >= 1, got 0."
    with pytest.raises(ConfigError) as info:
        write_synthetic_cpsc2018(tmp_path / "x", seconds=2.5)
    assert str(info.value) == "seconds must be >= 3 (room for a few beats), got 2.5."
    real = tmp_path / "real"
    real.mkdir()
    (real / "REFERENCE.csv").write_text("Recording,First_label,Second_label,Third_label\nA0001,1,,\n")
    with pytest.raises(ConfigError) as info:
        write_synthetic_cpsc2018(real, records_per_class=1)
    assert str(info.value) == (f"{real} already holds a REFERENCE.csv; write synthetic records into an empty "
                               "folder.")
    assert (real / "REFERENCE.csv").read_text().endswith("A0001,1,,\n") and not (real / "A0001.mat").exists()
