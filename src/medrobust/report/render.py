"""Build the report as a list of blocks, then render it to Markdown and to one self-contained HTML file.

Blocks are plain tuples: ``("h1"|"h2"|"h3"|"p"|"lead", text)`` (``lead``: the headline), ``("table", header, rows)``,
``("list", items)``, ``("figure", file_name, caption, png_bytes)``, ``("code", text)``. Markdown
refers to the figures as ``figures/<name>.png`` files; the HTML embeds them as base64 PNG data
URIs, so the HTML file alone is the whole report (no network, no external files).
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any, Sequence

from medrobust.report.headline import THRESHOLD, fmt_uv, headline, uv_of_eps

Block = tuple


def fmt_ratio(r: dict[str, Any] | None) -> str:
    """``0.8667 (130/150)`` or ``n/a``."""
    if not r or r.get("value") is None:
        return "n/a" if not r else f"n/a (0/{r.get('denominator', 0)})"
    return f"{r['value']:.4f} ({r['numerator']}/{r['denominator']})"


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != v:
            return "–"
        return f"{v:.{digits}g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(v)


def _stat(p: dict[str, Any], key: str, which: str = "median") -> Any:
    s = p.get(key)
    return None if not s else s.get(which)


def fmt_db(v: Any) -> str:
    """A level in dB to 0.1 dB; ``–`` for none (no successful example, or δ = 0)."""
    return "–" if v is None or v != v else f"{float(v):.1f}"


def _uv_cell(card: dict[str, Any], e: int) -> str:
    """ε ``e`` in µV: one value, or ``median [min–max]`` over the evaluated beats."""
    uv = uv_of_eps(card, e)
    if not uv:
        return "–"
    if not uv["per_sample"]:
        return fmt_uv(uv["median"])
    return f"{fmt_uv(uv['median'])} [{fmt_uv(uv['min'])}–{fmt_uv(uv['max'])}]"


def _per_beat_cell(p: dict[str, Any], key: str) -> str:
    s = p.get(key)
    return "–" if not s else f"{fmt_uv(s.get('median'))} / {fmt_uv(s.get('max'))}"


def _eps_uv_text(card: dict[str, Any]) -> str:
    tm = card["threat_model"]
    if tm.get("eps_uv"):
        return f" ({', '.join(fmt_uv(e) for e in tm['eps_uv'])} µV)"
    if tm.get("eps_uv_per_sample"):
        sc = tm.get("uv_scale_per_sample") or {}
        return (" (in µV over the evaluated beats, median [min–max]: "
                + ", ".join(_uv_cell(card, e) for e in range(len(tm["eps"])))
                + f" µV; each beat converted with its own recorded scale, median {fmt_uv(sc.get('median'))} µV "
                  "per unit)")
    return ""


def _header_blocks(card: dict[str, Any], figures: dict[str, tuple[str, bytes]], b: list[Block]) -> None:
    data = card["data"]
    tm = card["threat_model"]
    proto = card["protocol"]
    model = card["model"].get("card") or {}
    b.append(("h1", f"Robustness report — {card.get('title', '')}"))
    b.append(("lead", headline(card)))
    degenerate = card.get("degenerate_model")
    if degenerate:
        b.append(("p", f"**{degenerate['headline']}.** The robust accuracies below are not robustness: a constant "
                       "predictor keeps the accuracy of its class at every ε. Retrain the model (class balancing) "
                       "before reading any number of this report as robustness."))
    ev = data["evaluated"]
    b.append(("p",
              f"Model {model.get('architecture', 'unknown')} ({card['model'].get('checkpoint') or 'in-memory model'}), "
              f"dataset {data['name']} split {data['split']}, {ev['n']} of {ev['n_total_split']} samples"
              + (" (stratified)" if ev["selection"].get("stratified") else "") + " "
              f"({ev['selection'].get('method', '')}), sampling rate {fmt(data['fs'])} Hz, units {data['units']}. "
              f"Threat model: {tm['norm']} ball, ε = {', '.join(fmt(e) for e in tm['eps'])}"
              + _eps_uv_text(card)
              + f" ({tm['eps_mode']}), bounds {tm['bounds'] if tm['bounds'] else 'none'}. "
              f"Protocol {proto['name']} (mode {proto['mode']}): "
              + ", ".join(f"{m['label']}" + (f" ×{m['restarts']} restarts" if m["restarts"] > 1 else "")
                          for m in proto["members"]) + "."))
    b.append(("p", f"Class resampling: {data['class_resampled_note']}."))
    if proto.get("skipped_optional"):
        b.append(("p", "Optional attacks not registered in this installation and therefore not run: "
                       + ", ".join(proto["skipped_optional"]) + "."))
    for note in card.get("notes") or []:
        b.append(("p", f"Note: {note}."))


def _flags_blocks(card: dict[str, Any], figures: dict[str, tuple[str, bytes]], b: list[Block]) -> None:
    b.append(("h2", "Reliability flags"))
    if card["flags"]:
        b.append(("list", [f"**{f['code']}** — {f['message']} (what to do: `{f['doc']}` in the medrobust "
                           "repository)" for f in card["flags"]]))
    else:
        b.append(("p", "No reliability flag was raised (checks: probability outputs, non-deterministic forward pass, "
                       "zero or vanishing input gradients, DLR with fewer than 4 classes, accuracy at a very large ε, "
                       "black-box stronger than white-box, degenerate model, unverified weights)."))
    if card.get("large_eps_check"):
        le = card["large_eps_check"]
        b.append(("p", f"Large-ε check: {le['attack']} at ε = {fmt(le['eps'])} left {le['still_correct']} of "
                       f"{le['n']} clean-correct samples correct."))


def _clean_blocks(card: dict[str, Any], figures: dict[str, tuple[str, bytes]], b: list[Block]) -> None:
    data = card["data"]
    clean = card["clean"]["metrics"]
    b.append(("h2", "Clean performance"))
    b.append(("table", ["accuracy", "class-balanced accuracy", "macro-F1"],
              [[fmt_ratio(card["clean"]["accuracy"]), fmt(clean["balanced_accuracy"]), fmt(clean["macro_f1"])]]))
    classes = data["classes"]
    b.append(("table", ["class", "support", "sensitivity (clean)", "precision (clean)"]
              + [f"sensitivity ε={fmt(r['eps'])}" for r in card["results"]],
              [[c, str(clean["support"][c]), fmt(clean["sensitivity"][c]), fmt(clean["precision"][c])]
               + [fmt(r["metrics"]["sensitivity"][c]) for r in card["results"]] for c in classes]))


def _robustness_blocks(card: dict[str, Any], figures: dict[str, tuple[str, bytes]], b: list[Block]) -> None:
    tm = card["threat_model"]
    b.append(("h2", "Robustness (ensemble, pointwise worst case)"
              + (" — degenerate model: not a measure of robustness" if card.get("degenerate_model") else "")))
    has_uv = any(uv_of_eps(card, e) for e in range(len(card["results"])))
    per_beat = bool(tm.get("eps_uv_per_sample"))
    rows = []
    for e, r in enumerate(card["results"]):
        rows.append([fmt(r["eps"])] + ([_uv_cell(card, e)] if has_uv else [])
                    + [fmt_ratio(r["robust_accuracy"]), fmt_ratio(r["attack_success_rate"]),
                       fmt_ratio(r["fooling_rate"]), fmt(r["metrics"]["balanced_accuracy"]),
                       fmt(r["metrics"]["macro_f1"]), fmt_db(_stat(r["perturbation"], "snr_db"))])
    uv_head = ["ε (µV, median [min–max] over the beats)" if per_beat else "ε (µV)"] if has_uv else []
    b.append(("table", ["ε", *uv_head, "robust accuracy", "attack success rate (clean-correct)", "fooling rate",
                        "class-balanced accuracy", "macro-F1", "SNR (dB, median of the successful examples)"], rows))
    b.append(("p", f"Headline rule: the first swept ε, in order of attack strength, at which the ensemble's robust "
                   f"accuracy is below {100 * THRESHOLD:.0f} % (a measured grid point, not interpolated), with that ε "
                   "in µV where known and the median SNR of the ensemble's successful adversarial examples there; "
                   "the median minimal ε is over the clean-correct samples broken within the largest ε. "
                   "SNR = 10·log10(Σx² / Σδ²) over the whole input as evaluated (every lead and sample)"
                   + ("; for min-max scaled beats x is the scaled beat, whose offset counts as signal (as in "
                      "Ma & Liang 2022)" if str(card["data"].get("units", "")).lower().startswith("normalized")
                      else "") + "."))
    ens = card["curves"]["ensemble"]
    if ens.get("auc") is not None:
        b.append(("p", f"Area under the accuracy-versus-ε curve from 0 to ε = {fmt(tm['eps'][-1])}, divided by that ε "
                       f"(Ma & Liang 2022): ensemble **{ens['auc']:.4f}**; per attack ({card['curves']['kind']}): "
                       + ", ".join(f"{k} {v['auc']:.4f}" for k, v in card["curves"]["attacks"].items()) + "."))
    if "curves" in figures:
        b.append(("figure", "curves.png", *figures["curves"]))

    b.append(("h3", "Per attack"))
    rows = []
    for r in card["results"]:
        for a in r["attacks"]:
            rows.append([fmt(r["eps"]), a["label"], fmt_ratio(a["success_rate"]), str(a["broken_first"]),
                         fmt_ratio(a.get("robust_accuracy_alone")) if "robust_accuracy_alone" in a else "–",
                         fmt_ratio(a["robust_accuracy_after"]), str(a["grad_evals"]), str(a["queries"])])
    b.append(("table", ["ε", "attack", "successes / samples attacked", "broke first", "robust accuracy alone",
                        "robust accuracy after it (cumulative)", "gradient evaluations", "forward evaluations"], rows))

    _perturbation_blocks(card, b)
    _minimal_blocks(card, b)


def _perturbation_blocks(card: dict[str, Any], b: list[Block]) -> None:
    data = card["data"]
    b.append(("h3", "Perturbations of the successful adversarial examples (medians)"))
    uv = any(r["perturbation"].get("linf_uv") for r in card["results"])
    beat_uv = any(r["perturbation"].get("linf_uv_per_sample") for r in card["results"])
    unit = data["units"]
    rows = []
    for r in card["results"]:
        entries = [("ensemble", r["perturbation"])] + [(a["label"], a["perturbation"]) for a in r["attacks"]]
        for name, p in entries:
            row = [fmt(r["eps"]), name, str(p["n"]), fmt(_stat(p, "linf")), fmt(_stat(p, "l2"))]
            if uv:
                row += [fmt_uv(_stat(p, "linf_uv")), fmt_uv(_stat(p, "l2_uv"))]
            if beat_uv:
                row += [_per_beat_cell(p, "linf_uv_per_sample"), _per_beat_cell(p, "l2_uv_per_sample")]
            row += [fmt_db(_stat(p, "snr_db")), fmt(_stat(p, "hf_fraction")), fmt(_stat(p, "tv"))]
            rows.append(row)
    header = ["ε", "attack", "n", f"L∞ ({unit})", f"L2 ({unit})"] + (["L∞ (µV)", "L2 (µV)"] if uv else [])
    header += ["L∞ (µV per beat, median / max)", "L2 (µV per beat, median / max)"] if beat_uv else []
    cutoff = card["protocol"].get("hf_cutoff_hz")
    header += ["SNR (dB)", f"energy above {fmt(cutoff)} Hz", "total variation"]
    b.append(("table", header, rows))


def _minimal_blocks(card: dict[str, Any], b: list[Block]) -> None:
    me = card.get("minimal_eps")
    if me:
        b.append(("h2", "Minimal adversarial ε (one run)"))
        q = me.get("quantiles_of_broken") or {}
        b.append(("p", f"{me['method']}. {me['n_broken_within_eps_max']} of {me['n_clean_correct']} clean-correct "
                       f"samples were broken within ε ≤ {fmt(me['eps_max'])}; minimal ε quantiles: "
                       + (", ".join(f"{k} {fmt(v)}" for k, v in q.items()) if q else "–")
                       + ("; per beat in µV (each beat's ε* × its own scale): "
                          + ", ".join(f"{k} {fmt_uv(v)}" for k, v in me["quantiles_of_broken_uv"].items())
                          if me.get("quantiles_of_broken_uv") else "")
                       + f"; AUC of the continuous curve {me['auc']:.4f}."))
        b.append(("table", ["ε", "robust accuracy from minimal ε", "robust accuracy from the sweep", "difference"],
                  [[fmt(a["eps"]), fmt_ratio(a["bisection"]), fmt_ratio(a["sweep"]), str(a["difference"])]
                   for a in me["agreement_with_sweep"]]))


def _figures_blocks(card: dict[str, Any], figures: dict[str, tuple[str, bytes]], b: list[Block]) -> None:
    data = card["data"]
    b.append(("h2", "Figures"))
    for key, name in (("sensitivity", "sensitivity.png"), ("confusion", "confusion.png"),
                      ("sap_vs_pgd", "sap_vs_pgd.png"), ("images", "image_examples.png"),
                      ("uap", "universal_perturbation.png")):
        if key in figures:
            b.append(("figure", name, *figures[key]))
    if "sap_vs_pgd" not in figures and data.get("fs"):
        b.append(("p", "(No SAP-versus-PGD panel: the run needs both a `pgd` and a `sap` attack.)"))
    for key in sorted(k for k in figures if k.startswith("ecg_")):
        b.append(("figure", f"{key}.png", *figures[key]))


def _reproducibility_blocks(card: dict[str, Any], figures: dict[str, tuple[str, bytes]], b: list[Block]) -> None:
    data = card["data"]
    model = card["model"].get("card") or {}
    env = card["environment"]
    b.append(("h2", "Reproducibility"))
    git = env.get("git") or {}
    items = [
        f"medrobust {env['medrobust_version']}, torch {env['torch_version']}, numpy {env['numpy_version']}, "
        f"Python {env['python_version']}; git commit {git.get('commit') or 'unknown'}"
        + (" (uncommitted changes)" if git.get("dirty") else ""),
        f"seeds: protocol {card['seeds']['protocol_seed']}, selection {card['seeds']['selection_seed']}; "
        f"unit seeds = {card['seeds']['unit_seeds']}",
        f"data fingerprint {data['fingerprint']}, split {data['split']}, options "
        f"`{json.dumps(data.get('options', {}), default=str)}`, evaluated indices SHA-256 "
        f"{data['evaluated']['indices_sha256']}",
        f"model weights SHA-256 {model.get('weights_sha256', 'n/a')}"
        + (" (NOT verified: loaded with --trust-unverified)" if model.get("weights_verified") is False else ""),
        f"compute time {card['timings']['seconds_compute']:.1f} s over {card['timings']['sessions']} session(s)"
        + (" (resumed)" if card["timings"].get("resumed") else ""),
    ]
    b.append(("list", items))
    if card.get("command"):
        b.append(("code", card["command"]))


def build_blocks(card: dict[str, Any], figures: dict[str, tuple[str, bytes]]) -> list[Block]:
    """The report's content from the card and the rendered figures ``{name: (caption, png)}``."""
    b: list[Block] = []
    for section in (_header_blocks, _flags_blocks, _clean_blocks, _robustness_blocks, _figures_blocks, _reproducibility_blocks):
        section(card, figures, b)
    return b




