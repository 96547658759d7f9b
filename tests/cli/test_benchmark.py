"""``medrobust benchmark`` / ``medrobust.benchmark.benchmark``: the standard protocol on a stratified subset."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medrobust.cli.main import main
from medrobust.errors import ConfigError

FLAGS = ["--fs", "125", "--units", "normalized [0, 1]", "--classes", "N,S,V,F,Q"]


@pytest.fixture()
def light_standard(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The normalised-ECG standard protocol with the same members and radii but few steps and queries (SPSA's
    100 x 2048 queries per sample take minutes on a CPU); ``benchmark`` must still pick it by the data's units."""
    from dataclasses import replace

    from medrobust.evaluation import STANDARD_PROTOCOLS, AttackSpec

    name = "standard-ecg-normalized"
    light = {"apgd": {"steps": 5}, "pgd": {"steps": 5}, "sap": {"steps": 3, "smooth_steps": 3},
             "square": {"steps": 40}, "spsa": {"steps": 3, "nb_samples": 16}}
    std = STANDARD_PROTOCOLS[name]
    members = tuple(AttackSpec(s.name, {**s.kwargs, **light[s.name]}, label=s.label, restarts=s.restarts,
                               optional=s.optional) for s in std.attacks)
    monkeypatch.setitem(STANDARD_PROTOCOLS, name, replace(std, attacks=members, large_eps_steps=5, n_examples=2))
    return STANDARD_PROTOCOLS[name]


@pytest.fixture(scope="module")
def torchscript(tmp_path_factory: pytest.TempPathFactory, helpers: Any) -> Path:
    """The tiny CNN1 checkpoint of the evaluation tests exported as TorchScript (what a user brings)."""
    from medrobust.models import load_checkpoint

    model = load_checkpoint(helpers.tiny_checkpoint(tmp_path_factory.getbasetemp()))
    path = tmp_path_factory.mktemp("bench") / "cnn1.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, torch.rand(2, 1, 187)), str(path))
    return path


def test_benchmark_cli_runs_the_standard_protocol_on_a_stratified_subset(torchscript: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str],
                                                                         light_standard: Any) -> None:
    out = tmp_path / "bench"
    assert main(["benchmark", "--checkpoint", str(torchscript), *FLAGS, "--dataset", "synthetic",
                 "--option", "n_per_class=6", "--n", "10", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    card = json.loads((out / "card.json").read_text())
    std = light_standard
    assert card["protocol"]["name"] == "standard-ecg-normalized" and card["threat_model"]["eps"] == list(std.eps)
    assert [m["label"] for m in card["protocol"]["members"]] == [s.label for s in std.attacks]
    assert card["protocol"]["members"][0]["kwargs"] == dict(std.attacks[0].kwargs)
    sel = card["data"]["evaluated"]
    assert sel["n"] == 10 and sel["n_total_split"] == 30 and sel["selection"]["stratified"] is True
    y = np.load(out / "per_sample.npz")["y"]
    assert np.bincount(y, minlength=5).tolist() == [2, 2, 2, 2, 2]  # never the first 10 rows (all class N)
    assert card["model"]["card"]["source"]["kind"] == "torchscript"
    assert card["command"].startswith("medrobust benchmark --checkpoint")
    assert (out / "report.html").is_file() and "protocol standard-ecg-normalized" in printed


def test_benchmark_python_api_plain_module_and_bad_threat_model(helpers: Any, tmp_path: Path,
                                                                light_standard: Any) -> None:
    from medrobust.benchmark import benchmark
    from medrobust.data import load_dataset
    from medrobust.models import load_checkpoint

    model = load_checkpoint(helpers.tiny_checkpoint(tmp_path.parent.parent))
    del model.card  # a plain module: no card, checked by a probe forward at the data's shape
    ds = load_dataset("synthetic", split="test", n_per_class=4, seed=0)
    with pytest.raises(ConfigError, match="threat_model='l2' needs eps"):
        benchmark(model, ds, threat_model="l2")
    card = benchmark(model, ds, eps=[0.05], n=5)
    assert card["protocol"]["name"] == "custom" and card["threat_model"]["eps"] == [0.05]
    assert card["data"]["evaluated"]["n"] == 5
    with pytest.raises(Exception, match="predicts 5 classes but 3"):
        from medrobust.models.sources import probe

        probe(model, {"input_shape": [1, 187], "classes": ["a", "b", "c"]}, what="m")


def test_medrobust_benchmark_is_callable_after_a_plain_import() -> None:
    """``import medrobust; medrobust.benchmark(model, ...)`` (issue 17): the module is callable and delegates."""
    import subprocess
    import sys

    code = ("import medrobust, torch\n"
            "assert callable(medrobust.benchmark)\n"
            "from medrobust.errors import ConfigError\n"
            "try:\n"
            "    medrobust.benchmark(torch.nn.Linear(2, 2), dataset='nope')\n"
            "except ConfigError as e:\n"
            "    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("refused:") and "nope" in out
