"""The README part of a universal-perturbation reproduction (``uap`` plans such as ``hirano2021``).

Hirano, Minagi & Takemoto, BMC Medical Imaging 21:9, 2021: the first table is paper claim | our number | command |
result file, each number read from ``<budget>/uap/<model>/uap.json`` with its 95 % Wilson interval; then the
non-targeted fooling rates per architecture, the targeted success per class, the random controls, the adversarial
retraining table (fooling rate of the base model and of its retrained copy, each against UAPs fitted on itself;
Moosavi-Dezfooli et al., CVPR 2017, §4) and the figure of the fooling rate against ζ per architecture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medrobust.data.image_ops import parse_size
from medrobust.evaluation.metrics import wilson_interval
from medrobust.reproduce.hirano_uap import fooled_flow
from medrobust.reproduce.plan import command, config_path

SUCCESS = 0.80
"""The paper's headline: UAPs reach more than 80 % success."""


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text("utf-8")) if path.is_file() else None


def _rate(k: int, n: int) -> str:
    if n == 0:
        return "– (no inputs)"
    lo, hi = wilson_interval(int(k), int(n))
    return f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]"


def _unit(res: dict[str, Any] | None, *, method: str, norm: str, zeta: float, target: int | None = None,
          ) -> dict[str, Any] | None:
    if res is None:
        return None
    return next((u for u in res["units"] if u["method"] == method and u["norm"] == norm
                 and abs(float(u["zeta"]) - float(zeta)) < 1e-12 and u["target"] == target), None)


def _fr(u: dict[str, Any] | None, split: str = "test") -> float | None:
    return None if u is None else u[split]["fooled"] / u[split]["n"]


def _fr_text(u: dict[str, Any] | None, split: str = "test") -> str:
    return "–" if u is None else _rate(u[split]["fooled"], u[split]["n"])


def _success(u: dict[str, Any] | None, t: int, split: str = "test", *, excluding: bool = False) -> str:
    if u is None:
        return "–"
    row = u[split]["targets"][t]
    return _rate(row["hit_not_target"], row["n_not_target"]) if excluding else _rate(row["hit"], u[split]["n"])


def _base_models(plan: dict[str, Any], results: dict[str, Any]) -> list[str]:
    return [m for m, spec in plan["models"].items() if spec.get("init") is None and results.get(m) is not None]


def _claim_models(plan: dict[str, Any], c: dict[str, Any], results: dict[str, Any]) -> list[str]:
    return list(c.get("models") or _base_models(plan, results))


def _cell(plan: dict[str, Any], c: dict[str, Any], results: dict[str, Any]) -> str:
    """Our number for one claim (see :data:`medrobust.reproduce.hirano_uap.CLAIM_METRICS`)."""
    method, norm, zeta = c.get("method", "fgsm"), c.get("norm", "l2"), c.get("zeta", 0.04)
    threshold = float(c.get("threshold", SUCCESS))
    models = _claim_models(plan, c, results)
    metric = c["metric"]
    if metric == "retraining":
        return _retraining_cell(plan, results, method=method, norm=norm, zeta=zeta)
    if metric == "targeted_one":
        mid, t = models[0], int(c["target"])
        u = _unit(results.get(mid), method=method, norm=norm, zeta=zeta, target=t)
        return f"{mid}: {_success(u, t)} (train {_success(u, t, 'train')})" if u else f"{mid}: not run here"
    parts, rates, every, evaluated = [], [], 0, 0
    for mid in models:
        res = results.get(mid)
        if metric == "targeted":
            k = res["k"] if res else 0
            us = [(t, _unit(res, method=method, norm=norm, zeta=zeta, target=t)) for t in range(k)]
            if not res or any(u is None for _, u in us):
                parts.append(f"{mid}: not run")
                continue
            mine = [u["test"]["targets"][t]["hit"] / u["test"]["n"] for t, u in us]
            rates += mine
            evaluated += 1
            every += int(all(r > threshold for r in mine))
            parts.append(f"{mid}: " + ", ".join(f"→{res['classes'][t]} {_success(u, t)}" for t, u in us))
            continue
        u = _unit(res, method=f"random_{c.get('control', 'uniform')}" if metric == "random" else method,
                  norm=norm, zeta=zeta)
        if u is None:
            parts.append(f"{mid}: not run")
            continue
        rates.append(_fr(u))
        parts.append(f"{mid}: {_fr_text(u)}")
    if not rates:
        return "<br>".join(parts) or "not run"
    head = {"nontargeted": f"{sum(r > threshold for r in rates)} of {len(rates)} models above {threshold:.2f}",
            "targeted": f"every target above {threshold:.2f} for {every} of {evaluated} models; "
                        f"{sum(r > threshold for r in rates)} of {len(rates)} (model, target) pairs",
            "random": f"highest {max(rates):.3f}",
            "architecture": f"range {min(rates):.3f}–{max(rates):.3f} (spread {max(rates) - min(rates):.3f})"}[metric]
    return "<br>".join([f"**{head}**", *parts])