# -------------------------------------------------------------------------------------------- markdown
def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + blk[1] + "\n")
        elif kind == "p":
            out.append(blk[1] + "\n")
        elif kind == "lead":
            out.append(f"> **{blk[1]}**\n")
        elif kind == "list":
            out.append("\n".join(f"- {i}" for i in blk[1]) + "\n")
        elif kind == "code":
            out.append("```bash\n" + blk[1] + "\n```\n")
        elif kind == "table":
            header, rows = blk[1], blk[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
                     "|" + "|".join("---" for _ in header) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
            out.append("\n".join(lines) + "\n")
        elif kind == "figure":
            name, caption = blk[1], blk[2]
            out.append(f"![{caption}](figures/{name})\n\n*{caption}*\n")
    return "\n".join(out)


# -------------------------------------------------------------------------------------------- html
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.5em;border-bottom:2px solid #c33;padding-bottom:.3em}h2{font-size:1.2em;margin-top:1.8em;
border-bottom:1px solid #ddd}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}code,pre{background:#f6f6f6;padding:.1em .3em;border-radius:3px}
pre{padding:.6em;overflow-x:auto}li{margin:.3em 0}
p.headline{font-size:1.12em;font-weight:600;background:#fff4ef;border-left:4px solid #c33;padding:.6em .9em}
"""

# Marks the document with the number of figures that decoded; reports a broken one on the console.
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
    else { console.error('figure failed to render: ' + imgs[i].alt); }
  }
  document.body.setAttribute('data-figures-total', String(imgs.length));
  document.body.setAttribute('data-figures-rendered', String(ok));
});
"""


def _inline(text: str) -> str:
    """Escape, then render ``**bold**`` and `` `code` `` spans."""
    s = html.escape(text)
    parts = s.split("`")
    for i in range(1, len(parts), 2):
        parts[i] = f"<code>{parts[i]}</code>"
    s = "".join(parts)
    bits = s.split("**")
    for i in range(1, len(bits), 2):
        bits[i] = f"<strong>{bits[i]}</strong>"
    return "".join(bits)


def to_html(blocks: Sequence[Block], title: str) -> str:
    body: list[str] = []
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(blk[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(blk[1])}</p>")
        elif kind == "lead":
            body.append(f'<p class="headline">{_inline(blk[1])}</p>')
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in blk[1]) + "</ul>")
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(blk[1])}</code></pre>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in blk[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in blk[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "figure":
            name, caption, png = blk[1], blk[2], blk[3]
            data = base64.b64encode(png).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{_SCRIPT}</script>\n</body></html>\n")
