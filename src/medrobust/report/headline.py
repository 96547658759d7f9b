"""The report's one-sentence headline, and the µV / SNR readings of a radius, all computed from the card.

Rule (:func:`headline`):

* the curve read is the ensemble's robust accuracy (pointwise worst case over the attacks, every evaluated
  sample in the denominator, clean-misclassified samples counted as wrong) at the swept radii;
* the threshold is an absolute accuracy of :data:`THRESHOLD` (50 %); the radius reported is the first one
  of the sweep, in order of attack strength (increasing ε; decreasing target SNR for ``eps_mode="snr_db"``),
  at which that accuracy is **below** the threshold — a measured grid point, not an interpolation;
* the radius is also given in µV when the card can say it: with the units' one factor (``eps_uv``), or, for
  data scaled per sample, as the median over the evaluated beats of ``ε · scale_i``
  (``eps_uv_per_sample``), and with the median SNR (dB) of the ensemble's successful adversarial
  examples at that radius (absent in ``snr_db`` mode, where ε is the SNR);
* without a crossing: "stays at or above 50 % up to the largest ε …" with the accuracy there; when the
  clean accuracy is already below 50 % the sentence says that instead;
* with a minimal-ε section, the median minimal adversarial ε of the clean-correct samples broken within the
  largest ε (and how many that is), in µV too when the card gives it.
"""

from __future__ import annotations

from typing import Any

THRESHOLD = 0.5
"""Accuracy below which the headline says the model has fallen (absolute, on the evaluated samples)."""


def _num(v: float, digits: int = 3) -> str:
    return f"{v:.{digits}g}"


def fmt_uv(v: Any) -> str:
    """A µV value with the precision that matters: ``43``, ``4.2``, ``0.53``; ``–`` for none."""
    if v is None or v != v:
        return "–"
    v = float(v)
    return f"{v:.0f}" if abs(v) >= 10 else f"{v:.2g}"


def _pct(v: float) -> str:
    return f"{100.0 * v:.1f} %"


def strength_order(card: dict[str, Any]) -> list[int]:
    """Indices of ``card["results"]`` from the weakest to the strongest attack radius."""
    n = len(card["results"])
    eps = [float(r["eps"]) for r in card["results"]]
    order = sorted(range(n), key=lambda e: eps[e])
    return order[::-1] if card["threat_model"].get("eps_mode") == "snr_db" else order


def uv_of_eps(card: dict[str, Any], e: int) -> dict[str, float] | None:
    """Radius ``e`` (index into ``threat_model.eps``) in µV: ``{"median", "min", "max", "per_sample"}`` or ``None``.

    One physical factor gives ``min == median == max`` and ``per_sample`` ``False``; a per-sample scale gives
    the median and range over the evaluated samples of ``ε · scale_i`` and ``per_sample`` ``True``.
    """
    tm = card["threat_model"]
    per = tm.get("eps_uv_per_sample")
    if per and per[e]:
        return {**per[e], "per_sample": True}
    uv = tm.get("eps_uv")
    if uv and uv[e] is not None:
        v = float(uv[e])
        return {"median": v, "min": v, "max": v, "per_sample": False}
    return None


def describe_uv(uv: dict[str, Any] | None, *, with_range: bool = False) -> str:
    """``"≈ 43 µV median over the beats"`` (``"… (20–90 µV)"`` with ``with_range``), ``"= 50 µV"``, or ``""``."""
    if not uv:
        return ""
    if not uv["per_sample"]:
        return f"= {fmt_uv(uv['median'])} µV"
    rng = f" ({fmt_uv(uv['min'])}–{fmt_uv(uv['max'])} µV)" if with_range else ""
    return f"≈ {fmt_uv(uv['median'])} µV median over the beats{rng}"


def snr_at(card: dict[str, Any], e: int) -> float | None:
    """Median SNR (dB) of the ensemble's successful adversarial examples at radius ``e`` (``None``: none, or δ = 0)."""
    if card["threat_model"].get("eps_mode") == "snr_db":
        return None
    snr = (card["results"][e].get("perturbation") or {}).get("snr_db") or {}
    return snr.get("median")


def _at(card: dict[str, Any], e: int) -> str:
    bits = [describe_uv(uv_of_eps(card, e))]
    snr = snr_at(card, e)
    if snr is not None:
        bits.append(f"median SNR {snr:.0f} dB")
    bits = [b for b in bits if b]
    return f" ({', '.join(bits)})" if bits else ""


def _eps_name(card: dict[str, Any], e: int) -> str:
    eps = float(card["results"][e]["eps"])
    if card["threat_model"].get("eps_mode") == "snr_db":
        return f"a target SNR of {_num(eps)} dB"
    return f"ε = {_num(eps)}"


def _minimal_clause(card: dict[str, Any]) -> str:
    me = card.get("minimal_eps")
    if not me:
        return ""
    q = me.get("quantiles_of_broken")
    if not q:
        return (f"; no clean-correct sample was broken within ε ≤ {_num(me['eps_max'])} in the minimal-ε search")
    quv = me.get("quantiles_of_broken_uv")
    uv = ""
    if quv:
        uv = f" (≈ {fmt_uv(quv['median'])} µV median over those beats)"
    else:
        tm = card["threat_model"]
        if tm.get("eps_uv") and tm["eps_uv"][-1] is not None:
            uv = f" (= {fmt_uv(q['median'] * tm['eps_uv'][-1] / tm['eps'][-1])} µV)"
    return (f"; median minimal adversarial ε {_num(q['median'])}{uv} over the {me['n_broken_within_eps_max']} of "
            f"{me['n_clean_correct']} clean-correct samples broken within ε ≤ {_num(me['eps_max'])}")


def headline(card: dict[str, Any]) -> str:
    """The report's one-sentence summary of ``card`` (see the module docstring for the rule)."""
    clean = card["clean"]["accuracy"].get("value")
    if clean is None or not card.get("results"):
        return "No headline: the run evaluated no samples."
    thr = _pct(THRESHOLD).replace(".0 %", " %")
    if clean < THRESHOLD:
        first = f"Clean accuracy is already below {thr} ({_pct(clean)})"
    else:
        order = strength_order(card)
        cross = next((e for e in order if (card["results"][e]["robust_accuracy"].get("value") or 0.0) < THRESHOLD),
                     None)
        e = order[-1] if cross is None else cross
        acc = card["results"][e]["robust_accuracy"]["value"]
        where = f"{_eps_name(card, e)}{_at(card, e)}: {_pct(acc)} there, {_pct(clean)} clean"
        first = (f"Accuracy falls below {thr} at {where}" if cross is not None
                 else f"Accuracy stays at or above {thr} up to the strongest radius, {where}")
    if card.get("degenerate_model"):
        first = "Degenerate model, so not a measure of robustness: " + first[0].lower() + first[1:]
    return first + _minimal_clause(card) + "."
