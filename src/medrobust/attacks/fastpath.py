"""GPU fast path: an attack step's forward, loss and input-gradient backward replayed from a CUDA graph.

Small ECG models on a GPU are launch-bound: one forward + backward of CNN1 over a batch of 256 beats is a few
hundred tiny kernels whose launch cost, not their arithmetic, sets the time. A CUDA graph records those kernels
once and replays them with one launch (NVIDIA, "CUDA Graphs", CUDA C++ Programming Guide §3.2.8.7; PyTorch's
``torch.cuda.graph``, Ngo et al., "Accelerating PyTorch with CUDA Graphs", PyTorch blog 2021). A graph needs
static shapes and static memory, while our attacks shrink their active set as samples succeed
(:class:`~medrobust.attacks.base.AttackContext`). :class:`StaticLossGrad` reconciles both: it owns static
buffers of a fixed number of rows; each call copies the active samples in (padding the rest with a copy of the
first active sample, a valid input), replays the captured step, and copies the real rows out. Samples are
independent in an eval-mode model, so the padded rows change nothing; the first use of every graph is checked
against the plain eager step on the unpadded rows (which also catches a model that mixes samples), and a graph
that disagrees is dropped with a warning, never used. Attacks with a transform (SAP's smoothing of θ) keep the
transform outside the graph and chain its gradient (vector-Jacobian product with the graph's input gradient).

``fast_path`` of an attack: ``"auto"`` (a CUDA graph on CUDA inputs, today's eager path elsewhere), ``"off"``,
or ``"cuda_graph"`` (refused for non-CUDA inputs). Query-only attacks (SPSA, Square, boundary) forward large
blocks of probes at once and are not launch-bound; they keep the eager path.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import nn

from medrobust.attacks.losses import LossFn
from medrobust.checks import check_choice, check_int
from medrobust.errors import ConfigError

FAST_PATHS = ("auto", "off", "cuda_graph")
Outputs = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]
Capture = Callable[[Callable[[], Outputs]], Callable[[], Outputs]]
"""Turns a step (reading static buffers, returning ``(logits, loss, grad)``) into its replay."""


def resolve_fast_path(option: Any, device: torch.device) -> str:
    """``"cuda_graph"`` or ``"off"`` for inputs on ``device`` (``"auto"``: a graph exactly on CUDA)."""
    option = check_choice(option, "fast_path", FAST_PATHS)
    if option == "auto":
        return "cuda_graph" if device.type == "cuda" else "off"
    if option == "cuda_graph" and device.type != "cuda":
        raise ConfigError(f"fast_path='cuda_graph' needs CUDA inputs, got inputs on {device}; use fast_path='auto' "
                          "(the eager path off CUDA) or 'off'.")
    return option


def cuda_graph_capture(step: Callable[[], Outputs]) -> Callable[[], Outputs]:
    """Capture ``step`` in a CUDA graph after warm-up runs on a side stream; returns the replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):   # warm-up: autograd and cuDNN allocate and choose kernels outside the capture
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = step()

    def replay() -> Outputs:
        graph.replay()
        return static_out

    return replay


def eager_capture(step: Callable[[], Outputs]) -> Callable[[], Outputs]:
    """The identity capture: the step itself (CPU-runnable stand-in with the same buffer logic)."""
    return step


