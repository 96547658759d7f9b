"""ONNX models: white-box through onnx2torch when the conversion is exact, else black-box through onnxruntime.

The graph is converted to a PyTorch module with onnx2torch (a maintained converter of the ONNX operator set,
https://github.com/ENOT-AutoDL/onnx2torch). The converted module is trusted only when its logits match
onnxruntime's (the reference ONNX runtime) on a seeded probe batch within :data:`RTOL` / :data:`ATOL`; the
largest difference is recorded. When the graph does not convert, or the logits differ, the model is wrapped
in :class:`OnnxRuntimeModel`: forward passes only, ``black_box_only = True``, and the reason is recorded.
Black-box models can be evaluated with score- and decision-based attacks (SPSA, Square, boundary, noise) and
with transfer from a surrogate; never with gradient attacks.

Needs the optional extra ``pip install "medrobust[onnx]"`` (onnx, onnxruntime); white-box conversion also needs
``"medrobust[onnx-whitebox]"`` (onnx2torch, which imports torchvision).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from medrobust.errors import CheckpointError, ConfigError

RTOL = 1e-3
ATOL = 1e-4
"""The converted model is white-box when ``|z_torch - z_ort| <= ATOL + RTOL |z_ort|`` on every probe logit."""
PROBE_BATCH = 8

_DTYPES = {1: np.float32, 11: np.float64, 10: np.float16}


def _require() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ConfigError('ONNX models need the optional packages onnx and onnxruntime: pip install '
                          '"medrobust[onnx]".') from None
    return onnx, onnxruntime


class _NoGradient(torch.autograd.Function):
    """Outputs of a black-box model: computed without autograd; their input gradient is zero."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.shape = x.shape
        return z

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # type: ignore[override]
        return grad.new_zeros(ctx.shape), None


class OnnxRuntimeModel(nn.Module):
    """A black-box classifier: ``forward`` runs the ONNX graph in onnxruntime on the CPU.

    There are no input gradients (they are zero, and the evaluation's ``zero-gradients`` flag says so): use
    black-box attacks only (``black_box_only`` is ``True``; ``black_box_reason`` says why).
    """

    black_box_only = True

    def __init__(self, session: Any, *, input_name: str, dtype: Any, reason: str) -> None:
        super().__init__()
        self.session = session
        self.input_name = input_name
        self.dtype = dtype
        self.black_box_reason = reason

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().numpy().astype(self.dtype, copy=False)
        (out,) = self.session.run(None, {self.input_name: arr})
        z = torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)
        if torch.is_grad_enabled() and x.requires_grad:
            return _NoGradient.apply(x, z)
        return z


def _static_shape(value_info: Any) -> list[int] | None:
    dims = value_info.type.tensor_type.shape.dim[1:]
    if not dims or any(not d.HasField("dim_value") or d.dim_value < 1 for d in dims):
        return None
    return [int(d.dim_value) for d in dims]


def _graph_io(proto: Any, path: Path) -> tuple[Any, Any]:
    init = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in init]
    outputs = list(proto.graph.output)
    if len(outputs) != 1:
        raise CheckpointError(f"ONNX file {path} has {len(outputs)} outputs ({', '.join(o.name for o in outputs)}); "
                              "medrobust needs one output of logits (N, K): re-export the model returning only "
                              "the logits.")
    if len(inputs) != 1:
        raise CheckpointError(f"ONNX file {path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                              "medrobust needs one input (N, *input shape): re-export with a single input.")
    return inputs[0], outputs[0]


def load_onnx(path: Path, *, input_shape: Sequence[int] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load an ONNX classifier; returns the model and ``{sha256, input_shape, white_box, why, ...}``.

    ``input_shape`` (without the batch dimension) is read from the graph when its dimensions are static; a
    different declared shape is refused. The conversion check is recorded in ``conversion``.
    """
    from medrobust.models.sources import file_sha256, parse_shape

    onnx, ort = _require()
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:  # protobuf / checker errors of a corrupt or invalid file
        raise CheckpointError(f"ONNX file {path} is not a valid model ({str(exc).strip().splitlines()[0][:200]}); "
                              "re-export it.") from None
    inp, _ = _graph_io(proto, path)
    static = _static_shape(inp)
    shape = parse_shape(input_shape) if input_shape is not None else static
    if static is not None and input_shape is not None and shape != static:
        raise CheckpointError(f"ONNX file {path} takes inputs of shape {static}, not the declared {shape}; "
                              "drop --input-shape or load the data at the model's length.")
    if shape is None:
        raise ConfigError(f"ONNX file {path} has no static input shape: pass --input-shape (e.g. 1,187).")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime refuses the graph
        raise CheckpointError(f"onnxruntime cannot run {path}: {str(exc).strip().splitlines()[-1][:200]}.") from None
    dtype = _DTYPES.get(inp.type.tensor_type.elem_type, np.float32)
    info: dict[str, Any] = {"sha256": file_sha256(path), "input_shape": shape}
    converted, reason, conversion = _convert(proto, session, inp.name, dtype, shape)
    info["conversion"] = conversion
    if converted is not None:
        info.update(white_box=True, why=reason)
        return converted, info
    info.update(white_box=False, why=reason)
    return OnnxRuntimeModel(session, input_name=inp.name, dtype=dtype, reason=reason).eval(), info


def _convert(proto: Any, session: Any, input_name: str, dtype: Any,
             shape: list[int]) -> tuple[nn.Module | None, str, dict[str, Any]]:
    """onnx2torch conversion checked against onnxruntime on a seeded probe batch."""
    conversion: dict[str, Any] = {"converter": "onnx2torch", "rtol": RTOL, "atol": ATOL,
                                  "probe": f"{PROBE_BATCH} seeded U[0, 1) inputs"}
    try:
        from onnx2torch import convert
    except ImportError as exc:  # absent, or a dependency of it (torchvision) is
        conversion["error"] = str(exc)
        return None, (f"black-box only: onnx2torch cannot be imported ({exc}; pip install "
                           "\"medrobust[onnx-whitebox]\", which needs torchvision)"), \
            conversion
    try:
        model = convert(proto).eval()
    except Exception as exc:  # the converter's failure on an operator it lacks
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        conversion["error"] = msg
        return None, f"black-box only: onnx2torch cannot convert the graph ({msg})", conversion
    x = torch.rand((PROBE_BATCH, *shape), generator=torch.Generator().manual_seed(0))
    try:
        (ref,) = session.run(None, {input_name: x.numpy().astype(dtype)})
        with torch.no_grad():
            got = model(x.to(torch.float64 if dtype is np.float64 else torch.float32))
        ref_t = torch.as_tensor(np.asarray(ref), dtype=torch.float64)
        diff = float((got.double() - ref_t).abs().max())
        ok = bool(((got.double() - ref_t).abs() <= ATOL + RTOL * ref_t.abs()).all())
    except Exception as exc:  # the converted module (or the runtime) fails on the probe
        msg = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        conversion["error"] = msg
        return None, f"black-box only: the converted graph fails on the probe batch ({msg})", conversion
    conversion["max_abs_difference"] = diff
    if not ok:
        return None, (f"black-box only: the converted graph's logits differ from onnxruntime's by up to {diff:.3g} "
                      f"(tolerance {ATOL:g} + {RTOL:g}·|z|)"), conversion
    return model, (f"white-box: onnx2torch conversion matches onnxruntime (max |Δ logit| = {diff:.2g} on "
                   f"{PROBE_BATCH} probe inputs)"), conversion
