"""The user's own model: checkpoint, TorchScript, ``module:factory`` + weights and ONNX give the same numbers;
ONNX that does not convert is black-box only; bad input is one line (``medrobust.models.load_model``, CLI)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from medrobust.cli.main import main
from medrobust.errors import CheckpointError, ConfigError
from medrobust.models import load_model, source_kind

DECL = {"fs": 125.0, "units": "normalized [0, 1]", "classes": "N,S,V,F,Q"}
FLAGS = ["--fs", "125", "--units", "normalized [0, 1]", "--classes", "N,S,V,F,Q"]
DATA = ["--dataset", "synthetic", "--option", "n_per_class=6"]

# The user's own code, imported by the factory source from a folder on disk (never from the test package).
USER_CODE = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, channels: int = 4, classes: int = 5, length: int = 187) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, channels, 7, stride=2)
        self.head = nn.Linear(channels * ((length - 7) // 2 + 1), classes)

    def features(self, x):
        return torch.relu(self.conv(x)).flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


class TwoOutputs(TinyNet):
    def forward(self, x):
        h = self.features(x)
        return self.head(h), h


class WithSinh(TinyNet):
    """ONNX ``Sinh``: an operator onnx2torch does not convert."""

    def forward(self, x):
        return self.head(torch.sinh(self.conv(x)).flatten(1))


class Softmaxed(TinyNet):
    def forward(self, x):
        return torch.softmax(self.head(self.features(x)), 1)


def build():
    return TinyNet()


def build_wide():
    return TinyNet(channels=6)


def broken():
    raise RuntimeError("no GPU found")
'''


def need_onnx() -> None:
    """ONNX tests run when the ``onnx`` extra is installed; under CI=1 (``make test`` installs it) they must."""
    for name in ("onnx", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            if os.environ.get("CI"):
                pytest.fail(f"{name} is missing: `make test` installs the onnx extra (pip install -e '.[test,onnx]')")
            pytest.skip(f"{name} not installed (pip install 'medrobust[onnx]')")


def have_onnx2torch() -> bool:
    """Whether ONNX graphs can be converted for white-box attacks (onnx2torch needs torchvision, which exists here
    only as the large build of the images environment). Under CI=1 an environment with torchvision must have it."""
    try:
        importlib.import_module("onnx2torch")
        return True
    except ImportError:
        has_tv = importlib.util.find_spec("torchvision") is not None
        if has_tv and os.environ.get("CI"):
            pytest.fail("onnx2torch is missing beside torchvision: `make test-images` installs the onnx-whitebox extra")
        return False


def export_onnx(model: torch.nn.Module, path: Path, outputs: tuple[str, ...] = ("logits",)) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.rand(2, 1, 187),), str(path), dynamo=False, input_names=["x"],
                          output_names=list(outputs), dynamic_axes={"x": {0: "n"}, **{o: {0: "n"} for o in outputs}})
    return path


def with_sinh(path: Path) -> Path:
    """The exported TinyNet with its ``Relu`` replaced by ``Sinh`` (a real ONNX operator onnx2torch lacks; the torch
    exporter has no ``sinh`` either, so the node is renamed in the graph: both take one input, no attributes)."""
    import onnx

    proto = onnx.load(str(path))
    nodes = [n for n in proto.graph.node if n.op_type == "Relu"]
    assert len(nodes) == 1
    nodes[0].op_type = "Sinh"
    onnx.save(proto, str(path))
    return path


def script(model: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model.eval(), torch.rand(2, 1, 187)), str(path))
    return path


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small CNN trained briefly on synthetic beats and saved as all four sources."""
    from safetensors.torch import save_file

    from medrobust.data import load_dataset
    from medrobust.models import register_model, save_checkpoint

    base = tmp_path_factory.mktemp("own-model")
    pkg = base / "user_code"
    pkg.mkdir()
    (pkg / "tinynet_h6.py").write_text(USER_CODE)
    sys.path.insert(0, str(pkg))
    try:
        user = importlib.import_module("tinynet_h6")
    finally:
        sys.path.remove(str(pkg))
    train = load_dataset("synthetic", split="train", n_per_class=40, seed=0)
    torch.manual_seed(0)
    model = user.TinyNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(train.x), train.y).backward()
        opt.step()
    model.eval()
    register_model("tinynet-h6-test")(user.build)
    paths = {
        "checkpoint": save_checkpoint(model, base / "ckpt", arch=("tinynet-h6-test", {}), classes=list("NSVFQ"),
                                      fs=125.0, input_shape=[1, 187], units="normalized [0, 1]"),
        "torchscript": script(model, base / "model.pt"),
        "factory": "tinynet_h6:build",
    }
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(base / "weights.safetensors"))
    torch.save(model.state_dict(), base / "weights.pt")
    out: dict[str, Any] = {"base": base, "pkg": pkg, "user": user, "model": model, "paths": paths}
    try:
        need_onnx()
    except pytest.skip.Exception:
        return out
    paths["onnx"] = export_onnx(model, base / "model.onnx")
    sinh = user.WithSinh()
    sinh.load_state_dict(model.state_dict())
    out["sinh"] = sinh
    out["sinh_onnx"] = with_sinh(export_onnx(model, base / "sinh.onnx"))
    out["two_outputs_onnx"] = export_onnx(user.TwoOutputs(), base / "two.onnx", ("logits", "features"))
    return out