class StaticLossGrad:
    """Logits, per-sample loss and (optionally) input gradient of up to ``rows`` samples per replay.

    Parameters
    ----------
    model
        Eval-mode classifier (the attack freezes it), called on ``(rows, *features)``.
    loss_fn
        ``loss(logits, y, target) -> (n,)``; its gradient is taken of the sum.
    rows
        Static batch: larger batches go through in chunks of ``rows``, smaller ones are padded.
    capture
        :func:`cuda_graph_capture` on a GPU; :func:`eager_capture` (or a test double) elsewhere.
    check
        Compare each new graph's first replay with the eager step on the real rows (rtol 1e-3, atol 1e-5 times
        the largest magnitude of each output, at least 1e-5); a graph that disagrees is dropped with a warning.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, *, rows: int, capture: Capture, check: bool = True) -> None:
        self.model, self.loss_fn, self.capture, self.check = model, loss_fn, capture, check
        self.rows = check_int(rows, "rows", minimum=1)
        self._slots: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.disabled = False
        self.replays = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, *,
                 need_grad: bool) -> Outputs | None:
        """``(logits, loss, grad)`` of the batch (``grad`` ``None`` without ``need_grad``); ``None`` for an empty
        batch or when the graph was dropped (the caller then takes the eager path)."""
        if x.shape[0] == 0:
            return None
        parts: list[Outputs] = []
        for i in range(0, x.shape[0], self.rows):
            out = self._chunk(x[i:i + self.rows], y[i:i + self.rows],
                              None if target is None else target[i:i + self.rows], need_grad)
            if out is None:
                return None
            parts.append(out)
        grads = [p[2] for p in parts]
        return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                torch.cat(grads) if need_grad else None)  # type: ignore[arg-type]

    def _chunk(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, need_grad: bool) -> Outputs | None:
        if self.disabled:
            return None
        key = (need_grad, tuple(x.shape[1:]), x.dtype, x.device, tuple(y.shape[1:]), y.dtype,
               None if target is None else (tuple(target.shape[1:]), target.dtype))
        slot = self._slots.get(key)
        fresh = slot is None
        if slot is None:
            slot = self._slots[key] = self._build(x, y, target, need_grad)
        n = x.shape[0]
        for name, t in (("x", x), ("y", y), ("target", target)):
            if t is not None:
                _fill(slot[name], t)
        logits, loss, grad = slot["replay"]()
        self.replays += 1
        out = (logits[:n].clone(), loss[:n].clone(), None if grad is None else grad[:n].clone())
        if fresh and self.check and not self._agrees(out, x, y, target, need_grad):
            self.disabled = True
            return None
        return out

    def _build(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, need_grad: bool) -> dict[str, Any]:
        slot: dict[str, Any] = {
            "x": x.new_empty((self.rows, *x.shape[1:])), "y": y.new_empty((self.rows, *y.shape[1:])),
            "target": None if target is None else target.new_empty((self.rows, *target.shape[1:]))}
        for name, t in (("x", x), ("y", y), ("target", target)):
            if t is not None:
                _fill(slot[name], t)
        slot["replay"] = self.capture(lambda: self._step(slot["x"], slot["y"], slot["target"], need_grad))
        return slot

    def _step(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, need_grad: bool) -> Outputs:
        with torch.enable_grad() if need_grad else torch.no_grad():
            leaf = x.detach().requires_grad_(need_grad)
            logits = self.model(leaf)
            loss = self.loss_fn(logits, y, target)
            grad = torch.autograd.grad(loss.sum(), leaf)[0] if need_grad else None
        return logits.detach(), loss.detach(), grad

    def _agrees(self, out: Outputs, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                need_grad: bool) -> bool:
        ref = self._step(x, y, target, need_grad)
        for name, a, b in zip(("logits", "loss", "gradient"), out, ref):
            if a is None or b is None:
                continue
            tol = 1e-5 * max(1.0, float(b.abs().max()))
            if not torch.allclose(a, b, rtol=1e-3, atol=tol):
                warnings.warn(f"the captured attack step disagrees with the eager one ({name}, max difference "
                              f"{float((a - b).abs().max()):.3g}); the fast path is off for this attack (the model "
                              "may mix samples of a batch, e.g. batch statistics in eval mode).", RuntimeWarning)
                return False
        return True


def _fill(static: torch.Tensor, t: torch.Tensor) -> None:
    """Copy ``t`` into the first rows of ``static``; the rest repeat ``t``'s first row (a valid input)."""
    n = t.shape[0]
    static[:n].copy_(t)
    if n < static.shape[0]:
        static[n:].copy_(t[:1].expand(static.shape[0] - n, *t.shape[1:]))
