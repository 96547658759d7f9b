#!/usr/bin/env python3
"""Run mutmut on the algorithm core, one module at a time (``make mutate``).

mutmut 3 reads its settings from ``pyproject.toml`` in the current directory, copies the source
and the tests into ``mutants/`` there and runs the tests inside that copy. To give every module
its own test selection and its own result cache, each module gets a work folder
``.mutmut/<area>-<name>/`` holding:

* ``src`` and ``tests``: links to the repository's folders (mutmut copies them into ``mutants/``);
* ``pyproject.toml``: the repository's, with a ``[tool.mutmut]`` section made of the repository's
  ``[tool.mutmut]`` defaults plus this module's ``only_mutate`` and test files
  (``tools/mutation/modules.toml``);
* ``shared``: a link to ``../shared`` beside the repository. The tests find the real data at
  ``<repo>/../shared/data`` relative to their own file; inside the copy that is
  ``.mutmut/<module>/mutants/../shared/data``, which this link makes resolve, so ``CI=1`` real-data
  tests run (and fail rather than skip when the data is missing) exactly as in ``make test``;
* ``timing.json``: wall time and mutant counts of the runs, read by ``report.py``.

By default a rerun keeps the verdicts of killed mutants whose function did not change (mutmut's
cache) and retests every mutant that was not killed, so tests added since the last run count.
``--fresh`` deletes the module's ``mutants/`` first (needed after deleting or weakening tests).

Usage::

    python tools/mutation/run.py                         # every module of modules.toml
    python tools/mutation/run.py --module attacks/pgd.py # one module (repeatable)
    python tools/mutation/run.py --list                  # modules, their tests, what is missing
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "src/medrobust"
MODULES_FILE = ROOT / "tools" / "mutation" / "modules.toml"
WORK = ROOT / ".mutmut"
# Exit codes that mutmut records for a mutant the tests did not kill (survived, no tests, timeout,
# suspicious, segfault, not checked); everything but 1/3 (killed) and 37 (type check).
KILLED_CODES = {1, 3, 37}


@dataclass
class Module:
    """One entry of modules.toml, resolved against the current tree."""

    name: str                       # the configured path, e.g. "attacks/pgd.py"
    path: str | None                # the existing file under src/medrobust (maybe an alternative)
    tests: list[str] = field(default_factory=list)
    missing_tests: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return self.name.removesuffix(".py").replace("/", "-")

    @property
    def work(self) -> Path:
        return WORK / self.slug

    @property
    def source(self) -> str:
        return f"{PACKAGE}/{self.path}"

    def skip_reason(self) -> str | None:
        if self.path is None:
            return f"{PACKAGE}/{self.name} not found (renamed? update tools/mutation/modules.toml)"
        if not self.tests:
            return f"none of its test files exist: {', '.join(self.missing_tests) or 'globs matched nothing'}"
        return None


def load_modules(path: Path = MODULES_FILE) -> list[Module]:
    """The modules of ``modules.toml`` with their files and tests resolved (globs expanded)."""
    entries = tomllib.loads(path.read_text("utf-8")).get("module", [])
    modules = []
    for e in entries:
        names = [e["path"], *e.get("alternatives", [])]
        found = next((n for n in names if (ROOT / PACKAGE / n).is_file()), None)
        m = Module(name=e["path"], path=found)
        for pattern in e.get("tests", []):
            hits = sorted(glob.glob(pattern, root_dir=ROOT))
            if hits:
                m.tests += [h for h in hits if h not in m.tests]
            elif not glob.has_magic(pattern):
                m.missing_tests.append(pattern)
        modules.append(m)
    return modules


def select(modules: list[Module], wanted: list[str]) -> list[Module]:
    """Modules matching ``wanted`` ("attacks/pgd.py", "src/medrobust/attacks/pgd.py" or "pgd")."""
    if not wanted:
        return modules
    out = []
    for w in wanted:
        key = w.removeprefix(f"{PACKAGE}/").removeprefix("src/medrobust/")
        hits = [m for m in modules if key in (m.name, m.path, m.slug, Path(m.name).stem, Path(m.name).name)]
        if not hits:
            known = ", ".join(m.name for m in modules)
            sys.exit(f"error: MODULE={w!r} is not in {MODULES_FILE.relative_to(ROOT)}; known: {known}")
        out += [h for h in hits if h not in out]
    return out


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


def _strip_mutmut_table(text: str) -> str:
    """The pyproject text without its ``[tool.mutmut]`` table (replaced by the module's)."""
    out, skipping = [], False
    for line in text.splitlines():
        if re.match(r"^\s*\[", line):
            skipping = line.strip() == "[tool.mutmut]"
        if not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


def pyproject_for(module: Module) -> str:
    """The repository's pyproject.toml with this module's ``[tool.mutmut]``."""
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    settings = dict(tomllib.loads(text).get("tool", {}).get("mutmut", {}))
    settings.update(
        source_paths=["src"],
        only_mutate=[module.source],
        pytest_add_cli_args_test_selection=list(module.tests),
        # tests load committed checkpoints (benchmarks/checkpoints) relative to the repository root,
        # which inside mutmut's copy is mutants/
        also_copy=["benchmarks/checkpoints"],
    )
    body = "\n".join(f"{k} = {_toml_value(v)}" for k, v in settings.items())
    return _strip_mutmut_table(text) + "\n# Written by tools/mutation/run.py for " + module.name + "\n[tool.mutmut]\n" + body + "\n"


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        else:
            link.unlink()
    link.symlink_to(target, target_is_directory=target.is_dir())


def prepare(module: Module, *, fresh: bool) -> None:
    """Create the module's work folder (links, generated pyproject.toml)."""
    work = module.work
    if fresh and (work / "mutants").exists():
        shutil.rmtree(work / "mutants")
    work.mkdir(parents=True, exist_ok=True)
    _link(work / "src", ROOT / "src")
    _link(work / "tests", ROOT / "tests")
    _link(work / "benchmarks", ROOT / "benchmarks")
    shared = (ROOT / ".." / "shared").resolve()
    if shared.is_dir():
        _link(work / "shared", shared)
    (work / "pyproject.toml").write_text(pyproject_for(module), "utf-8")


def meta_path(module: Module) -> Path:
    return module.work / "mutants" / (module.source + ".meta")


def reset_not_killed(module: Module) -> int:
    """Mark every mutant that was not killed as unchecked, so the run retests it with today's tests."""
    path = meta_path(module)
    if not path.exists():
        return 0
    meta = json.loads(path.read_text("utf-8"))
    codes = meta["exit_code_by_key"]
    todo = [k for k, c in codes.items() if c is not None and c not in KILLED_CODES]
    for k in todo:
        codes[k] = None
    path.write_text(json.dumps(meta, indent=4), "utf-8")
    return len(todo)


def mutmut_executable() -> str:
    exe = Path(sys.executable).parent / "mutmut"
    if exe.exists():
        return str(exe)
    found = shutil.which("mutmut")
    if not found:
        sys.exit("error: mutmut not found; install the dev extra: .venv/bin/pip install -e '.[dev]'")
    return found


def _children_cpu() -> float:
    """CPU seconds (user + system) of finished child processes, mutmut's forked workers included."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _signal_if_running(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)


def _memory_cap(gib: float | None):
    """A ``preexec_fn`` capping each process's data segment (inherited by mutmut's forked workers).

    Some mutants turn a loop that appends to a list into an endless one (``attacks/apgd.py``'s
    ``checkpoints``); they grow by about 1 GB per 30 s, far faster than mutmut's CPU-time limit stops
    them. Under the cap the worker gets a ``MemoryError``, its test fails, and the mutant counts as
    killed (a test did notice it) instead of exhausting the machine.
    """
    if not gib:
        return None
    limit = int(gib * 2**30)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return cap


def run_module(module: Module, *, jobs: int, fresh: bool, time_limit: float | None = None,
               memory_gib: float | None = 6.0) -> int:
    """Run mutmut for one module; returns mutmut's exit status and records the timing.

    With ``time_limit`` (seconds), mutmut is interrupted (SIGINT, as Ctrl-C) when it runs longer; the
    verdicts reached so far are kept and the next run continues with the unchecked mutants.
    """
    was_fresh = fresh or not meta_path(module).exists()
    prepare(module, fresh=fresh)
    retest = reset_not_killed(module)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # mutmut puts mutants/src first; a PYTHONPATH to src would be dropped anyway
    env["PYTHONUNBUFFERED"] = "1"  # progress reaches run.log as it happens
    print(f"== {module.source}: tests {' '.join(module.tests)}"
          + (f" (retesting {retest} not-killed mutants)" if retest else ""), flush=True)
    log = module.work / "run.log"
    start, cpu_start = time.monotonic(), _children_cpu()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen([mutmut_executable(), "run", "--max-children", str(jobs)], cwd=module.work,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=_memory_cap(memory_gib))
        assert proc.stdout is not None
        # Ctrl-C first (mutmut stops its workers and keeps the verdicts); SIGTERM a minute later if it
        # is still running (a SIGINT during mutmut's clean test run is absorbed by pytest).
        timers = [threading.Timer(time_limit + delay, _signal_if_running, (proc, sig))
                  for delay, sig in ((0, signal.SIGINT), (60, signal.SIGTERM))] if time_limit else []
        for t in timers:
            t.start()
        for line in proc.stdout:
            fh.write(line)
        rc = proc.wait()
        for t in timers:
            t.cancel()
    seconds, cpu = time.monotonic() - start, _children_cpu() - cpu_start
    tail = log.read_text("utf-8", errors="replace").replace("\r", "\n").strip().splitlines()[-6:]
    print("\n".join("   " + t for t in tail if t.strip()), flush=True)
    codes = json.loads(meta_path(module).read_text("utf-8"))["exit_code_by_key"] if meta_path(module).exists() else {}
    unchecked = sum(1 for c in codes.values() if c is None)
    record = {
        "module": module.name, "source": module.source, "tests": module.tests, "jobs": jobs,
        "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "mutants": len(codes), "unchecked": unchecked, "retested": retest,
        "fresh": was_fresh, "exit_code": rc, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    timing_file = module.work / "timing.json"
    timing = json.loads(timing_file.read_text("utf-8")) if timing_file.exists() else {}
    timing["last"] = record
    if was_fresh and rc == 0 and not unchecked:
        timing["last_fresh"] = record
    elif was_fresh:
        timing["last_partial"] = record
    timing_file.write_text(json.dumps(timing, indent=2), "utf-8")
    print(f"   {len(codes)} mutants ({unchecked} unchecked), {seconds:.0f} s wall, {cpu:.0f} s CPU, exit {rc}; "
          f"log: {log.relative_to(ROOT)}", flush=True)
    return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", action="append", default=[], help="module to run (repeatable); default all")
    ap.add_argument("--jobs", type=int, default=2, help="parallel mutant workers (mutmut --max-children)")
    ap.add_argument("--fresh", action="store_true", help="forget the module's cached results first")
    ap.add_argument("--list", action="store_true", help="print the modules and their tests, run nothing")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds per module after which mutmut is interrupted (results so far are kept)")
    ap.add_argument("--memory-gib", type=float, default=6.0,
                    help="data-segment limit of mutmut and each worker, GiB (0: none); stops runaway mutants")
    ap.add_argument("--parallel", type=int, default=1,
                    help="modules run at the same time, each with --jobs workers (for machines with many cores)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        sys.exit(f"error: --jobs must be >= 1, got {args.jobs}")
    modules = select(load_modules(), [w for m in args.module for w in m.split()])
    todo = []
    for m in modules:
        reason = m.skip_reason()
        if m.missing_tests and m.tests:
            print(f"note: {m.name}: test files not found, dropped: {', '.join(m.missing_tests)}")
        if reason:
            print(f"skip {m.name}: {reason}")
        elif args.list:
            print(f"{m.source}: {' '.join(m.tests)}")
        else:
            todo.append(m)

    def one(m: Module) -> bool:
        return run_module(m, jobs=args.jobs, fresh=args.fresh, time_limit=args.time_limit,
                          memory_gib=args.memory_gib) == 0

    # Modules are independent (own work folder each): on a many-core machine run several at once.
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        failed = [m.name for m, ok in zip(todo, pool.map(one, todo)) if not ok]
    if failed:
        print(f"mutmut failed for: {', '.join(failed)} (see .mutmut/<module>/run.log)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
