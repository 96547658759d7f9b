"""Per-beat µV scale of Kachuee MIT-BIH beats: hand-built windows, a real record, subsets, the cache version."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from medrobust.data import load_dataset
from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.data.beats import KACHUEE_FS, kachuee_windows, rescale_positions, resample
from medrobust.data.cache import CacheWarning, cache_path, file_stats, save_cached
from medrobust.data.mitdb import MITDB_FS, build_mitdb, kachuee_scales, read_beats, read_record, record_files
from medrobust.errors import DataError


def _rebuild(beat: np.ndarray, scale: float, offset: float) -> np.ndarray:
    n = int(np.max(np.nonzero(beat)[0])) + 1
    return beat[:n].astype(np.float64) * scale + offset


def test_hand_built_windows_scale_and_offset() -> None:
    fs = 10.0  # 10-s windows of 100 samples
    t = np.arange(250)
    sig = np.where(t < 100, 2.0 + np.sin(t / 3.0), np.where(t < 200, -1.0 + 3.0 * np.cos(t / 5.0), 0.5))
    peaks = np.array([10, 40, 120, 150, 210, 230])
    scale, offset = kachuee_scales(sig, peaks, fs)
    w0, w1 = sig[:100], sig[100:200]
    assert scale[:2] == pytest.approx([np.ptp(w0)] * 2) and offset[:2] == pytest.approx([w0.min()] * 2)
    assert scale[2:4] == pytest.approx([np.ptp(w1)] * 2) and offset[2:4] == pytest.approx([w1.min()] * 2)
    assert np.isnan(scale[4:]).all() and np.isnan(offset[4:]).all()  # flat last window: beats are all zeros
    beats = kachuee_windows(sig, peaks, fs, length=30)
    assert not beats[4:].any()
    for i in range(4):  # value · scale + offset is the signal again (within float32 rounding)
        rebuilt = _rebuild(beats[i], scale[i], offset[i])
        assert rebuilt == pytest.approx(sig[peaks[i]: peaks[i] + len(rebuilt)], abs=1e-5 * scale[i])


def test_real_record_beats_convert_back_to_mv(shared_data: Path, session_cache: Path) -> None:
    mitdb = shared_data / "mitdb"
    arrays, _ = build_mitdb(mitdb, records=["100"], cache_dir=session_cache)
    scale, offset = arrays["uv_scale"], arrays["uv_offset"]
    assert scale.shape == offset.shape == arrays["y"].shape
    assert np.isfinite(scale).all() and (scale > 200).all() and (scale < 10000).all()  # µV: record 100 is ~1-3 mV
    sig, fs, _ = read_record(mitdb, "100")
    peaks, _, _ = read_beats(mitdb, "100")
    sig = resample(sig, fs, KACHUEE_FS)
    p = rescale_positions(peaks, MITDB_FS, KACHUEE_FS)
    for i in (0, 500, len(scale) - 1):
        mv = _rebuild(arrays["x"][i, 0], scale[i], offset[i]) / 1e3
        assert mv == pytest.approx(sig[p[i]: p[i] + len(mv)], abs=1e-5 * scale[i] / 1e3)


def test_dataset_meta_carries_the_scale_through_subsets(shared_data: Path, session_cache: Path) -> None:
    ds = load_dataset("mitdb", root=shared_data, records=["100", "101"], split="test", cache_dir=session_cache)
    assert ds.meta.units == "normalized [0, 1]"
    assert ds.meta.uv_scale is not None and len(ds.meta.uv_scale) == len(ds) == len(ds.meta.uv_offset)
    sub = ds.subset([5, 2, 9])
    assert np.array_equal(sub.meta.uv_scale, ds.meta.uv_scale[[5, 2, 9]])
    assert np.array_equal(sub.meta.uv_offset, ds.meta.uv_offset[[5, 2, 9]])
    assert "uv_scale" not in ds.meta.card() and "uv_scale" not in ds.meta.options  # never in the card's JSON


def test_native_beats_in_mv_have_no_per_beat_scale(shared_data: Path, session_cache: Path) -> None:
    ds = load_dataset("mitdb", root=shared_data, records=["100"], split="test", format="native",
                      cache_dir=session_cache)
    assert ds.meta.units == "mV" and ds.meta.uv_scale is None and ds.meta.uv_offset is None


def test_a_cache_without_the_scale_is_rebuilt(shared_data: Path, tmp_path: Path) -> None:
    mitdb = shared_data / "mitdb"
    fresh, opts = build_mitdb(mitdb, records=["100"], cache_dir=tmp_path)
    (written,) = list(tmp_path.glob("mitdb-*.npz"))
    # a cache of the previous build version (no build_version in its key, no uv_scale) is never read
    old_key = {"dataset": "mitdb", "records": ("100",), "files": file_stats(record_files(mitdb, "100")),
               **{k: opts[k] for k in ("format", "lead", "missing_lead", "fs", "before_s", "after_s", "source_fs",
                                       "unknown_symbols")}}
    assert cache_path("mitdb", old_key, tmp_path) != written
    stale = {k: v for k, v in fresh.items() if k not in ("uv_scale", "uv_offset")}
    save_cached(written, stale)  # same key, arrays without the scale: refused and rebuilt
    with pytest.warns(CacheWarning):
        again, _ = build_mitdb(mitdb, records=["100"], cache_dir=tmp_path)
    assert np.array_equal(again["uv_scale"], fresh["uv_scale"])


def test_per_sample_scale_length_is_checked() -> None:
    meta = DatasetMeta(name="t", fs=125.0, classes=("a",), units="normalized [0, 1]", ids=np.zeros(2),
                       uv_scale=np.ones(3))
    with pytest.raises(DataError, match="meta.uv_scale has 3 entries for 2 samples"):
        ECGDataset(torch.zeros(2, 1, 4), torch.zeros(2), meta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = ECGDataset(torch.zeros(2, 1, 4), torch.zeros(2), DatasetMeta(
            name="t", fs=125.0, classes=("a",), units="normalized [0, 1]", ids=np.zeros(2), uv_scale=np.ones(2)))
    assert len(ok.meta.uv_scale) == 2