def _load(own: dict[str, Any], kind: str) -> torch.nn.Module:
    src = own["paths"][kind]
    if kind == "checkpoint":
        return load_model(src)
    if kind == "factory":
        return load_model(src, weights=own["base"] / "weights.safetensors", model_path=own["pkg"], **DECL,
                          input_shape=[1, 187])
    return load_model(src, **DECL, input_shape=[1, 187])


@pytest.mark.onnx
def test_every_source_gives_the_same_clean_and_pgd_robust_accuracy(own: dict[str, Any]) -> None:
    from medrobust.data import load_dataset
    from medrobust.evaluation import AttackSpec, ProtocolConfig, evaluate

    need_onnx()
    ds = load_dataset("synthetic", split="test", n_per_class=10, seed=0)
    cfg = ProtocolConfig(attacks=[AttackSpec("pgd", {"steps": 10, "random_start": True})], eps=[0.01, 0.03],
                         mode="individual", seed=3, large_eps_check=False, n_examples=0)
    numbers = {}
    white = have_onnx2torch()
    for kind in ("checkpoint", "torchscript", "factory") + (("onnx",) if white else ()):
        model = _load(own, kind)
        assert model.card["source"]["kind"] == kind and model.card["source"]["black_box_only"] is False
        card = evaluate(model, ds, cfg, model_card=model.card, progress=False)
        numbers[kind] = (card["clean"]["accuracy"]["numerator"],
                         [r["robust_accuracy"]["numerator"] for r in card["results"]])
    clean, robust = numbers["checkpoint"]
    assert clean >= 30, f"the trained CNN should beat chance clearly, got {clean}/50"  # else the test proves nothing
    assert robust[0] < clean and robust[-1] < robust[0], "PGD must break some samples, more at the larger ε"
    assert numbers == {k: (clean, robust) for k in numbers}
    onnx_model = _load(own, "onnx")
    onnx_card = onnx_model.card["source"]
    if white:
        assert onnx_card["conversion"]["max_abs_difference"] <= 1e-4 and onnx_card["why"].startswith("white-box")
    else:  # without onnx2torch the graph runs in onnxruntime, black-box only, and says why; same predictions
        assert onnx_card["black_box_only"] is True and "onnx2torch" in onnx_card["why"]
        with torch.no_grad():
            assert int((onnx_model(ds.x).argmax(1) == ds.y).sum()) == clean


def test_cards_record_files_and_hashes(own: dict[str, Any]) -> None:
    from medrobust.models.sources import file_sha256

    ts = _load(own, "torchscript")
    digest = file_sha256(own["paths"]["torchscript"])
    assert ts.card["weights_sha256"] == digest and ts.card["source"]["sha256"] == {str(own["paths"]["torchscript"]):
                                                                                   digest}
    assert ts.card["classes"] == list("NSVFQ") and ts.card["fs"] == 125.0 and ts.card["input_shape"] == [1, 187]
    fac = _load(own, "factory")
    assert fac.card["source"]["sha256"] == {str(own["base"] / "weights.safetensors"):
                                            file_sha256(own["base"] / "weights.safetensors")}
    # a torch.save state dict works too (read with weights_only=True) and gives the same logits
    fac_pt = load_model("tinynet_h6:build", weights=own["base"] / "weights.pt", model_path=own["pkg"], **DECL,
                        input_shape=[1, 187])
    x = torch.rand(3, 1, 187)
    assert torch.equal(fac_pt(x), fac(x))
    ck = _load(own, "checkpoint")
    assert ck.card["architecture"] == "tinynet-h6-test" and ck.card["source"]["kind"] == "checkpoint"