def _retraining_pairs(plan: dict[str, Any], results: dict[str, Any]) -> list[tuple[str, str]]:
    return [(spec["init"], mid) for mid, spec in plan["models"].items()
            if spec.get("init") is not None and results.get(mid) is not None]


def _retraining_cell(plan: dict[str, Any], results: dict[str, Any], *, method: str, norm: str, zeta: float) -> str:
    parts, helped = [], 0
    pairs = _retraining_pairs(plan, results)
    for base, mid in pairs:
        before = _unit(results.get(base), method=method, norm=norm, zeta=zeta)
        after = _unit(results[mid], method=method, norm=norm, zeta=zeta)
        if before is None or after is None:
            parts.append(f"{mid}: not run")
            continue
        b, a = _fr(before), _fr(after)
        helped += int(a is not None and b is not None and a < b - 0.10)
        parts.append(f"{base}: {b:.3f} → {a:.3f}")
    if not pairs:
        return "not run"
    return "<br>".join([f"**fooling rate fell by more than 0.10 for {helped} of {len(pairs)} models**", *parts])


def _commands(root: Path, budget: str, mids: list[str]) -> tuple[str, str]:
    cmds = "<br>".join(f"`{command('uap', config_path(root / budget, 'uap', m))}`" for m in mids)
    files = "<br>".join(f"`{budget}/uap/{m}/uap.json`" for m in mids)
    return cmds, files


def _claims_table(plan: dict[str, Any], root: Path, budget: str, results: dict[str, Any]) -> list[str]:
    lines = ["| paper claim | paper | ours (test split, 95 % CI) | command | result file |", "|---|---|---|---|---|"]
    for c in plan.get("claims", []):
        mids = _claim_models(plan, c, results)
        if c["metric"] == "retraining":
            mids = [m for pair in _retraining_pairs(plan, results) for m in pair]
        cmds, files = _commands(root, budget, [m for m in mids if results.get(m) is not None])
        method = f"random {c.get('control', 'uniform')}" if c["metric"] == "random" else c.get("method", "fgsm")
        setting = f"{method}, {c.get('norm', 'l2')}, ζ = {float(c.get('zeta', 0.04)):.0%}"
        lines.append(f"| {c['claim']} ({setting}) | {c['paper']} | {_cell(plan, c, results)} | {cmds or '–'} | "
                     f"{files or '–'} |")
    return lines


def _stem(summary: dict[str, Any] | None) -> str:
    """The input stem a trained model used (``medrobust.models.vision``), from its training summary."""
    model = ((summary or {}).get("config") or {}).get("model") or {}
    kwargs = model.get("kwargs") or {}
    if model.get("name") == "inception_v3":
        return "ImageNet (input upsampled to 75×75)"
    small = kwargs.get("small_input")
    text = "small-input" if small else "ImageNet" if small is False else "default for the input size" if model else "–"
    return text + (", batch norm" if kwargs.get("batch_norm") else "")


