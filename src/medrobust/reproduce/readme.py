"""``README.md`` of a reproduction: paper claim | our number | command | result file, then one table per budget.

Every number is read from a committed result file (``eval/<model>/card.json``, ``models/<model>/summary.json``)
and printed with its 95 % Wilson interval; the budget's note says what was scaled down, so a ``cpu`` number is
never mistaken for a paper-budget one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medrobust.atomic import atomic_write_text
from medrobust.evaluation.metrics import difference_interval, wilson_interval
from medrobust.reproduce.plan import BUDGETS, USER_MODEL, budget_plan, command, config_path


def _ratio(r: dict[str, Any]) -> str:
    if int(r["denominator"]) == 0:
        return "– (no samples)"
    lo, hi = wilson_interval(int(r["numerator"]), int(r["denominator"]))
    return f"{r['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def _card(root: Path, budget: str, mid: str) -> dict[str, Any] | None:
    path = root / budget / "eval" / mid / "card.json"
    if not path.is_file():
        return None
    card = json.loads(path.read_text("utf-8"))
    return card if card.get("results") else None


def _at(card: dict[str, Any], eps: float) -> dict[str, Any] | None:
    return next((r for r in card["results"] if abs(float(r["eps"]) - float(eps)) < 1e-12), None)


def _claim_cell(cards: dict[str, dict[str, Any] | None], claim: dict[str, Any]) -> str:
    parts, base = [], None
    for mid in claim["models"]:
        card = cards.get(mid)
        res = _at(card, claim["eps"]) if card else None
        if res is None:
            parts.append(f"{mid}: not run at ε {claim['eps']:g}")
            continue
        clean = card["clean"]["accuracy"]  # type: ignore[index]
        flags = [f["code"] for f in card.get("flags", []) if isinstance(f, dict) and f.get("code")]  # type: ignore[union-attr]
        metric = str(claim.get("metric", "worst_case")).split()
        if metric[0] == "success_rate":
            att = next(a for a in res["attacks"] if a["label"] == metric[1])
            text = (f"{mid}: {metric[1]} misclassifies {_ratio(att['success_rate'])} of the "
                    f"{att['success_rate']['denominator']} correctly classified, clean {_ratio(clean)}")
        else:
            text = f"{mid}: worst-case {_ratio(res['robust_accuracy'])}, clean {_ratio(clean)}"
        if flags:
            text += f" (**flags: {', '.join(flags)}**)"
        if base is None:
            base = clean
        else:
            lo, hi = difference_interval((clean["numerator"], clean["denominator"]),
                                         (base["numerator"], base["denominator"]))
            text += f" (clean Δ vs {claim['models'][0]} {clean['value'] - base['value']:+.3f} [{lo:+.3f}, {hi:+.3f}])"
        parts.append(text)
    return "<br>".join(parts)


def _claims_table(plan: dict[str, Any], root: Path, budget: str, cards: dict[str, dict[str, Any] | None]) -> list[str]:
    commands = {f"evaluate {m}": command("evaluate", config_path(root / budget, "evaluate", m)) for m in plan["models"]}
    lines = ["| claim | paper | ours (ε = claim's ε, 95 % CI) | command | result file |", "|---|---|---|---|---|"]
    for c in plan.get("claims", []):
        cmds = "<br>".join(f"`{commands.get(f'evaluate {m}', '')}`" for m in c["models"])
        files = "<br>".join(f"`{budget}/eval/{m}/card.json`" for m in c["models"])
        lines.append(f"| {c['claim']} | {c['paper']} | {_claim_cell(cards, c)} | {cmds} | {files} |")
    return lines


def _models_table(plan: dict[str, Any], root: Path, budget: str, cards: dict[str, dict[str, Any] | None]) -> list[str]:
    eps = sorted({float(r["eps"]) for card in cards.values() if card for r in card["results"]})
    head = ["model", "data", "defence", "training", "test accuracy (train)", "clean (eval subset)"] + [f"ε {e:g}" for e in eps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mid, m in plan["models"].items():
        summary_path = root / budget / "models" / mid / "summary.json"
        summary = json.loads(summary_path.read_text("utf-8")) if summary_path.is_file() else {}
        test = summary.get("test") or {}
        init = (summary.get("init_from") or {}).get("checkpoint")
        how = (f"fine-tuned from {m.get('init')}" if init else
               f"your model (`{m['model']}`), not trained here" if "source" in m else "from scratch")
        if summary.get("degenerate"):
            how += f" — **degenerate: {summary['degenerate']}**"
        card = cards.get(mid)
        data = (plan.get("datasets") or {}).get(m.get("dataset"), plan["dataset"])["name"]
        row = [mid, data, m["defense"], how,
               _ratio({"numerator": test["correct"], "denominator": test["n"], "value": test["accuracy"]}) if test else "–",
               _ratio(card["clean"]["accuracy"]) if card else "–"]
        for e in eps:
            res = _at(card, e) if card else None
            row.append(_ratio(res["robust_accuracy"]) if res else "–")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def eps_curves(cards: dict[str, dict[str, Any] | None]) -> dict[str, list[tuple[float, float, float, float]]]:
    """Per model with results: ``(ε, robust accuracy, Wilson low, Wilson high)`` points, the clean accuracy at
    ε = 0 first, then the worst case at every evaluated ε in increasing order."""
    curves = {}
    for mid, card in cards.items():
        if not card:
            continue
        points = [(0.0, card["clean"]["accuracy"])] + sorted(
            ((float(r["eps"]), r["robust_accuracy"]) for r in card["results"]), key=lambda p: p[0])
        curves[mid] = [(e, float(a["value"]), *wilson_interval(int(a["numerator"]), int(a["denominator"])))
                       for e, a in points]
    return curves


def _eps_figure(plan: dict[str, Any], root: Path, budget: str, cards: dict[str, dict[str, Any] | None]) -> list[str]:
    """``<budget>/figures/robust_accuracy_vs_eps.png`` (worst-case robust accuracy against ε per model, 95 % Wilson
    bars; ε = 0 is clean accuracy; one panel per dataset and units) and the README lines showing it; none when no
    model has results."""
    curves = eps_curves(cards)
    if not curves:
        return []
    from medrobust.report.figures import eps_axis_label
    from medrobust.reproduce.hirano_figures import pyplot, save_png

    panels: dict[tuple[str, str], list[str]] = {}  # one per dataset and ε scale (norm, units)
    for mid in curves:
        card = cards[mid] or {}
        panels.setdefault((str((card.get("data") or {}).get("name", "")), eps_axis_label(card)), []).append(mid)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 3.6), squeeze=False)
    for ax, ((dataset, xlabel), mids) in zip(axes[0], panels.items()):
        for mid in mids:
            e, v, lo, hi = (list(col) for col in zip(*curves[mid]))
            ax.errorbar(e, v, yerr=[[a - b for a, b in zip(v, lo)], [b - a for a, b in zip(v, hi)]], marker="o",
                        capsize=2, label=mid)
        ax.set(xlabel=xlabel, ylabel="worst-case robust accuracy", ylim=(0, 1.02),
               title=f"{plan['name']}, budget {budget}" + (f": {dataset}" if len(panels) > 1 else ""))
        ax.legend(fontsize=7)
    name = f"{budget}/figures/robust_accuracy_vs_eps.png"
    (root / budget / "figures").mkdir(parents=True, exist_ok=True)
    save_png(fig, root / name)
    return [f"![worst-case robust accuracy against ε per model, ε = 0: clean accuracy]({name})", ""]


def _masking_table(plan: dict[str, Any], root: Path, budget: str) -> list[str]:
    """Gradient-masking checks (``<budget>/masking/<model>/masking.json``): empty when none ran."""
    rows = []
    for mid in plan["models"]:
        path = root / budget / "masking" / mid / "masking.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text("utf-8"))
        verdict = "; ".join(r["flags"]) if r["flags"] else "no sign of masking"
        rows.append(f"| {mid} | {r['n']} | {r['eps']:g} | {r['pgd_accuracy']:.3f} | {r['black_box']} "
                    f"{r['black_box_steps']}: {r['black_box_accuracy']:.3f} | {r['large_eps']:g}: "
                    f"{r['large_eps_accuracy']:.3f} | {verdict} | `{budget}/masking/{mid}/masking.json` |")
    if not rows:
        return []
    return ["### Gradient-masking check", "",
            "Robust accuracy of each defended model on a stratified test subset: PGD (random start) against a "
            "gradient-free attack at the same ε, PGD at a radius far beyond the data's scale, and the loss along "
            "the gradient sign against random sign directions (Athalye et al., ICML 2018; Carlini et al., "
            "arXiv 1902.06705).", "",
            "| model | n | ε | PGD | black box | large ε | verdict | result file |", "|---|---|---|---|---|---|---|---|",
            *rows, ""]


def _band_table(plan: dict[str, Any], root: Path, budget: str) -> list[str]:
    """Han et al.'s band, uniform and concatenation experiments (``<budget>/band/<model>/band.json``)."""
    lines = []
    for mid in plan["models"]:
        path = root / budget / "band" / mid / "band.json"
        if not path.is_file():
            continue
        r, f = json.loads(path.read_text("utf-8")), f"`{budget}/band/{mid}/band.json`"
        n = r["n_attacked"]
        rows = [("SAP misclassifies (stratified subset of the correctly classified records)", "74 %",
                 _ratio({"numerator": r["sap_success"], "denominator": n, "value": r["sap_success"] / n if n else 0})),
                ("PGD misclassifies (same records)", "–",
                 _ratio({"numerator": r["pgd_success"], "denominator": n, "value": r["pgd_success"] / n if n else 0}))]
        b = r.get("band")
        if b and b["n_examples"]:
            rows += [(f"Gaussian-noise re-smoothed trials still adversarial (mean over {b['n_examples']} SAP examples, "
                      f"{b['examples'][0]['trials']} trials each)", "87.6 %", f"{b['kept_fraction']:.3f}"),
                     ("uniform samples inside the band misclassified", "all", f"{b['uniform_misclassified']:.3f}"),
                     (f"concatenations still adversarial ({b['concatenations']})", "all",
                      "–" if b["concat_adv_class"] is None else f"{b['concat_adv_class']:.3f}")]
        lines += [f"### Han et al.'s experiments on SAP examples: `{mid}` at ε = {r['eps']:g} {r['units']}", "",
                  f"{n} correctly classified test records attacked; the SAP and PGD pairs are exported for an expert "
                  f"study in `{budget}/band/{mid}/pairs_sap.npz` and `pairs_pgd.npz`.", "",
                  "| experiment | paper | ours | result file |", "|---|---|---|---|",
                  *[f"| {a} | {p} | {o} | {f} |" for a, p, o in rows], ""]
    return lines