@pytest.mark.onnx
def test_onnx_graph_that_does_not_convert_is_black_box_with_the_reason(own: dict[str, Any]) -> None:
    need_onnx()
    from medrobust.benchmark import benchmark_protocol, is_black_box_model

    model = load_model(own["sinh_onnx"], **DECL)  # the input shape is read from the graph
    src = model.card["source"]
    assert src["black_box_only"] is True and is_black_box_model(model)
    if have_onnx2torch():
        assert "onnx2torch cannot convert" in src["why"] and "Sinh" in src["why"]
    else:
        assert "onnx2torch" in src["why"]
    assert model.card["input_shape"] == [1, 187]
    x = torch.rand(6, 1, 187)
    with torch.no_grad():
        assert torch.allclose(model(x), own["sinh"](x), atol=1e-4)
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xx).sum(), xx)
    assert torch.equal(g, torch.zeros_like(x))  # no gradients: the zero-gradients flag fires, attacks cannot use them
    proto = benchmark_protocol("normalized [0, 1]", 125.0, black_box=True)
    assert {s.name for s in proto.attacks} == {"square", "spsa"} and not any(s.optional for s in proto.attacks)
    assert proto.large_eps_check is False and proto.name == "standard-ecg-normalized-black-box"
    assert benchmark_protocol("normalized [0, 1]", 125.0).large_eps_check is True


