"""What a number in a dataset means: one :class:`Units` object for data, evaluation, defences and reports.

Datasets record their units as a string in ``meta.units`` (``"mV"``, ``"normalized [0, 1]"``,
``"max-abs scaled [-1, 1]"``, ``"adc"``, ``"intensity [0, 1]"``). :meth:`Units.parse` turns that string into
the facts every consumer needs, so that ``bounds="auto"`` means the same in an attack, a defence and the
evaluation protocol, and a radius is converted to µV the same way in the card and in the report.

- ``bounds``: the closed range the data lives in (``(0, 1)`` for min-max scaled beats and images,
  ``(-1, 1)`` for max-abs scaled records), ``None`` for physical units.
- ``uv_per_unit``: µV per data unit (1000 for mV; 1 for ADC counts at the CinC 2017 gain of 1000/mV,
  Clifford et al., CinC 2017; ``None`` for normalised data, whose physical scale differs per beat).
- ``kind``: ``"ecg-mv"``, ``"ecg-normalized"``, ``"ecg-maxabs"``, ``"ecg-adc"`` or ``"image"`` (selects the
  standard evaluation protocol).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medrobust.errors import ConfigError

_RANGE = re.compile(r"\[\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\]")
_GAIN = re.compile(r"gain\s*([\d.]+)")
_PHYSICAL_UV: dict[str, float] = {"mv": 1e3, "v": 1e6, "uv": 1.0, "µv": 1.0, "μv": 1.0}
ADC_DEFAULT_GAIN_PER_MV = 1000.0
"""ADC counts per mV assumed for ``"adc"`` data without a stated gain (CinC 2017 AliveCor records)."""


@dataclass(frozen=True)
class Units:
    """Parsed data units (see the module docstring)."""

    name: str
    kind: str
    bounds: tuple[float, float] | None
    uv_per_unit: float | None

    @classmethod
    def parse(cls, units: str | None, *, fs: float | None = None) -> "Units":
        """Units from a dataset's ``meta.units`` string (``fs == 0`` marks image data)."""
        name = str(units or "").strip()
        u = name.lower()
        m = _RANGE.search(u)
        bounds = None
        if m:
            lo, hi = float(m.group(1)), float(m.group(2))
            bounds = (lo, hi) if lo < hi else None
        if u.startswith("intensity") or (fs is not None and not fs):
            return cls(name, "image", bounds, None)
        if u in _PHYSICAL_UV:
            return cls(name, "ecg-mv", None, _PHYSICAL_UV[u])
        if u.startswith("normalized"):
            return cls(name, "ecg-normalized", bounds, None)
        if u.startswith("max-abs"):
            return cls(name, "ecg-maxabs", bounds, None)
        if u.startswith("adc"):
            g = _GAIN.search(u)
            gain = float(g.group(1)) if g else ADC_DEFAULT_GAIN_PER_MV
            return cls(name, "ecg-adc", None, 1e3 / gain)
        return cls(name, "unknown", bounds, None)

    @property
    def physical(self) -> bool:
        """``True`` when a value converts to µV with one factor for the whole dataset."""
        return self.uv_per_unit is not None

    def to_uv(self, value: float) -> float | None:
        """``value`` (a radius in data units) in µV, or ``None`` for non-physical units."""
        return None if self.uv_per_unit is None else float(value) * self.uv_per_unit

    def require_kind(self) -> str:
        """The kind, or :class:`ConfigError` when the units are not recognised."""
        if self.kind == "unknown":
            raise ConfigError(
                f"no standard protocol for data in units {self.name!r}; pass the attacks and radii yourself "
                "(known units: 'mV', 'normalized [0, 1]', 'max-abs scaled [-1, 1]', 'adc', 'intensity [0, 1]')."
            )
        return self.kind


def resolve_bounds(bounds: object, units: str | None) -> tuple[float, float] | None:
    """``bounds`` as given, or, for ``"auto"``, the natural range of ``units`` (``None`` when unbounded)."""
    if isinstance(bounds, str):
        if bounds != "auto":
            raise ConfigError(f"bounds must be None, 'auto' or a pair (lo, hi), got {bounds!r}.")
        return Units.parse(units).bounds
    if bounds is None:
        return None
    lo, hi = bounds  # type: ignore[misc]
    return (float(lo), float(hi))