def _data_name(data: dict[str, Any]) -> str:
    """``pneumoniamnist``, or ``pneumoniamnist 112×112`` for a dataset the plan resizes (option ``size``)."""
    options = data.get("options") or {}
    hw = parse_size(options.get("size"))
    return str(options.get("flag", data["name"])) + (f" {hw[0]}×{hw[1]}" if hw else "")


def _models_table(plan: dict[str, Any], root: Path, budget: str, results: dict[str, Any]) -> list[str]:
    grid = sorted({(u["method"], u["norm"], float(u["zeta"])) for r in results.values() if r for u in r["units"]
                   if u["target"] is None})
    head = ["model", "data", "defence", "stem", "test accuracy"] + [f"{m} {n} ζ {z:.0%}" for m, n, z in grid]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mid, spec in plan["models"].items():
        summary = _load(root / budget / "models" / mid / "summary.json")
        res = results.get(mid)
        if summary is None and res is None:
            continue
        test = (summary or {}).get("test") or {}
        name = _data_name((plan.get("datasets") or {}).get(spec.get("dataset"), plan["dataset"]))
        defence = spec["defense"] + (f" (from {spec['init']})" if spec.get("init") else "")
        row = [mid, name, defence, _stem(summary), _rate(test["correct"], test["n"]) if test else "–"]
        row += [_fr_text(_unit(res, method=m, norm=n, zeta=z)) for m, n, z in grid]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _targeted_table(plan: dict[str, Any], results: dict[str, Any]) -> list[str]:
    lines = ["| model | UAP | target | success, all test inputs | success, test inputs not already the target | "
             "success, fitting set |", "|---|---|---|---|---|---|"]
    for mid in _base_models(plan, results):
        res = results[mid]
        for u in res["units"]:
            if u["target"] is None:
                continue
            t = u["target"]
            lines.append(f"| {mid} | {u['method']} {u['norm']} ζ {u['zeta']:.0%} | {res['classes'][t]} | "
                         f"{_success(u, t)} | {_success(u, t, excluding=True)} | {_success(u, t, 'train')} |")
    return lines if len(lines) > 2 else []


