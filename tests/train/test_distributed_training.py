"""Distributed training under torchrun (2 CPU ranks, gloo): every rank trains on its slice of each global batch
and the gradients are averaged, so the weights equal a single-process run with the same global batch (float
tolerance); rank 0 alone writes the checkpoint and the summary."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medrobust.cli.main import main
from medrobust.distributed import all_reduce_sum, average_gradients, shard
from medrobust.models import load_checkpoint

pytestmark = pytest.mark.slow


def test_collectives_are_the_identity_without_a_process_group() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    average_gradients([p], 0.25)
    assert shard() == (0, 1) and p.grad.tolist() == [2.0, 2.0, 2.0] and all_reduce_sum([1.0, 2.5]) == [1.0, 2.5]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_ranks_train_the_single_process_weights(tmp_path: Path) -> None:
    # PGD-AT (deterministic start): each rank's adversary runs on its slice, the gradients of the mixed loss combine
    defense = ["--defense", "pgd_at", "--defense-option", "random_start=false", "--defense-option", "steps=2"]
    def args(out: Path) -> list[str]:
        # 25 training beats per class, global batch 16: the last batch (13 beats) splits 7 + 6
        return ["train", "--dataset", "synthetic", "--option", "n_per_class=25", "--model", "mlp1", "--epochs", "2",
                "--batch-size", "16", "--lr", "0.001", "--no-progress", "--threads", "1", "--out", str(out), *defense]

    assert main(args(tmp_path / "one")) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_port()}", "-m", "medrobust", *args(tmp_path / "two")]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("best epoch") == 1                       # one summary, from rank 0
    one, two = (load_checkpoint(tmp_path / d / "checkpoint") for d in ("one", "two"))
    for (name, a), (_, b) in zip(one.state_dict().items(), two.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    h1, h2 = ([json.loads(line) for line in (tmp_path / d / "history.jsonl").read_text().splitlines()]
              for d in ("one", "two"))
    assert [r["train_accuracy"] for r in h2] == pytest.approx([r["train_accuracy"] for r in h1], abs=1e-9)
    assert [r["train_loss"] for r in h2] == pytest.approx([r["train_loss"] for r in h1], rel=1e-4)


def _average_worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    both, only0, none = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    both.grad = torch.full((2,), float(rank + 1))
    if rank == 0:
        only0.grad = torch.ones(2)
    average_gradients([both, only0, none, frozen], [0.25, 0.75][rank])
    sums = all_reduce_sum([1.0, float(rank)])
    torch.save({"both": both.grad, "only0": only0.grad, "none": none.grad, "sums": sums, "shard": shard()},
               f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_gradients_are_combined_by_each_ranks_share_of_the_batch(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_average_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        r = torch.load(tmp_path / f"rank{rank}.pt")
        assert r["both"].tolist() == [1.75, 1.75]               # 0.25·1 + 0.75·2
        assert r["only0"].tolist() == [0.25, 0.25]              # rank 1 had no gradient: zero there
        assert r["none"] is None and r["sums"] == [2.0, 1.0] and r["shard"] == (rank, 2)
