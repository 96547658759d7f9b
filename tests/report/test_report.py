"""Reports: Markdown and self-contained HTML; the HTML renders in headless Chromium with every figure."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.attacks import Attack, registry
from medrobust.attacks.base import AttackContext
from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.evaluation.card import read_npz
from medrobust.evaluation import ProtocolConfig, evaluate
from medrobust.report import write_report
from medrobust.report.figures import find_universal
from medrobust.report.ecg_paper import MINOR_AMP, MINOR_S, PAPER_ASPECT, draw_paper, magnification, window

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


def test_html_renders_in_headless_chromium(ecg_run: Path, tmp_path: Path, chromium: str) -> None:
    exe = chromium
    html = ecg_run / "report.html"
    n_img = html.read_text().count("<img ")
    assert n_img == 6   # curves, sensitivity, confusion, SAP vs PGD, 2 ECG records
    shot = tmp_path / "report.png"    # kept as a test artefact under the pytest tmp dir
    dom = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                          "--window-size=1200,2400", f"--screenshot={shot}", "--dump-dom", html.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], f"console output while rendering the report: {console}"
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stdout[:500]
    total = re.search(r'data-figures-total="(\d+)"', body.group(1))
    rendered = re.search(r'data-figures-rendered="(\d+)"', body.group(1))
    assert total and rendered, f"the report's load script did not run: {body.group(0)}"
    assert int(total.group(1)) == int(rendered.group(1)) == n_img
    assert shot.is_file() and shot.stat().st_size > 20_000
    # the check can fail: a copy with one corrupt figure is caught on the console and in the count
    broken = tmp_path / "broken.html"
    broken.write_text(html.read_text().replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAAA", 1))
    bad = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}",
                          "--virtual-time-budget=5000", "--dump-dom", broken.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert "figure failed to render" in bad.stderr
    assert f'data-figures-rendered="{n_img - 1}"' in bad.stdout


def test_report_is_self_contained_and_matches_the_card(ecg_run: Path) -> None:
    card = json.loads((ecg_run / "card.json").read_text())
    html = (ecg_run / "report.html").read_text()
    srcs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert srcs and all(s.startswith("data:") for s in srcs), "the HTML must not load anything"
    md = (ecg_run / "report.md").read_text()
    for name in re.findall(r"\(figures/([^)]+\.png)\)", md):
        assert (ecg_run / "figures" / name).stat().st_size > 5_000
    for section in ("## Reliability flags", "## Clean performance", "## Robustness", "## Minimal adversarial ε",
                    "## Reproducibility"):
        assert section in md
    r = card["results"][0]["robust_accuracy"]
    assert f"{r['value']:.4f} ({r['numerator']}/{r['denominator']})" in md
    assert "sap_vs_pgd.png" in md and "ecg_0.png" in md and "ecg_1.png" in md and "ecg_2.png" not in md
    assert card["environment"]["torch_version"] in md


class TinyConv2d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 12 * 12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class FixedPattern(Attack):
    """A stand-in universal perturbation: the same ±ε pattern added to every input."""

    name = "test_fixed_pattern"

    def _run(self, ctx: AttackContext) -> None:
        act = ctx.active(only_unsuccessful=False)
        pattern = torch.where(torch.arange(act.x[0].numel()) % 3 == 0, 1.0, -1.0).view(1, *act.x.shape[1:])
        x_in, logits, _, _ = ctx.evaluate(act, ctx.constrain(act, pattern * act.eps.view(-1, 1, 1, 1)),
                                          need_grad=False)
        ctx.record(act, x_in, logits)
        ctx.record_final(act, x_in, logits)


def test_image_report_with_examples_and_universal_perturbation(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._ATTACKS, FixedPattern.name, FixedPattern)
    model = TinyConv2d().eval()
    x = torch.rand(12, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    meta = DatasetMeta(name="toy-images", fs=0.0, classes=("a", "b", "c"), units="intensity [0, 1]",
                       ids=np.array([f"img{i}" for i in range(12)]), leads=("gray",))
    evaluate(model, ECGDataset(x, y, meta),
             ProtocolConfig(attacks=["fgsm", FixedPattern.name], eps=(0.05, 0.3), n_examples=3, bounds=None,
                            mode="individual", large_eps_check=False), out_dir=tmp_path, progress=False)
    ex = read_npz(tmp_path / "examples.npz")
    label, eps, uap = find_universal(ex)
    assert (label, eps) == (FixedPattern.name, 0.3) and np.abs(uap).max() == pytest.approx(0.3)
    write_report(tmp_path, progress=False)
    md = (tmp_path / "report.md").read_text()
    assert "image_examples.png" in md and "universal_perturbation.png" in md
    assert "ecg_0.png" not in md and "sap_vs_pgd" not in md
    assert (tmp_path / "figures" / "image_examples.png").is_file()


def test_ecg_paper_grid_and_scales() -> None:
    from matplotlib.figure import Figure

    ax = Figure().add_subplot(1, 1, 1)
    draw_paper(ax, t0=0.0, t1=1.5, y0=-0.3, y1=1.2)
    assert ax.get_aspect() == pytest.approx(PAPER_ASPECT) == pytest.approx(0.4)   # 10 mm/mV over 25 mm/s
    assert ax.get_xlim() == (0.0, pytest.approx(1.6)) and ax.get_ylim() == (-0.5, 1.5)
    minor, major = ax.collections
    xs = sorted({round(seg[0, 0], 6) for seg in minor.get_segments() + major.get_segments() if seg[0, 0] == seg[1, 0]})
    assert np.allclose(np.diff(xs), MINOR_S)
    ys = sorted({round(seg[0, 1], 6) for seg in major.get_segments() if seg[0, 1] == seg[1, 1]})
    assert np.allclose(np.diff(ys), 5 * MINOR_AMP)
    sig = np.linspace(0, 1, 100)
    assert magnification(sig, 0.01 * np.sin(sig * 20)) == 20.0   # ptp 0.02 -> 0.5 / 0.02 = 25 -> 20
    assert magnification(sig, sig) == 1.0
    x = np.zeros((1, 5000))
    x[0, 1200:] = 1.0
    assert window(5000, 500.0, x) == (1200, 3700)