def _flow_table(plan: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """Per non-targeted L2 UAP of each base model: where its fooled test inputs went
    (:func:`~medrobust.reproduce.hirano_uap.fooled_flow`) and the fooling-rate ceiling of a one-way UAP."""
    lines = ["| model | UAP | fooling rate | fooled inputs moved into | into the dominant class | "
             "ceiling of a one-way UAP (inputs not predicted that class) |", "|---|---|---|---|---|---|"]
    for mid in _base_models(plan, results):
        res = results[mid]
        for u in res["units"]:
            if u["target"] is not None or u["method"].startswith("random") or u["norm"] != "l2" \
                    or "transition" not in u["test"]:
                continue
            f = fooled_flow(u["test"]["transition"])
            moved = ", ".join(f"{c} {k}" for c, k in zip(res["classes"], f["into"]))
            none = f["share"] is None  # nothing fooled: no dominant class, no ceiling to show
            share = "–" if none else f"{f['share']:.0%} into {res['classes'][f['dominant']]}"
            lines.append(f"| {mid} | {u['method']} {u['norm']} ζ {u['zeta']:.0%} | {_fr_text(u)} | {moved} | "
                         f"{share} | {'–' if none else format(f['ceiling'], '.3f')} |")
    return lines if len(lines) > 2 else []


def _retraining_table(plan: dict[str, Any], results: dict[str, Any]) -> list[str]:
    lines = ["| architecture | UAP | fooling rate before | after retraining | clean accuracy before | after |",
             "|---|---|---|---|---|---|"]
    for base, mid in _retraining_pairs(plan, results):
        for u in results[mid]["units"]:
            if u["target"] is not None or u["method"].startswith("random"):
                continue
            before = _unit(results.get(base), method=u["method"], norm=u["norm"], zeta=u["zeta"])
            acc = [f"{r['clean_accuracy']['test']:.3f}" if r else "–" for r in (results.get(base), results[mid])]
            lines.append(f"| {base} → {mid} | {u['method']} {u['norm']} ζ {u['zeta']:.0%} | {_fr_text(before)} | "
                         f"{_fr_text(u)} | {acc[0]} | {acc[1]} |")
    return lines if len(lines) > 2 else []


def _zeta_figure(plan: dict[str, Any], root: Path, budget: str, results: dict[str, Any]) -> str | None:
    """``<budget>/figures/fooling_rate_vs_zeta.png``: test fooling rate against ζ, one line per architecture and
    method (non-targeted), dashed: the uniform random control; one panel per norm."""
    from medrobust.reproduce.hirano_figures import pyplot, save_png

    mids = _base_models(plan, results)
    norms = sorted({u["norm"] for m in mids for u in results[m]["units"]})
    if not norms:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(norms), figsize=(5.0 * len(norms), 3.6), squeeze=False)
    for ax, norm in zip(axes[0], norms):
        for mid in mids:
            series: dict[str, list[tuple[float, float]]] = {}
            for u in results[mid]["units"]:
                if u["norm"] == norm and u["target"] is None:
                    series.setdefault(u["method"], []).append((float(u["zeta"]), _fr(u) or 0.0))
            for method, pts in sorted(series.items()):
                pts.sort()
                style = "--" if method.startswith("random") else "-" if method == "fgsm" else ":"
                ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], style, marker="o", label=f"{mid} {method}")
        ax.axhline(SUCCESS, color="grey", lw=0.8)
        ax.set(xlabel="ζ (%)", ylabel="fooling rate (test)", ylim=(0, 1.02), title=f"non-targeted UAPs, {norm}")
        ax.legend(fontsize=6)
    (root / budget / "figures").mkdir(parents=True, exist_ok=True)
    save_png(fig, root / budget / "figures" / "fooling_rate_vs_zeta.png")
    return f"{budget}/figures/fooling_rate_vs_zeta.png"


def readme_lines(plan: dict[str, Any], root: Path, budget: str) -> list[str]:
    """The README section of one budget of a UAP plan (writes the ζ figure on the way)."""
    results = {mid: _load(root / budget / "uap" / mid / "uap.json") for mid in plan["models"]}
    lines = ["### Paper vs ours", "", *_claims_table(plan, root, budget, results), "",
             "### Non-targeted UAPs: fooling rate on the test split (pred(x + v) ≠ pred(x))", "",
             *_models_table(plan, root, budget, results), ""]
    flow = _flow_table(plan, results)
    if flow:
        lines += ["### Non-targeted UAPs: where the fooled test inputs went", "",
                  "On a two-class task a UAP that moves inputs one way only — into the dominant class — fools at most "
                  "the inputs not already predicted that class: the last column. The paper's > 80 % needs a UAP that "
                  "moves both classes, or a model that predicts the other class for more than 80 % of the inputs.",
                  "", *flow, ""]
    targeted = _targeted_table(plan, results)
    if targeted:
        lines += ["### Targeted UAPs", "", *targeted, ""]
    retraining = _retraining_table(plan, results)
    if retraining:
        lines += ["### Adversarial retraining (each model attacked by UAPs fitted on itself)", "", *retraining, ""]
    fig = _zeta_figure(plan, root, budget, results)
    if fig:
        lines += ["### Figures", "", f"![fooling rate against ζ]({fig})", ""]
        lines += [f"- `{mid}`: [UAPs]({budget}/uap/{mid}/figures/uaps.png), "
                  f"[examples]({budget}/uap/{mid}/figures/examples.png)" for mid in plan["models"] if results.get(mid)]
        lines.append("")
    return lines
