"""Figures of the ``uap`` step of the hirano2021 reproduction (Hirano, Minagi & Takemoto, BMC Medical Imaging
21:9, 2021): the fitted universal perturbations themselves and clean / perturbed test images, as PNG files.

Presentation only: the numbers these figures show are computed and tested in :mod:`medrobust.reproduce.hirano_uap`
(which calls :func:`uap_figures`; this module imports nothing from it).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrobust.atomic import atomic_write_bytes


def save_png(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` as a PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend unless a backend was chosen already (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def uap_figures(out: Path, records: list[dict[str, Any]], x_test: torch.Tensor, clean: torch.Tensor, model: Any,
                bounds: tuple[float, float] | None, config: dict[str, Any], classes: list[str]) -> None:
    """``figures/uaps.png`` (every UAP of the primary method) and ``figures/examples.png`` (clean test images
    and the same images with the primary method's non-targeted L2 UAP at the largest ζ)."""
    plt = pyplot()
    (out / "figures").mkdir(exist_ok=True)
    primary = config["methods"][0]
    mine = [r for r in records if r["method"] == primary]
    rows = sorted({(r["norm"], r["zeta"]) for r in mine})
    cols = sorted({-1 if r["target"] is None else r["target"] for r in mine})
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols), 2.2 * len(rows)), squeeze=False)
    for r in mine:
        ax = axes[rows.index((r["norm"], r["zeta"]))][cols.index(-1 if r["target"] is None else r["target"])]
        v = np.load(out / "units" / f"{r['key']}.npz")["delta"]
        img = v.mean(0)
        lim = float(np.abs(img).max()) or 1.0
        ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim)
        what = "non-targeted" if r["target"] is None else f"→ {classes[r['target']]}"
        ax.set_title(f"{r['norm']} ζ={r['zeta']:g} {what}\nR_f test {r['test']['fooling_rate']:.2f}", fontsize=7)
        ax.axis("off")
    fig.suptitle(f"UAPs ({primary}); colour scale per panel", fontsize=8)
    save_png(fig, out / "figures" / "uaps.png")
    main = [r for r in mine if r["target"] is None]
    if not main or not config["examples"]:
        return
    best = max(main, key=lambda r: (r["norm"] == "l2", r["zeta"]))
    v = torch.from_numpy(np.load(out / "units" / f"{best['key']}.npz")["delta"])
    n = min(config["examples"], len(x_test))
    z = x_test[:n] + v
    z = z.clamp(bounds[0], bounds[1]) if bounds is not None else z
    with torch.no_grad():
        adv = model(z).argmax(1)
    fig, axes = plt.subplots(2, n, figsize=(2.0 * n, 4.2), squeeze=False)
    for i in range(n):
        for row, (img, pred) in enumerate(((x_test[i], clean[i]), (z[i], adv[i]))):
            ax = axes[row][i]
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy() if img.shape[0] == 3 else img[0].numpy(),
                      cmap="gray", vmin=0, vmax=1)   # grey: channel 0 of a non-RGB image
            ax.set_title(("clean: " if row == 0 else "UAP: ") + classes[int(pred)], fontsize=7)
            ax.axis("off")
    fig.suptitle(f"{best['key']} (ξ = {best['xi']:.3g})", fontsize=8)
    save_png(fig, out / "figures" / "examples.png")
