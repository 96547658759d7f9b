"""The static leaderboard site (``medrobust leaderboard build``): self-contained HTML + JSON, no CDN.

``OUT/index.html`` holds one table per task and threat row (inline CSS and a few lines of plain JavaScript
that sort a table by the clicked column's numbers), ``OUT/leaderboard.json`` every entry and task,
``OUT/cards/<task>/<id>.json`` a copy of each entry's result card (and ``reports/<task>/<id>.html`` its report,
if it has one), linked from the entry's row.
"""

from __future__ import annotations

import html
import json
import re
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from medrobust.atomic import atomic_write_json, atomic_write_text
from medrobust.leaderboard.board import read_entries
from medrobust.leaderboard.tasks import Task, builtin_tasks

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em}h3{font-size:1.05em;color:#444}
table{border-collapse:collapse;width:100%;font-size:.9em;margin:.5em 0 1em}
th,td{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th.sortable{cursor:pointer;user-select:none;background:#f4f6f8}th.sortable:hover{background:#e6ebf0}
th.sorted-desc::after{content:" \\25BC"}th.sorted-asc::after{content:" \\25B2"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{color:#777;font-size:.85em}.flag{color:#a33;font-weight:600}.muted{color:#777}
tr.flagged td{background:#fff6f4}.note{color:#555;font-size:.9em}code{background:#f4f4f4;padding:0 .2em}
"""

JS = """
function sortTable(th){
  var table=th.closest('table'), idx=Array.prototype.indexOf.call(th.parentNode.children, th);
  var desc=!th.classList.contains('sorted-desc');
  table.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted-desc','sorted-asc');});
  th.classList.add(desc?'sorted-desc':'sorted-asc');
  var body=table.tBodies[0], rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){
    var x=parseFloat(a.cells[idx].getAttribute('data-value')), y=parseFloat(b.cells[idx].getAttribute('data-value'));
    if(isNaN(x)) x=-Infinity; if(isNaN(y)) y=-Infinity;
    return desc? y-x : x-y;
  });
  rows.forEach(function(r){body.appendChild(r);});
}
document.querySelectorAll('th.sortable').forEach(function(th){
  th.addEventListener('click',function(){sortTable(th);});
});
document.body.setAttribute('data-tables', document.querySelectorAll('table.board').length);
"""


def _text(s: str) -> str:
    """Escaped text with `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(s))


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _cell(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return (f'<td class="num" data-value="{r["value"]:.6f}" title="{r["numerator"]}/{r["denominator"]}">'
            f'{_pct(r["value"])} <span class="ci">[{_pct(lo)}, {_pct(hi)}]</span></td>')


def _eps_label(item: dict[str, Any], eps_mode: str) -> str:
    if eps_mode == "snr_db":
        return f"SNR {item['eps']:g} dB"
    text = f"ε={item['eps']:g}"
    if "eps_uv" in item:
        text += f" ({item['eps_uv']:g} µV)"
    elif item.get("eps_uv_per_sample"):
        text += f" (≈{item['eps_uv_per_sample']['median']:.0f} µV median)"
    return text


def _table(task: Task, row_id: str, entries: list[dict[str, Any]]) -> str:
    row = task.threat(row_id)
    mode = row.protocol.eps_mode if row.protocol is not None else "abs"
    # default order: unflagged entries first (a flagged number is not robustness), then robust accuracy at the
    # largest radius
    entries = sorted(entries, key=lambda e: (bool(e["flagged"]), -e["robust"][-1]["value"], e["id"]))
    heads = ['<th>model</th><th>defence</th><th>architecture</th><th class="sortable num">parameters</th>',
             '<th class="sortable num">clean accuracy %</th>']
    heads += [f'<th class="sortable num">robust % {html.escape(_eps_label(r, mode))}</th>'
              for r in entries[0]["robust"]]
    heads += ["<th>training budget</th><th>date</th><th>card</th><th>flags</th>"]
    body = []
    for e in entries:
        m = e["model"]
        params = m.get("parameters")
        links = f'<a class="card-link" href="cards/{task.name}/{e["id"]}.json">card</a>'
        if e.get("_report_href"):
            links += f' · <a href="{e["_report_href"]}">report</a>'
        flags = ", ".join(html.escape(str(f["code"])) for f in e["flags"])
        cells = [f"<td>{html.escape(e['id'])}" + (" ✓" if e.get("verified") else "") + "</td>",
                 f"<td>{html.escape(str(m.get('defence')))}</td><td>{html.escape(str(m.get('architecture')))}</td>",
                 f'<td class="num" data-value="{params if params is not None else ""}">'
                 f'{"" if params is None else f"{params:,}"}</td>', _cell(e["clean"])]
        cells += [_cell(r) for r in e["robust"]]
        cells += [f"<td>{html.escape(str(m.get('budget')))}</td><td>{html.escape(str(e['date'])[:10])}</td>",
                  f"<td>{links}</td>", f'<td class="flag">{flags or ""}</td>']
        body.append(f'<tr class="{"flagged" if e["flagged"] else ""}" data-id="{html.escape(e["id"])}">'
                    + "".join(cells) + "</tr>")
    return (f'<h3>{html.escape(row.title)}</h3>\n<table class="board" id="{task.name}--{row_id}">'
            f'<thead><tr>{"".join(heads)}</tr></thead>\n<tbody>\n' + "\n".join(body) + "\n</tbody></table>")


def _task_section(task: Task, entries: list[dict[str, Any]], zoo_entries: Sequence[Any] = ()) -> str:
    ds = task.dataset
    sub = task.subset
    subset = ("the whole split" if sub.get("limit") is None else
              f"a stratified seeded subset of {sub['limit']} (seed {sub['seed']})")
    parts = [f'<h2 id="{task.name}">{html.escape(task.title or task.name)} '
             f'<span class="muted">({task.name} v{task.version})</span></h2>',
             f'<p class="note">Data: {html.escape(ds["name"])} {html.escape(json.dumps(ds.get("options") or {}))}, '
             f'{html.escape(ds["split"])} split, {subset}. Robust accuracy is the pointwise worst case of the '
             "attack ensemble; 95 % Wilson intervals in brackets; ✓ = re-run verified on a seeded sample.</p>"]
    for row in task.threats:
        mine = [e for e in entries if e["threat"] == row.id]
        if mine:
            parts.append(_table(task, row.id, mine))
        elif row.status == "open":
            ens = ", ".join(a["label"] for a in row.expected()["attacks"])
            parts.append(f'<h3>{html.escape(row.title)}</h3><p class="muted">No entries yet (ensemble: {ens}).</p>')
        else:
            parts.append(f'<h3>{html.escape(row.title)}</h3><p class="muted">{html.escape(row.status)}: '
                         f"{_text(row.reason)}</p>")
    if zoo_entries:
        items = ", ".join(f"<code>{html.escape(z.id)}</code> ({html.escape(z.architecture)}, {html.escape(z.defence)}, "
                          f"{z.parameters:,} parameters)" for z in zoo_entries)
        parts.append(f'<p class="note">In the model zoo without a board entry yet: {items}.</p>')
    return "\n".join(parts)


def render(tasks: list[Task], entries: list[dict[str, Any]], zoo_entries: list[Any] | None = None) -> str:
    """The index page (``zoo_entries``: zoo models listed under their task when no entry uses them)."""
    used = {e["model"].get("zoo_id") for e in entries}
    waiting = [z for z in (zoo_entries or []) if z.id not in used]
    by_task = {t.name: [e for e in entries if e["task"] == t.name] for t in tasks}
    order = sorted(tasks, key=lambda t: (-len(by_task[t.name]), t.name))
    toc = " · ".join(f'<a href="#{t.name}">{t.name}</a> ({len(by_task[t.name])})' for t in order)
    sections = "\n".join(_task_section(t, by_task[t.name], [z for z in waiting if z.task == t.name]) for t in order)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>medrobust leaderboard</title>'
            f"<style>{CSS}</style></head>\n<body>\n<h1>medrobust robustness leaderboard</h1>\n"
            f'<p class="note">{len(entries)} {"entry" if len(entries) == 1 else "entries"}. Every row links its '
            f"result card; click a numeric column header to sort. Tasks: {toc}.</p>\n{sections}\n"
            f"<script>{JS}</script>\n</body></html>\n")


def _render_report(card: Path, dest: Path) -> None:
    """``medrobust report`` of the card alone (no examples file: the figures that need none), into ``dest``."""
    import tempfile

    from medrobust.report import write_report

    with tempfile.TemporaryDirectory(prefix="medrobust-board-report-") as tmp:
        shutil.copyfile(card, Path(tmp) / "card.json")
        _, report = write_report(tmp, progress=False)
        shutil.copyfile(report, dest)


def build(*, board: str | os.PathLike[str] | None = None, out: str | os.PathLike[str] = "leaderboard/site",
          tasks: list[Task] | None = None, zoo_root: str | os.PathLike[str] | None = None,
          reports: bool = True) -> Path:
    """Write the site to ``out`` (replacing the files it writes); returns ``out/index.html``.

    Zoo entries (of ``zoo_root``, default the shipped zoo) without a board entry are listed under their task.
    Each row links its evaluation's ``report.html`` when the entry has one; otherwise (``reports``) a report is
    rendered from the card (:func:`medrobust.report.write_report`)."""
    from medrobust import zoo
    entries = read_entries(board)
    tasks = tasks if tasks is not None else builtin_tasks()
    known = {t.name for t in tasks}
    entries = [e for e in entries if e["task"] in known]
    out = Path(out)
    for sub in ("cards", "reports"):
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)
    for e in entries:
        dest = out / "cards" / e["task"] / f"{e['id']}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(e["_card_path"], dest)
        rep = Path(e["_entry_path"]).parents[2] / e["report"] if e.get("report") else None
        if (rep is not None and rep.is_file()) or reports:
            rdest = out / "reports" / e["task"] / f"{e['id']}.html"
            rdest.parent.mkdir(parents=True, exist_ok=True)
            if rep is not None and rep.is_file():
                shutil.copyfile(rep, rdest)
            else:
                _render_report(Path(e["_card_path"]), rdest)
            e["_report_href"] = f"reports/{e['task']}/{e['id']}.html"
    out.mkdir(parents=True, exist_ok=True)
    public = [{k: v for k, v in e.items() if not k.startswith("_")} for e in entries]
    atomic_write_json(out / "leaderboard.json", {"format": "medrobust-leaderboard/1",
                                                 "tasks": [t.summary() for t in tasks], "entries": public})
    index = out / "index.html"
    atomic_write_text(index, render(tasks, entries, zoo.list_entries(root=zoo_root)))
    return index
