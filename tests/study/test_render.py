"""Strips: one drawing path for both strips of a pair, ECG-paper scale, equal byte lengths, real length and lead."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medrobust.errors import DataError
from medrobust.study.render import MARGIN_MM, PAD_BLOCK, PX_PER_MM, pad_pair, pad_png, render_pair


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _ecg(n: int, fs: float) -> np.ndarray:
    t = np.arange(n) / fs
    return 0.8 * np.sin(2 * np.pi * 1.2 * t)


def test_pair_same_size_and_bytes_different_pixels() -> None:
    x = _ecg(300, 100.0)
    xa = x + 0.02 * np.random.default_rng(0).standard_normal(300)  # noisy: compresses worse than the clean strip
    s = render_pair(x, xa, fs=100.0, units="mV", lead="II")
    assert len(s.clean) == len(s.adversarial) and len(s.clean) % PAD_BLOCK == 0
    a, b = _pixels(s.clean), _pixels(s.adversarial)
    assert a.shape == b.shape == (s.height, s.width, 3)
    assert (a != b).any()  # the pixels do differ: the test of equal sizes is not vacuous
    # 3 s at 25 mm/s in one 10-s row: 250 mm of paper plus the margins, at PX_PER_MM
    assert s.width == round((MARGIN_MM[0] + 250 + MARGIN_MM[1]) * PX_PER_MM)
    assert s.seconds == pytest.approx(3.0) and "10 mm/mV" in s.axis_note


def test_common_amplitude_range_hides_a_large_perturbation() -> None:
    x = _ecg(300, 100.0)
    spike = x.copy()
    spike[150] += 3.0  # 3 mV spike only in the adversarial strip
    small = render_pair(x, x + 1e-3, fs=100.0, units="mV", lead="II")
    big = render_pair(x, spike, fs=100.0, units="mV", lead="II")
    # the clean strip is drawn on the same (taller) paper as its spiky partner: heights equal within a pair
    assert _pixels(big.clean).shape == _pixels(big.adversarial).shape
    # 10 mm/mV at PX_PER_MM: 3 mV more range is 30 mm = 120 px taller (ranges rounded to 0.5 mV)
    assert big.height - small.height == pytest.approx(3.0 * 10 * PX_PER_MM, abs=0.5 * 10 * PX_PER_MM + 1)


def test_rows_of_ten_seconds_and_real_length() -> None:
    x = _ecg(2500, 100.0)  # 25 s -> 3 rows
    s3 = render_pair(x, x + 1e-3, fs=100.0, units="mV", lead="I")
    s1 = render_pair(x[:900], x[:900] + 1e-3, fs=100.0, units="mV", lead="I")
    assert s3.seconds == pytest.approx(25.0) and s1.seconds == pytest.approx(9.0)
    assert s3.width == s1.width and s3.height > 2.5 * s1.height


def test_normalized_units_are_not_drawn_in_mv() -> None:
    x = np.clip(_ecg(200, 125.0) * 0.5 + 0.5, 0, 1)
    x[150:] = 0.0  # zero padding after the beat: not part of the record
    s = render_pair(x, x + 1e-3 * (x > 0), fs=125.0, units="normalized [0, 1]", lead="MLII")
    assert "no mV scale" in s.axis_note and "mV" not in s.axis_note.replace("no mV scale", "")
    assert s.seconds == pytest.approx(150 / 125.0)  # the padding is cut: the beat's real length


def test_pad_png_keeps_pixels_and_refuses_bad_input() -> None:
    x = _ecg(200, 100.0)
    s = render_pair(x, x, fs=100.0, units="mV", lead="I")
    raw = s.clean[: s.clean.find(b"mrPd") - 4] + s.clean[s.clean.rfind(b"IEND") - 4:]  # padding chunk removed
    assert len(raw) < len(s.clean)
    assert (_pixels(raw) == _pixels(s.clean)).all()
    a, b = pad_pair(raw, raw + b"")
    assert len(a) == len(b) == PAD_BLOCK * -(-(len(raw) + 12) // PAD_BLOCK)
    with pytest.raises(DataError, match="cannot be padded"):
        pad_png(raw, len(raw) + 11)
    with pytest.raises(DataError, match="not a PNG"):
        pad_png(b"GIF89a", 100)


def test_bad_pairs_are_refused() -> None:
    with pytest.raises(DataError, match="same length"):
        render_pair(np.zeros(10), np.zeros(11), fs=100.0, units="mV", lead="I")
    with pytest.raises(DataError, match="sampling rate"):
        render_pair(np.zeros(10), np.zeros(10), fs=float("nan"), units="mV", lead="I")
    with pytest.raises(DataError, match="NaN"):
        render_pair(np.zeros(10), np.full(10, np.nan), fs=100.0, units="mV", lead="I")


def test_recorded_uv_scale_puts_scaled_beats_on_paper() -> None:
    x = np.clip(_ecg(150, 125.0) * 0.5 + 0.5, 0, 1)
    plain = render_pair(x, x + 1e-3, fs=125.0, units="normalized [0, 1]", lead="MLII")
    mv = render_pair(x, x + 1e-3, fs=125.0, units="normalized [0, 1]", lead="MLII", uv_scale=6000.0, uv_offset=0.0)
    assert "10 mm/mV" in mv.axis_note and "no mV scale" not in mv.axis_note
    # x spans 0.1..0.9(+0.001). Unscaled: 0..2 "mV", padded by 0.2 and rounded to 0.5 mV -> [-0.5, 2.5], 3 mV.
    # 6000 µV per unit: 0.6..5.406 mV, padded by 0.48 -> [0.12, 5.89] -> [0, 6], 6 mV: 3 mV = 30 mm taller
    assert mv.height - plain.height == round(3.0 * 10 * PX_PER_MM)