def _ran(plan: dict[str, Any], budget: str) -> dict[str, Any]:
    """The plan as ``budget`` ran it: its models only, and each claim over those of them it names (a claim naming
    none of them is left out of that budget's table), at its ε times the budget's ``eps_scale``."""
    ran = budget_plan(plan, budget)
    scale = float(plan["budgets"][budget].get("eps_scale", 1.0))  # the claims' ε in this budget's units
    claims = [{**c, "eps": float(c["eps"]) * scale,
               "models": [m for m in c["models"] if m in ran["models"]]} for c in plan.get("claims", [])]
    return {**ran, "claims": [c for c in claims if c["models"]]}


def write_readme(plan: dict[str, Any], root: Path) -> Path:
    """Write ``root/README.md`` from every budget folder present under ``root`` (largest budget first)."""
    present = [b for b in reversed(BUDGETS) if (root / b / "eval").is_dir() or (root / b / "uap").is_dir()]
    yours = plan["models"].get(USER_MODEL)  # a plan of with_user_model: the user's model, with its `source`
    user = f" --model {yours['model']}" if yours is not None and "source" in yours else ""
    lines = [f"# Reproduction `{plan['name']}`: {plan['paper']}", "",
             f"Generated by `medrobust reproduce {plan['name']}{user} --budget BUDGET` from the result files below "
             f"(plan: `{Path(plan['source']).name}`). Worst case = robust accuracy when a sample counts as robust only "
             "if every attack of the evaluation fails on it; 95 % Wilson intervals in brackets; clean Δ with "
             "Newcombe's interval.", ""]
    if plan.get("uap") is not None:
        lines[2] = (f"Generated by `medrobust reproduce {plan['name']}{user} --budget BUDGET` from the result files "
                    f"below (plan: `{Path(plan['source']).name}`). Fooling rate = share of inputs whose prediction the UAP "
                    "changes; targeted success = share predicted as the target; 95 % Wilson intervals in brackets.")
    for budget in present:
        note = " ".join(str(plan["budgets"][budget]["note"]).split())
        lines += [f"## Budget `{budget}`", "", f"*{note}*", ""]
        if plan.get("uap") is not None:
            from medrobust.reproduce.hirano_readme import readme_lines

            lines += readme_lines(plan, root, budget)
            continue
        ran = _ran(plan, budget)
        cards = {mid: _card(root, budget, mid) for mid in ran["models"]}  # each card.json read once per budget
        lines += ["### Paper vs ours", ""]
        lines += _claims_table(ran, root, budget, cards) + [""]
        lines += ["### Every model", ""] + _models_table(ran, root, budget, cards) + [""]
        lines += _eps_figure(ran, root, budget, cards)
        lines += _masking_table(ran, root, budget)
        lines += _band_table(ran, root, budget)
    path = root / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path
