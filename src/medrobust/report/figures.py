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

from medrobust.report.ecg_paper import amplitude_label, draw_paper, magnification, window

DPI = 110
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _eps_axis_label(card: dict[str, Any]) -> str:
    tm = card["threat_model"]
    unit = tm.get("units") or ""
    mode = tm.get("eps_mode", "abs")
    if mode == "ptp":
        return f"ε ({tm['norm']}, fraction of peak-to-peak)"
    if mode == "snr_db":
        return "ε (target SNR, dB)"
    return f"ε ({tm['norm']}, {unit})"


def robustness_curves(card: dict[str, Any]) -> bytes:
    """Accuracy versus ε: the ensemble's worst case, each attack, and the minimal-ε curve."""
    curves = card["curves"]
    eps = curves["eps"]
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    kind = curves.get("kind", "")
    for i, (label, c) in enumerate(curves["attacks"].items()):
        ax.plot(eps, c["accuracy"], marker="o", ms=4, lw=1.4, color=_COLORS[i % len(_COLORS)],
                label=f"{label} (AUC {c['auc']:.3f})" if c.get("auc") is not None else label)
    ens = curves["ensemble"]
    ax.plot(eps, ens["accuracy"], marker="s", ms=5, lw=2.6, color="black",
            label=f"ensemble worst case (AUC {ens['auc']:.3f})" if ens.get("auc") is not None else "ensemble")
    me = card.get("minimal_eps")
    if me:
        ax.plot(me["curve"]["eps"], me["curve"]["accuracy"], ls="--", lw=1.4, color="crimson",
                label=f"from minimal ε, one run (AUC {me['auc']:.3f})")
    ax.set_xlabel(_eps_axis_label(card))
    ax.set_ylabel("accuracy under attack")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Robustness curves" + (f" — per-attack curves: {kind}" if kind else ""), fontsize=9)
    uv = card["threat_model"].get("eps_uv")
    if uv:
        sec = ax.secondary_xaxis("top", functions=(lambda v: v * uv[-1] / card["threat_model"]["eps"][-1],
                                                   lambda v: v * card["threat_model"]["eps"][-1] / uv[-1]))
        sec.set_xlabel("ε (µV)")
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


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


def _plot_overlay(ax: Any, t: np.ndarray, clean: np.ndarray, adv: np.ndarray, k: float, units: str,
                  adv_label: str) -> None:
    delta = adv - clean
    offset = float(clean.min()) - 0.3 - float((delta * k).max())
    lo = min(float(clean.min()), float(adv.min()), offset + float((delta * k).min()))
    hi = max(float(clean.max()), float(adv.max()))
    draw_paper(ax, t0=float(t[0]), t1=float(t[-1]), y0=lo - 0.05, y1=hi + 0.05)
    ax.plot(t, clean, color="black", lw=1.0, label="clean", zorder=3)
    ax.plot(t, adv, color="#d62728", lw=0.9, alpha=0.85, label=adv_label, zorder=4)
    ax.plot(t, offset + delta * k, color="#1f4e9c", lw=0.9, label=f"perturbation × {k:g} (offset)", zorder=3)
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_ylabel(amplitude_label(units), fontsize=8)
    ax.legend(fontsize=6.5, loc="upper right", framealpha=0.85)


def ecg_example(card: dict[str, Any], ex: dict[str, np.ndarray], i: int, *, max_leads: int = 3) -> bytes:
    """One record on ECG paper: clean, adversarial and the magnified perturbation, per lead (up to ``max_leads``)."""
    fs = float(ex["fs"])
    units = str(ex["units"])
    classes = [str(c) for c in ex["classes"]]
    labels = [str(s) for s in ex["labels"]]
    m, e = _example_choice(ex, i)
    x = ex["x"][i]
    xa = ex["x_adv"][m, e, i]
    leads = [str(s) for s in ex["leads"]] if len(ex["leads"]) == x.shape[0] else [f"lead {j}" for j in range(x.shape[0])]
    a, b = window(x.shape[-1], fs, x)
    t = np.arange(a, b) / fs
    n_leads = min(x.shape[0], max_leads)
    k = magnification(x[:, a:b], xa[:, a:b] - x[:, a:b])
    dur = (b - a) / fs
    fig = Figure(figsize=(max(6.0, min(16.0, 3.2 * dur + 2.0)), 3.2 * n_leads + 0.3))
    y, cp, ap = int(ex["y"][i]), int(ex["clean_pred"][i]), int(ex["adv_pred"][m, e, i])
    for j in range(n_leads):
        ax = fig.add_subplot(n_leads, 1, j + 1)
        _plot_overlay(ax, t, x[j, a:b], xa[j, a:b], k, units, f"adversarial ({labels[m]})")
        ax.set_title(f"{leads[j]}", fontsize=8, loc="left")
    broke = bool(ex["success"][m, e, i])
    fig.suptitle(
        f"record {ex['ids'][i]} (sample {int(ex['index'][i])}): true {classes[y]}, clean prediction {classes[cp]}, "
        f"{labels[m]} at ε = {float(ex['eps'][e]):g}: prediction {classes[ap]}"
        + ("" if broke else " (attack failed at every ε)"), fontsize=8.5)
    fig.tight_layout()
    return _png(fig)


def sap_vs_pgd(card: dict[str, Any], ex: dict[str, np.ndarray]) -> bytes | None:
    """PGD and SAP on the same record and ε: adversarial signals and perturbations (same magnification)."""
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
    fs, units = float(ex["fs"]), str(ex["units"])
    classes = [str(c) for c in ex["classes"]]
    x = ex["x"][i, 0]
    a, b = window(x.shape[-1], fs, ex["x"][i])
    t = np.arange(a, b) / fs
    deltas = [ex["x_adv"][j, e, i, 0, a:b] - x[a:b] for j in (pgd, sap)]
    k = min(magnification(x[a:b], d) for d in deltas)
    dur = (b - a) / fs
    fig = Figure(figsize=(max(6.0, min(16.0, 3.2 * dur + 2.0)), 6.8))
    hf = {}
    from medrobust.evaluation.perturbation import DEFAULT_CUTOFF_HZ, high_frequency_fraction

    cutoff = float(card["protocol"].get("hf_cutoff_hz", DEFAULT_CUTOFF_HZ))
    for row, j in enumerate((pgd, sap)):
        ax = fig.add_subplot(2, 1, row + 1)
        d_full = ex["x_adv"][j, e, i] - ex["x"][i]
        if fs and cutoff < fs / 2 and np.abs(d_full).max() > 0:
            hf[j] = float(high_frequency_fraction(d_full[None], fs=fs, cutoff_hz=cutoff)[0])
        _plot_overlay(ax, t, x[a:b], ex["x_adv"][j, e, i, 0, a:b], k, units, f"adversarial ({labels[j]})")
        pred = classes[int(ex["adv_pred"][j, e, i])]
        extra = f", energy above {cutoff:g} Hz: {hf[j]:.1%}" if j in hf else ""
        ax.set_title(f"{labels[j]}: prediction {pred}{'' if succ[j, e, i] else ' (failed)'}{extra}", fontsize=8,
                     loc="left")
    fig.suptitle(f"SAP versus PGD on record {ex['ids'][i]} (true {classes[int(ex['y'][i])]}), ε = "
                 f"{float(ex['eps'][e]):g}, perturbations × {k:g}", fontsize=9)
    fig.tight_layout()
    return _png(fig)


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
