"""Report figures, rendered with matplotlib's Agg canvas to PNG bytes (no pyplot, no global backend).

Every function takes the result card (and the examples archive where needed) and returns PNG
bytes, or ``None`` when the run holds nothing to draw (e.g. no SAP and PGD pair).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medrobust.report.ecg_paper import EcgView, draw_paper, ecg_view, magnification, valid_samples, window

DPI = 110
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def eps_axis_label(card: dict[str, Any]) -> str:
    """The x-axis label of a card's ε: its norm and units, or the relative scale it was given in."""
    tm = card["threat_model"]
    unit = tm.get("units") or ""
    mode = tm.get("eps_mode", "abs")
    if mode == "ptp":
        return f"ε ({tm['norm']}, fraction of peak-to-peak)"
    if mode == "snr_db":
        return "ε (target SNR, dB)"
    return f"ε ({tm['norm']}, {unit})"


_ATTACK_STYLES = [("--", "o"), ("-.", "^"), (":", "v"), ((0, (5, 1, 1, 1)), "D"), ((0, (1, 1)), "P"),
                  ((0, (3, 1, 1, 1, 1, 1)), "X")]


def robustness_curves_figure(card: dict[str, Any]) -> Figure:
    """Accuracy versus ε: the ensemble's worst case, each attack, the minimal-ε curve, µV and SNR where known.

    The ensemble is a thick translucent solid line under the attacks, each attack its own dash pattern and
    (hollow) marker, so that the per-attack curves stay visible where they coincide with the ensemble (in
    sequential mode the last attack's cumulative curve *is* the ensemble's). Each ensemble point is annotated
    with the median SNR (dB) of the successful adversarial examples there; the top axis gives ε in µV (one
    factor, or for data scaled per sample the median beat's scale).
    """
    curves = card["curves"]
    eps = curves["eps"]
    fig = Figure(figsize=(7.0, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    ens = curves["ensemble"]
    ax.plot(eps, ens["accuracy"], ls="-", marker="s", ms=7, lw=4.0, color="black", alpha=0.45, zorder=2,
            label=f"ensemble worst case (AUC {ens['auc']:.3f})" if ens.get("auc") is not None else "ensemble worst case")
    for i, (label, c) in enumerate(curves["attacks"].items()):
        ls, mk = _ATTACK_STYLES[i % len(_ATTACK_STYLES)]
        ax.plot(eps, c["accuracy"], ls=ls, marker=mk, ms=5, mfc="none", mew=1.2, lw=1.5,
                color=_COLORS[i % len(_COLORS)], zorder=3,
                label=f"{label} (AUC {c['auc']:.3f})" if c.get("auc") is not None else label)
    me = card.get("minimal_eps")
    if me:
        ax.plot(me["curve"]["eps"], me["curve"]["accuracy"], ls=(0, (6, 2)), lw=1.2, color="crimson", zorder=2.5,
                label=f"from minimal ε, one run (AUC {me['auc']:.3f})")
    _annotate_snr(ax, card)
    ax.set_xlabel(eps_axis_label(card))
    ax.set_ylabel("accuracy under attack")
    ax.set_ylim(-0.02, 1.08)
    ax.grid(alpha=0.3)
    kind = curves.get("kind", "")
    ax.set_title("Robustness curves" + (f" — per-attack curves: {kind}" if kind else ""), fontsize=9)
    _uv_axis(ax, card)
    ax.legend(fontsize=7, loc="best")
    return fig


def robustness_curves(card: dict[str, Any]) -> bytes:
    """:func:`robustness_curves_figure` as PNG bytes."""
    return _png(robustness_curves_figure(card))


def _annotate_snr(ax: Any, card: dict[str, Any]) -> None:
    """Median SNR (dB) of the ensemble's successful adversarial examples beside each ensemble point."""
    from medrobust.report.headline import snr_at

    eps = [float(v) for v in card["curves"]["eps"]]
    acc = card["curves"]["ensemble"]["accuracy"]
    shown = False
    for e, r in enumerate(card["results"]):
        snr = snr_at(card, e)
        if snr is None or float(r["eps"]) not in eps:
            continue
        j = eps.index(float(r["eps"]))
        ax.annotate(f"{snr:.0f} dB", (eps[j], acc[j]), textcoords="offset points", xytext=(5, 7), fontsize=7,
                    color="#444444")
        shown = True
    if shown:
        ax.text(0.99, 0.985, "labels: median SNR of the successful adversarial examples", transform=ax.transAxes,
                ha="right", va="top", fontsize=6.5, color="#444444")


def _uv_axis(ax: Any, card: dict[str, Any]) -> None:
    """A top axis in µV: the units' one factor, or the median beat's own scale (data scaled per sample)."""
    tm = card["threat_model"]
    if tm.get("eps_mode", "abs") != "abs":
        return
    uv, per = tm.get("eps_uv"), tm.get("eps_uv_per_sample")
    if uv and uv[-1]:
        factor, label = float(uv[-1]) / float(tm["eps"][-1]), "ε (µV)"
    elif per and per[-1]:
        factor = float(per[-1]["median"]) / float(tm["eps"][-1])
        label = f"ε (µV) for the median beat (scale {factor:.0f} µV per unit; beats differ)"
    else:
        return
    sec = ax.secondary_xaxis("top", functions=(lambda v: v * factor, lambda v: v / factor))
    sec.set_xlabel(label, fontsize=8)
    sec.tick_params(labelsize=7)


def per_class_sensitivity(card: dict[str, Any]) -> bytes:
    """Grouped bars: each class's sensitivity (recall) clean and under attack at every ε."""
    classes = card["data"]["classes"]
    series = [("clean", card["clean"]["metrics"]["sensitivity"])]
    series += [(f"ε = {r['eps']:g}", r["metrics"]["sensitivity"]) for r in card["results"]]
    k, s = len(classes), len(series)
    width = 0.8 / s
    fig = Figure(figsize=(max(6.0, 1.1 * k + 2), 3.8))
    ax = fig.add_subplot(1, 1, 1)
    cmap = [
        "#4d4d4d", *[c for c in ("#fdd49e", "#fdbb84", "#fc8d59", "#ef6548", "#d7301f", "#b30000", "#7f0000")]
    ]
    for j, (name, sens) in enumerate(series):
        vals = [sens.get(c, 0.0) for c in classes]
        ax.bar(np.arange(k) + (j - (s - 1) / 2) * width, vals, width, label=name, color=cmap[min(j, len(cmap) - 1)])
    ax.set_xticks(np.arange(k))
    ax.set_xticklabels(classes)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("sensitivity (recall)")
    ax.set_title("Per-class sensitivity under attack (ensemble worst case)", fontsize=9)
    ax.legend(fontsize=7, ncol=min(s, 6), loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def confusion_matrices(card: dict[str, Any]) -> bytes:
    """Clean and adversarial confusion matrices (rows: true class, columns: prediction)."""
    classes = card["data"]["classes"]
    mats = [("clean", np.asarray(card["clean"]["metrics"]["confusion"]))]
    mats += [(f"adversarial, ε = {r['eps']:g}", np.asarray(r["metrics"]["confusion"])) for r in card["results"]]
    cols = min(len(mats), 4)
    rows = (len(mats) + cols - 1) // cols
    size = max(2.6, 0.45 * len(classes) + 1.2)
    fig = Figure(figsize=(size * cols, size * rows + 0.3))
    for i, (title, cm) in enumerate(mats):
        ax = fig.add_subplot(rows, cols, i + 1)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for a in range(cm.shape[0]):
            for b in range(cm.shape[1]):
                ax.text(b, a, str(int(cm[a, b])), ha="center", va="center", fontsize=7,
                        color="white" if norm[a, b] > 0.6 else "black")
        ax.set_xticks(range(len(classes)))
        ax.set_yticks(range(len(classes)))
        ax.set_xticklabels(classes, fontsize=7)
        ax.set_yticklabels(classes, fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _example_choice(ex: dict[str, np.ndarray], i: int) -> tuple[int, int]:
    """(attack, ε) to show for example ``i``: the smallest ε some attack broke it at, first attack in order."""
    succ = ex["success"][:, :, i]  # (M, E)
    for e in range(succ.shape[1]):
        ms = np.nonzero(succ[:, e])[0]
        if len(ms):
            return int(ms[0]), e
    return 0, succ.shape[1] - 1


def example_view(ex: dict[str, np.ndarray], i: int) -> EcgView:
    """How example ``i`` is drawn (:func:`~medrobust.report.ecg_paper.ecg_view`: mV on ECG paper when possible)."""
    def one(key: str) -> float | None:
        return float(ex[key][i]) if key in ex and len(ex[key]) > i else None

    return ecg_view(str(ex["units"]), float(ex["fs"]) or None, uv_scale=one("uv_scale"), uv_offset=one("uv_offset"))


def example_span(ex: dict[str, np.ndarray], i: int, max_seconds: float = 5.0) -> tuple[int, int, np.ndarray]:
    """``(a, b, valid)``: the sample range drawn for example ``i`` (inside its signal, at most ``max_seconds``)
    and the boolean ``valid`` (signal, not padding; :func:`~medrobust.report.ecg_paper.valid_samples`) over it."""
    x = ex["x"][i]
    mask = ex["mask"][i] if "mask" in ex else None
    valid = valid_samples(x, str(ex["units"]), mask)
    if not valid.any():  # an all-padding record: draw it all rather than nothing
        valid = np.ones_like(valid)
    idx = np.nonzero(valid)[0]
    lo, hi = (int(idx[0]), int(idx[-1]) + 1) if len(idx) else (0, x.shape[-1])
    fs = float(ex["fs"]) or 1.0
    a, b = window(hi - lo, fs, x[..., lo:hi], max_seconds)
    return lo + a, lo + b, valid[lo + a: lo + b]


def example_caption(ex: dict[str, np.ndarray], i: int) -> str:
    """The caption of :func:`ecg_example` for example ``i``, true to the axes drawn."""
    view = example_view(ex, i)
    return (f"Record {ex['ids'][i]}: clean (black), adversarial (red) and the perturbation magnified (blue, offset); "
            f"{view.note}; padding not drawn.")


def _plot_overlay(ax: Any, t: np.ndarray, clean: np.ndarray, adv: np.ndarray, k: float, view: EcgView,
                  adv_label: str, valid: np.ndarray) -> None:
    """Clean, adversarial and magnified perturbation of one lead, in ``view``'s units; padding is ``nan``."""
    clean = np.where(valid, clean * view.scale + view.offset, np.nan)
    adv = np.where(valid, adv * view.scale + view.offset, np.nan)
    delta = adv - clean
    gap = 0.3 if view.paper else 0.3 * float(np.nanmax(clean) - np.nanmin(clean) or 1.0)
    offset = float(np.nanmin(clean)) - gap - float(np.nanmax(delta * k))
    lo = min(float(np.nanmin(clean)), float(np.nanmin(adv)), offset + float(np.nanmin(delta * k)))
    hi = max(float(np.nanmax(clean)), float(np.nanmax(adv)))
    if view.paper:
        draw_paper(ax, t0=float(t[0]), t1=float(t[-1]), y0=lo - 0.05, y1=hi + 0.05)
    else:
        pad = 0.05 * (hi - lo or 1.0)
        ax.set_xlim(float(t[0]), float(t[-1]))
        ax.set_ylim(lo - pad, hi + pad)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    ax.plot(t, clean, color="black", lw=1.0, label="clean", zorder=3)
    ax.plot(t, adv, color="#d62728", lw=0.9, alpha=0.85, label=adv_label, zorder=4)
    ax.plot(t, offset + delta * k, color="#1f4e9c", lw=0.9, label=f"perturbation × {k:g} (offset)", zorder=3)
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_ylabel(f"amplitude ({view.unit})", fontsize=8)
    ax.legend(fontsize=6.5, loc="upper right", framealpha=0.85)


def ecg_example_figure(card: dict[str, Any], ex: dict[str, np.ndarray], i: int, *, max_leads: int = 3) -> Figure:
    """One record: clean, adversarial and the magnified perturbation, per lead (up to ``max_leads``), on ECG paper
    in mV when the record converts to mV (:func:`example_view`), else on plain axes; padding is not drawn."""
    fs = float(ex["fs"]) or 1.0
    classes = [str(c) for c in ex["classes"]]
    labels = [str(s) for s in ex["labels"]]
    m, e = _example_choice(ex, i)
    x = ex["x"][i]
    xa = ex["x_adv"][m, e, i]
    leads = [str(s) for s in ex["leads"]] if len(ex["leads"]) == x.shape[0] else [f"lead {j}" for j in range(x.shape[0])]
    a, b, valid = example_span(ex, i)
    view = example_view(ex, i)
    t = np.arange(a, b) / fs
    n_leads = min(x.shape[0], max_leads)
    k = magnification(x[:, a:b][:, valid], (xa[:, a:b] - x[:, a:b])[:, valid])
    dur = (b - a) / fs
    fig = Figure(figsize=(max(6.0, min(16.0, 3.2 * dur + 2.0)), 3.2 * n_leads + 0.3))
    y, cp, ap = int(ex["y"][i]), int(ex["clean_pred"][i]), int(ex["adv_pred"][m, e, i])
    for j in range(n_leads):
        ax = fig.add_subplot(n_leads, 1, j + 1)
        _plot_overlay(ax, t, x[j, a:b], xa[j, a:b], k, view, f"adversarial ({labels[m]})", valid)
        ax.set_title(f"{leads[j]}", fontsize=8, loc="left")
    broke = bool(ex["success"][m, e, i])
    fig.suptitle(
        f"record {ex['ids'][i]} (sample {int(ex['index'][i])}): true {classes[y]}, clean prediction {classes[cp]}, "
        f"{labels[m]} at ε = {float(ex['eps'][e]):g}: prediction {classes[ap]}"
        + ("" if broke else " (attack failed at every ε)"), fontsize=8.5)
    fig.tight_layout()
    return fig


def ecg_example(card: dict[str, Any], ex: dict[str, np.ndarray], i: int, *, max_leads: int = 3) -> bytes:
    """:func:`ecg_example_figure` as PNG bytes."""
    return _png(ecg_example_figure(card, ex, i, max_leads=max_leads))


def _sap_pgd_choice(card: dict[str, Any], ex: dict[str, np.ndarray]) -> tuple[int, int, int, int] | None:
    """``(pgd member, sap member, ε index, example)`` for the SAP-versus-PGD panel, or ``None``."""
    labels = [str(s) for s in ex["labels"]]
    names = {m["label"]: m["name"] for m in card["protocol"]["members"]}
    pgd = next((j for j, lab in enumerate(labels) if names.get(lab) == "pgd"), None)
    sap = next((j for j, lab in enumerate(labels) if names.get(lab) == "sap"), None)
    if pgd is None or sap is None or ex["x"].ndim != 3 or len(ex["x"]) == 0:
        return None
    succ = ex["success"]
    both = succ[pgd] & succ[sap]  # (E, K)
    if both.any():
        e, i = (int(v[0]) for v in np.nonzero(both))
    else:
        e, i = succ.shape[1] - 1, 0
    return pgd, sap, e, i


def sap_vs_pgd_caption(card: dict[str, Any], ex: dict[str, np.ndarray]) -> str:
    """The caption of :func:`sap_vs_pgd`, true to its axes."""
    choice = _sap_pgd_choice(card, ex)
    note = "" if choice is None else example_view(ex, choice[3]).note
    return ("PGD versus SAP on the same record and ε: sign-gradient PGD spreads the perturbation over all frequencies, "
            "SAP's is smooth (Han et al. 2020)." + (f" {note[0].upper()}{note[1:]}." if note else "")
            + " Padding not drawn.")


def sap_vs_pgd_figure(card: dict[str, Any], ex: dict[str, np.ndarray]) -> Figure | None:
    """PGD and SAP on the same record and ε: adversarial signals and perturbations (same magnification)."""
    choice = _sap_pgd_choice(card, ex)
    if choice is None:
        return None
    pgd, sap, e, i = choice
    labels = [str(s) for s in ex["labels"]]
    succ = ex["success"]
    fs = float(ex["fs"])
    classes = [str(c) for c in ex["classes"]]
    x = ex["x"][i, 0]
    a, b, valid = example_span(ex, i)
    view = example_view(ex, i)
    t = np.arange(a, b) / (fs or 1.0)
    deltas = [(ex["x_adv"][j, e, i, 0, a:b] - x[a:b])[valid] for j in (pgd, sap)]
    k = min(magnification(x[a:b][valid], d) for d in deltas)
    dur = (b - a) / (fs or 1.0)
    fig = Figure(figsize=(max(6.0, min(16.0, 3.2 * dur + 2.0)), 6.8))
    hf = {}
    from medrobust.evaluation.perturbation import DEFAULT_CUTOFF_HZ, high_frequency_fraction

    cutoff = float(card["protocol"].get("hf_cutoff_hz", DEFAULT_CUTOFF_HZ))
    for row, j in enumerate((pgd, sap)):
        ax = fig.add_subplot(2, 1, row + 1)
        d_full = ex["x_adv"][j, e, i] - ex["x"][i]
        if fs and cutoff < fs / 2 and np.abs(d_full).max() > 0:
            hf[j] = float(high_frequency_fraction(d_full[None], fs=fs, cutoff_hz=cutoff)[0])
        _plot_overlay(ax, t, x[a:b], ex["x_adv"][j, e, i, 0, a:b], k, view, f"adversarial ({labels[j]})", valid)
        pred = classes[int(ex["adv_pred"][j, e, i])]
        extra = f", energy above {cutoff:g} Hz: {hf[j]:.1%}" if j in hf else ""
        ax.set_title(f"{labels[j]}: prediction {pred}{'' if succ[j, e, i] else ' (failed)'}{extra}", fontsize=8,
                     loc="left")
    fig.suptitle(f"SAP versus PGD on record {ex['ids'][i]} (true {classes[int(ex['y'][i])]}), ε = "
                 f"{float(ex['eps'][e]):g}, perturbations × {k:g}", fontsize=9)
    fig.tight_layout()
    return fig


def sap_vs_pgd(card: dict[str, Any], ex: dict[str, np.ndarray]) -> bytes | None:
    """:func:`sap_vs_pgd_figure` as PNG bytes (``None`` without a PGD and a SAP attack)."""
    fig = sap_vs_pgd_figure(card, ex)
    return None if fig is None else _png(fig)


def _to_image(a: np.ndarray) -> np.ndarray:
    """(C, H, W) → (H, W) or (H, W, 3) in [0, 1] for imshow."""
    if a.shape[0] == 1:
        return np.clip(a[0], 0, 1)
    return np.clip(np.moveaxis(a[:3], 0, -1), 0, 1)


def image_examples(card: dict[str, Any], ex: dict[str, np.ndarray]) -> bytes | None:
    """Images: per example, clean, adversarial and the perturbation (magnified around mid-grey)."""
    if ex["x"].ndim != 4 or len(ex["x"]) == 0:
        return None
    classes = [str(c) for c in ex["classes"]]
    labels = [str(s) for s in ex["labels"]]
    kcount = len(ex["x"])
    fig = Figure(figsize=(6.0, 2.1 * kcount))
    for i in range(kcount):
        m, e = _example_choice(ex, i)
        x, xa = ex["x"][i], ex["x_adv"][m, e, i]
        d = xa - x
        k = 0.5 / max(float(np.abs(d).max()), 1e-12)
        panels = [(x, f"clean: {classes[int(ex['clean_pred'][i])]}"),
                  (xa, f"{labels[m]} ε={float(ex['eps'][e]):.3g}: {classes[int(ex['adv_pred'][m, e, i])]}"),
                  (0.5 + d * k, f"perturbation × {k:.3g}")]
        for j, (img, title) in enumerate(panels):
            ax = fig.add_subplot(kcount, 3, 3 * i + j + 1)
            im = _to_image(img)
            ax.imshow(im, cmap="gray" if im.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def find_universal(ex: dict[str, np.ndarray]) -> tuple[str, float, np.ndarray] | None:
    """``(attack label, ε, δ)`` of a universal perturbation in the examples, or ``None``.

    Taken from ``ex["universal_perturbation"]`` when present, else detected: an attack whose
    perturbation is the same non-zero array on every example record (at least two) at some ε (a
    universal adversarial perturbation, Moosavi-Dezfooli et al., CVPR 2017) — the largest such ε.
    """
    if "universal_perturbation" in ex:
        return "universal", float("nan"), np.asarray(ex["universal_perturbation"])
    x, xa = ex["x"], ex["x_adv"]
    if len(x) < 2:
        return None
    labels = [str(s) for s in ex["labels"]]
    for m in range(xa.shape[0]):
        for e in reversed(range(xa.shape[1])):
            d = xa[m, e] - x
            scale = float(np.abs(d).max())
            if scale > 0 and np.allclose(d, d[:1], atol=1e-6 * max(scale, 1.0)):
                return labels[m], float(ex["eps"][e]), d[0]
    return None


def universal_perturbation(card: dict[str, Any], ex: dict[str, np.ndarray]) -> bytes | None:
    """The universal perturbation, when the run holds one (see :func:`find_universal`)."""
    found = find_universal(ex)
    if found is None:
        return None
    label, eps, uap = found
    title = f"universal perturbation ({label}" + (f", ε = {eps:g})" if eps == eps else ")")
    fig = Figure(figsize=(4.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    if uap.ndim == 3 and uap.shape[0] in (1, 3) and uap.shape[1] > 1:
        k = 0.5 / max(float(np.abs(uap).max()), 1e-12)
        im = _to_image(0.5 + uap * k)
        ax.imshow(im, cmap="gray" if im.ndim == 2 else None, vmin=0, vmax=1)
        ax.axis("off")
        ax.set_title(f"{title} × {k:.3g} around mid-grey", fontsize=8)
    else:
        sig = uap.reshape(-1, uap.shape[-1])
        fs = float(ex["fs"]) or 1.0
        t = np.arange(sig.shape[-1]) / fs
        for j in range(min(3, len(sig))):
            ax.plot(t, sig[j], lw=1.0)
        ax.set_xlabel("time (s)" if float(ex["fs"]) else "sample")
        ax.set_title(title, fontsize=8)
    return _png(fig)
