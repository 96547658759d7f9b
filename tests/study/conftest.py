"""Shared fixtures of the study tests: Han-2020-style pair folders and study databases, a real uvicorn server."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import numpy as np
import pytest
import torch

SRC = Path(__file__).resolve().parents[2] / "src"
CLASSES = ["N", "A", "O", "~"]


def require(*names: str) -> None:
    """Skip the calling test module when the ``study`` extra is not installed (in CI: fail, it must be)."""
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            if os.environ.get("CI"):
                pytest.fail(f"{name} is missing: CI must install the study extra (pip install -e '.[study]')")
            pytest.skip(f"{name} not installed (pip install -e '.[study]')", allow_module_level=True)


def make_pairs(folder: Path, *, n: int = 8, samples: int = 250, fs: float = 100.0, seed: int = 0,
               units: str = "mV") -> Path:
    """A band-step folder written by the reproduction's own exporter (pairs_sap.npz, pairs_pgd.npz).

    Records alternate between classes N and A; the attacks succeed on every record but the last one.
    """
    from medrobust.reproduce.han_band import _export

    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples, dtype=torch.float64) / fs
    x = (torch.sin(2 * torch.pi * 1.1 * t) * 0.8).expand(n, 1, samples).clone() + 0.05 * torch.randn(n, 1, samples,
                                                                                                     generator=g)
    y = torch.arange(n) % 2
    meta = SimpleNamespace(fs=fs, units=units, classes=CLASSES, leads=("I",))
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(("sap", "pgd")):
        delta = 0.01 * torch.randn(n, 1, samples, generator=g, dtype=torch.float64)
        if name == "sap":  # smooth: a moving average of the noise
            delta = torch.nn.functional.avg_pool1d(delta, 9, stride=1, padding=4, count_include_pad=False)
        adv = torch.where(torch.arange(n) < n - 1, (y + 1 + k) % 4, y)
        _export(folder / f"pairs_{name}.npz", x=x.float(), x_adv=(x + delta).float(), y=y, clean=y.clone(), adv=adv,
                ids=np.asarray([f"A{i:05d}" for i in range(n)]), meta=meta, attack=name)
    return folder


@pytest.fixture(scope="session")
def pairs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pairs(tmp_path_factory.mktemp("band") / "band")


@pytest.fixture(scope="session")
def built(pairs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A 2AFC study: 2 raters, 5 SAP + 5 PGD items (the pristine copy: tests copy it before writing)."""
    from medrobust.study.create import StudySpec, create_study

    db = tmp_path_factory.mktemp("study") / "study.db"
    result = create_study(pairs_dir, db, StudySpec(raters=2, per_attack=5, seed=3, lead_name="I"))
    return db, result


@pytest.fixture
def study(built: tuple[Path, dict], tmp_path: Path) -> tuple[Path, dict]:
    """A fresh copy of the built study for one test."""
    db = tmp_path / "study.db"
    shutil.copy(built[0], db)
    return db, built[1]


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(db: Path, port: int) -> subprocess.Popen:
    """uvicorn serving ``db`` on 127.0.0.1:``port`` in a subprocess, once it answers."""
    import httpx

    env = {**os.environ, "PYTHONPATH": str(SRC)}
    code = "import sys; from medrobust.study.app import serve; serve(sys.argv[1], port=int(sys.argv[2]))"
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start within 30 s")


@contextlib.contextmanager
def thread_server(db: Path) -> Iterator[str]:
    """uvicorn serving ``db`` from a thread of this process (no interpreter start-up); yields the base URL."""
    import threading

    import uvicorn

    from medrobust.study.app import create_app

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(db), host="127.0.0.1", port=port, log_level="warning",
                                        access_log=False))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the in-process server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture
def server(study: tuple[Path, dict]) -> Iterator[tuple[str, Path, dict]]:
    """The built study served on 127.0.0.1 (a fresh copy): base URL, database, invitations."""
    with thread_server(study[0]) as base:
        yield base, study[0], study[1]