@pytest.mark.onnx
def test_cli_black_box_model_refuses_white_box_attacks_and_runs_black_box_ones(
        own: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    need_onnx()
    src = ["--checkpoint", str(own["sinh_onnx"]), *FLAGS, *DATA]
    assert main(["evaluate", *src, "--attacks", "pgd,uniform_noise", "--eps", "0.05", "--out",
                 str(tmp_path / "a"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "black-box only" in err and "['pgd']" in err
    assert "spsa" in err and "square" in err and "boundary" in err and "uniform_noise" in err and "apgd" not in err
    assert main(["attack", *src, "--attack", "fgsm", "--eps", "0.05", "--out", str(tmp_path / "b")]) == 2
    assert "black-box only" in capsys.readouterr().err
    assert main(["evaluate", *src, "--attacks", "uniform_noise", "--eps", "0.05", "--limit", "10", "--examples", "0",
                 "--out", str(tmp_path / "c"), "--no-progress"]) == 0
    card = json.loads((tmp_path / "c" / "card.json").read_text())
    assert card["protocol"]["large_eps_check"] is False
    assert card["model"]["card"]["source"]["black_box_only"] is True


def _one_line_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    assert main(args) == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("medrobust: error:") and "Traceback" not in cap.err, err
    return err


def test_cli_bad_sources_are_one_line_each(own: dict[str, Any], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--attacks", "pgd", "--eps", "0.05", "--out", str(tmp_path / "o"), "--no-progress"]
    ts = str(own["paths"]["torchscript"])
    err = _one_line_error(capsys, ["evaluate", "--checkpoint", ts, *FLAGS, *DATA, "--input-shape", "1,150", *out])
    assert "model.pt" in err and "(4, 1, 150)" in err and "--input-shape" in err
    err = _one_line_error(capsys, ["evaluate", "--checkpoint", "tinynet_h6:broken", "--weights",
                                   str(own["base"] / "weights.safetensors"), "--model-path", str(own["pkg"]), *FLAGS,
                                   *DATA, *out])
    assert "tinynet_h6:broken() raised RuntimeError: no GPU found" in err
    err = _one_line_error(capsys, ["evaluate", "--checkpoint", "tinynet_h6:build_wide", "--weights",
                                   str(own["base"] / "weights.safetensors"), "--model-path", str(own["pkg"]), *FLAGS,
                                   *DATA, *out])
    assert "weights.safetensors do not fit the model of tinynet_h6:build_wide" in err and "size mismatch" in err
    err = _one_line_error(capsys, ["evaluate", "--checkpoint", ts, "--fs", "125", "--classes", "N,S,V,F,Q", *DATA,
                                   *out])
    assert "--units" in err and "--fs" not in err.split("pass", 1)[1].split("(")[0]
    err = _one_line_error(capsys, ["evaluate", "--checkpoint", ts, "--fs", "125", "--units", "normalized [0, 1]",
                                   "--classes", "N,S,V", *DATA, *out])
    assert "predicts 5 classes but 3 are declared" in err
    err = _one_line_error(capsys, ["evaluate", "--checkpoint", "tinynet_h6:nothing", "--weights",
                                   str(own["base"] / "weights.pt"), "--model-path", str(own["pkg"]), *FLAGS, *DATA,
                                   *out])
    assert "no callable 'nothing'" in err
    err = _one_line_error(capsys, ["evaluate", "--checkpoint", "no_such_pkg_h6.models:build", "--weights",
                                   str(own["base"] / "weights.pt"), *FLAGS, *DATA, *out])
    assert "cannot import 'no_such_pkg_h6.models'" in err and "--model-path" in err


@pytest.mark.onnx
def test_onnx_with_two_outputs_is_one_line(own: dict[str, Any], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    need_onnx()
    err = _one_line_error(capsys, ["evaluate", "--checkpoint", str(own["two_outputs_onnx"]), *FLAGS, *DATA,
                                   "--attacks", "pgd", "--eps", "0.05", "--out", str(tmp_path / "o")])
    assert "two.onnx has 2 outputs (logits, features)" in err


class _Boom:
    """Unpickling this would create a file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def test_pickled_full_models_are_refused_without_unpickling(own: dict[str, Any], tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    for name, save in (("full.pt", lambda p: torch.save(_Boom(marker), p)),
                       ("legacy.pkl", lambda p: p.write_bytes(pickle.dumps(_Boom(marker))))):
        path = tmp_path / name
        save(path)
        with pytest.raises(CheckpointError, match="not a TorchScript archive.*never unpickles"):
            load_model(path, **DECL, input_shape=[1, 187])
    # a state dict given as weights goes through torch.load(weights_only=True), which refuses the object too
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_model("tinynet_h6:build", weights=tmp_path / "full.pt", model_path=own["pkg"], **DECL,
                   input_shape=[1, 187])
    assert not marker.exists()


def test_declarations_and_probabilities(own: dict[str, Any], tmp_path: Path) -> None:
    user = own["user"]
    soft = user.Softmaxed()
    soft.load_state_dict(own["model"].state_dict())
    path = script(soft, tmp_path / "soft.pt")
    with pytest.raises(CheckpointError, match="soft.pt: .*probabilities"):
        load_model(path, **DECL, input_shape=[1, 187])
    # a checkpoint folder keeps today's behaviour: loaded, the evaluation flags probability outputs and converts them
    from medrobust.models import register_model, save_checkpoint

    register_model("tinynet-h6-soft")(user.Softmaxed)
    ck = save_checkpoint(soft, tmp_path / "soft-ckpt", arch=("tinynet-h6-soft", {}), classes=list("NSVFQ"), fs=125.0,
                         input_shape=[1, 187], units="normalized [0, 1]")
    assert load_model(ck).card["source"]["kind"] == "checkpoint"
    with pytest.raises(ConfigError, match="--input-shape"):
        load_model(own["paths"]["torchscript"], **DECL)
    with pytest.raises(ConfigError, match="--weights is only for a MODULE:FACTORY"):
        load_model(own["paths"]["torchscript"], weights=own["base"] / "weights.pt", **DECL, input_shape=[1, 187])
    with pytest.raises(CheckpointError, match="records fs = 125.0, not 250.0"):
        load_model(own["paths"]["checkpoint"], fs=250)
    assert source_kind(own["paths"]["torchscript"]) == "torchscript"
    assert source_kind(own["paths"]["checkpoint"]) == "checkpoint"
    assert source_kind("pkg.mod:build") == "factory"
    with pytest.raises(CheckpointError, match="not found"):
        source_kind(tmp_path / "missing.pt")


def test_cli_attack_with_a_factory_source(own: dict[str, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["attack", "--model", "tinynet_h6:build", "--weights", str(own["base"] / "weights.safetensors"),
                 "--model-path", str(own["pkg"]), *FLAGS, *DATA, "--attack", "fgsm", "--eps", "0.05", "--no-wfdb",
                 "--out", str(tmp_path / "adv"), "--no-progress"]) == 0
    assert "fgsm at ε = 0.05 on 30 samples" in capsys.readouterr().out
    text = json.dumps(json.loads((tmp_path / "adv" / "attack.json").read_text()))
    assert "tinynet_h6:build" in text and '"kind": "factory"' in text
