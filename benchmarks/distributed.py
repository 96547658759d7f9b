"""Sharded evaluation throughput: 2 processes × 1 thread (torchrun, gloo) against 1 process × 1 thread.

The committed MIT-BIH CNN1 (``benchmarks/checkpoints/mitdb_cnn1_intra``) is evaluated on a stratified subset of the
intra-patient test beats with PGD-20 at three radii, once in one process and once sharded over two ranks (each
rank one intra-op thread). The two cards must hold the same numbers; the ratio of wall-clock times is the
speed-up (the goal on a 2-core machine: >= 1.8). Wall clock is what sharding buys, so it is the measure here; the
CPU time of every process is recorded beside it, with the load average, because the machine is shared.

    python benchmarks/distributed.py [--limit 4096] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA, REPO, ResultFile

CKPT = REPO / "benchmarks" / "checkpoints" / "mitdb_cnn1_intra"


def _args(out: Path, limit: int) -> list[str]:
    return ["evaluate", "--checkpoint", str(CKPT), "--dataset", "mitdb", "--data-dir", str(DATA),
            "--option", "format=kachuee", "--option", "scheme=intra", "--limit", str(limit), "--attacks", "pgd",
            "--attack-option", "pgd.steps=20", "--eps", "0.01,0.03,0.05", "--batch-size", "128", "--examples", "0",
            "--no-large-eps-check", "--mode", "sequential", "--out", str(out), "--no-progress", "--threads", "1"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str]) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "loadavg_1min_after": os.getloadavg()[0]}


def _numbers(out: Path) -> list:
    card = json.loads((out / "card.json").read_text())
    return [card["clean"]["accuracy"], [r["robust_accuracy"] for r in card["results"]]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    res = ResultFile("distributed.json", f"python benchmarks/distributed.py --limit {a.limit} --repeats {a.repeats}")
    med = [sys.executable, "-m", "medrobust"]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(a.repeats):
            one, two = Path(tmp) / f"one{k}", Path(tmp) / f"two{k}"
            single = _run([*med, *_args(one, a.limit)])
            sharded = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                            "--master_addr=127.0.0.1", f"--master_port={_port()}", "-m", "medrobust",
                            *_args(two, a.limit)])
            same = _numbers(one) == _numbers(two)
            runs.append({"single": single, "two_ranks": sharded, "speedup_wall": single["wall_s"] / sharded["wall_s"],
                         "identical_numbers": same})
            res.update(runs=runs)
            print(f"repeat {k}: 1 process {single['wall_s']:.1f} s, 2 ranks {sharded['wall_s']:.1f} s, "
                  f"speed-up {runs[-1]['speedup_wall']:.2f}x, identical numbers: {same}", flush=True)
            shutil.rmtree(one), shutil.rmtree(two)
    best = max(r["speedup_wall"] for r in runs)
    res.update(setup={"checkpoint": str(CKPT.relative_to(REPO)), "limit": a.limit, "attack": "PGD-20",
                      "eps": [0.01, 0.03, 0.05], "batch_size": 128, "threads_per_process": 1},
               speedup_wall_best=best, goal=1.8, complete=True)
    print(f"best speed-up {best:.2f}x (goal 1.8x); {res.path}")


if __name__ == "__main__":
    main()
