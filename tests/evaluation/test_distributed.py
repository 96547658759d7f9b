"""Sharded evaluation under torch.distributed: 2 CPU ranks (gloo, launched with ``torch.distributed.run``) give the
single-process card number for number; a killed rank is resumed by rerunning the same command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medrobust.cli.main import main
from medrobust.errors import ConfigError
from medrobust.evaluation.distributed import owner, owns, shard, shard_dir

pytestmark = pytest.mark.slow


def test_batches_go_round_robin_the_checks_to_rank0_and_clean_to_everyone(tmp_path: Path) -> None:
    assert [owner(f"sweep/e1/b{b}", 3) for b in range(5)] == [0, 1, 2, 0, 1]
    assert [owner(f"mineps/b{b}", 2) for b in range(3)] == [0, 1, 0]
    assert owner("large-eps", 4) == owner("examples", 4) == 0
    assert owner("preflight", 4) is None and owner("clean", 4) is None and owner("sweep/e0", 2) is None
    assert owns("clean", 3, 4) and owns("sweep/e0/b7", 3, 4) and not owns("sweep/e0/b7", 2, 4)
    assert not owns("examples", 1, 2)
    assert shard_dir(tmp_path, 1, 2) == tmp_path / "shards" / "rank1-of-2"
    assert shard() == (0, 1)                                    # no process group in the test process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _args(ckpt: Path, out: Path) -> list[str]:
    return ["evaluate", "--checkpoint", str(ckpt), "--dataset", "synthetic", "--option", "n_per_class=8",
            "--attacks", "pgd,square", "--attack-option", "pgd.steps=5", "--attack-option", "square.steps=20",
            "--eps", "0.05,0.1", "--limit", "21", "--batch-size", "7", "--mode", "sequential", "--minimal-eps",
            "--refine-steps", "2", "--examples", "1", "--out", str(out), "--no-progress", "--threads", "1"]


def _torchrun(args: list[str], *, nodes: int = 1, node_rank: int = 0, port: int | None = None,
              wait: bool = True) -> Any:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", "--nproc_per_node=1" if nodes > 1
           else "--nproc_per_node=2", f"--node_rank={node_rank}", "--master_addr=127.0.0.1",
           f"--master_port={port or _free_port()}", "-m", "medrobust", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, text
    return text


def _numbers(out: Path) -> tuple[Any, ...]:
    card = json.loads((out / "card.json").read_text())
    per = np.load(out / "per_sample.npz")
    return (card["clean"], card["results"], card.get("minimal_eps"), [f["code"] for f in card["flags"]],
            {k: per[k].tolist() for k in ("index", "adv_pred", "broken_by", "status", "min_eps")})


def test_two_ranks_give_the_single_process_card_and_one_node_of_two_resumes(
        helpers: Any, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    ckpt = helpers.tiny_checkpoint(tmp_path_factory.getbasetemp())
    single = tmp_path / "single"
    assert main(_args(ckpt, single)) == 0
    sharded = tmp_path / "sharded"
    text = _torchrun(_args(ckpt, sharded))
    assert text.count("result card:") == 1                        # rank 0 alone reports
    assert _numbers(sharded) == _numbers(single)
    shards = sorted(p.name for p in (sharded / "shards").iterdir())
    assert shards == ["rank0-of-2", "rank1-of-2"]
    units1 = json.loads((sharded / "shards" / "rank1-of-2" / "state.json").read_text())["units"]
    assert "sweep/e0/b1" in units1 and "sweep/e0/b0" not in units1 and "large-eps" not in units1
    card = json.loads((sharded / "card.json").read_text())
    assert card["timings"]["ranks"] == 2 and any(k.startswith("rank1:") for k in card["timings"]["seconds_per_unit"])

    # two "nodes" on 127.0.0.1, one process each; rank 1's shard deleted first: it is recomputed, rank 0's kept
    (sharded / "card.json").unlink()
    for f in (sharded / "shards" / "rank1-of-2").iterdir():
        if f.is_file():
            f.unlink()
    port = _free_port()
    procs = [_torchrun(_args(ckpt, sharded), nodes=2, node_rank=r, port=port, wait=False) for r in (0, 1)]
    for p in procs:
        text, _ = p.communicate(timeout=600)
        assert p.returncode == 0, text
    assert _numbers(sharded) == _numbers(single)


def test_a_sharded_evaluation_needs_an_output_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    from medrobust.evaluation import protocol

    with pytest.raises(ConfigError, match=r"^a sharded evaluation \(2 ranks\) needs an output folder"):
        protocol._rank_state(None, rank=0, world=2, overwrite=False)
