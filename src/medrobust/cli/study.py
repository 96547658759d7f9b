"""``medrobust study create | serve | analyze``: a blinded imperceptibility study of adversarial ECGs in the browser.

Example::

    medrobust study create reproductions/han2020/cpu/band/ce --out study.db --raters 2 --per-attack 100
    medrobust study serve study.db --port 8000        # raters open their invitation links
    medrobust study analyze study.db --out study-report

``create`` prints (and writes next to the database, mode 0600, as DB.invitations.txt) one invitation link per
rater and the admin token; the database stores only their digests.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medrobust.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="blinded expert study of clean/adversarial ECG pairs: create, serve, analyze")
    cmds = p.add_subparsers(dest="study_command", metavar="STEP", required=True)
    c = cmds.add_parser("create", help="one SQLite study database from an attack or band-step folder")
    c.add_argument("src", metavar="SRC", help="`medrobust attack --out` or `medrobust evaluate --out` folder, or a "
                                              "folder of pairs_*.npz (Han 2020 band step)")
    c.add_argument("--out", required=True, help="new database file (never overwritten)")
    c.add_argument("--raters", type=int, default=2, help="number of raters (each gets every item)")
    c.add_argument("--rater-names", help="comma-separated rater names (default rater01, rater02, ...)")
    c.add_argument("--per-attack", type=int, default=10, help="pairs per attack, stratified by class")
    c.add_argument("--design", choices=["2afc", "single", "sameclass"], default="2afc",
                   help="2afc: which strip was altered + same class; single: real or altered; sameclass: same class")
    c.add_argument("--seed", type=int, default=0, help="seed of the selection, order and sides")
    c.add_argument("--lead", type=int, default=0, help="lead index to draw")
    c.add_argument("--lead-name", help="the lead's name on the strips when SRC does not record it (pairs_*.npz)")
    c.add_argument("--noise-controls", type=int, default=0, metavar="K",
                   help="add K control pairs: clean + Gaussian noise of the adversarial perturbation's L2 energy")
    c.add_argument("--eps", type=float, help="for an evaluation run (examples.npz): the radius whose examples to show "
                                           "(required when the run has several)")
    c.add_argument("--allow-change", action="store_true",
                   help="a submitted answer stays changeable until the rater moves to the next item (default: final)")
    c.add_argument("--include-failed", action="store_true", help="also show pairs whose attack did not succeed")
    c.add_argument("--base-url", default="http://127.0.0.1:8000", help="server address used in the invitation links")
    c.set_defaults(func=run_create)
    s = cmds.add_parser("serve", help="serve the study to the raters (FastAPI on uvicorn)")
    s.add_argument("db", metavar="DB", help="study database")
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 exposes it to the network)")
    s.add_argument("--port", type=int, default=8000, help="TCP port")
    s.set_defaults(func=run_serve)
    a = cmds.add_parser("analyze", help="accuracy, exact CIs and tests, agreement, response times")
    a.add_argument("db", metavar="DB", help="study database")
    a.add_argument("--out", required=True, help="folder for study.json, study.md and study.html")
    a.set_defaults(func=run_analyze)
    from medrobust.cli.main import HelpFormatter  # the other commands' help layout (defaults shown)

    for step in (c, s, a):
        step.formatter_class = HelpFormatter


def _need_fastapi() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("`medrobust study serve` needs FastAPI and uvicorn: "
                          "pip install 'medrobust[study]'.") from None


def run_create(args: argparse.Namespace) -> int:
    from medrobust.study.create import StudySpec, create_study, write_invitations

    names = tuple(n.strip() for n in args.rater_names.split(",")) if args.rater_names else ()
    spec = StudySpec(raters=args.raters, per_attack=args.per_attack, design=args.design, seed=args.seed,
                     lead=args.lead, include_failed=args.include_failed, noise_controls=args.noise_controls,
                     rater_names=names, lead_name=args.lead_name, allow_change=args.allow_change,
                     eps=args.eps, base_url=args.base_url)
    out = Path(args.out)
    result = create_study(args.src, out, spec)
    inv = out.with_name(out.name + ".invitations.txt")
    write_invitations(inv, result)
    print(f"study {out}: {result['items']} items, {len(result['invitations'])} raters ({args.design})")
    for name, url in result["invitations"].items():
        print(f"  {name}: {url}")
    print(f"admin token (export/report endpoints): {result['admin_token']}\nlinks and token saved in {inv} (mode 0600)")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from medrobust.study.schema import connect

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port}: must be in 1..65535.")
    connect(args.db).close()
    _need_fastapi()
    from medrobust.study.app import serve

    print(f"serving {args.db} on http://{args.host}:{args.port}/ (Ctrl+C stops)", flush=True)
    serve(args.db, host=args.host, port=args.port)
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    from medrobust.study.analyze import write_report

    paths = write_report(args.db, args.out)
    print(f"report: {paths['html']}\nmarkdown: {paths['md']}\ncard: {paths['json']}")
    return 0
