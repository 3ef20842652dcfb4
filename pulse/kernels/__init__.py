"""Optional fused backends for PULSE layers.

``linear_attention_backend(q, v)`` says which implementation of the chunked linear attention a
call on ``q``/``v`` gets: the fused Triton kernel (forward and backward,
:mod:`pulse.kernels.linear_attention_triton`) or ``"torch"``, the pure-PyTorch chunked path.

``auto`` (the default) picks the fused kernel when it is usable: the tensors are on CUDA,
Triton imports, the head dims are powers of two in [16, 128], and the call is not being traced
by ``torch.compile``. Everywhere else, CPU included, it picks the PyTorch path. Measured on one
NVIDIA H200 (torch 2.11, Triton 3.6, 2026-12-02, ``benchmarks/results/gpu_throughput.md``):

* exactness on the GPU against the PyTorch path (B=2, T=1000 with padding; B=1, T=8192;
  12 heads, d 64): forward outputs, final state and every gradient agree to at most 9.8e-7
  relative L2 error in true fp32 (``ieee``) and 8.7e-4 in the default tf32;
* the layer alone (12 heads, d 64, 65,536 tokens, fp32): forward + backward 6.18 ms fused (tf32)
  vs 11.86 ms PyTorch at batch 1 x 64k, 4.44 vs 10.83 ms at 64 x 1k; forward 1.43 vs 3.91 ms
  and 0.88 vs 3.60 ms (``ieee`` is much slower: 63.6 ms forward + backward);
* eager training of the ~117M-parameter model, 65,536 tokens a step: 178-190k tokens/s
  fused vs 145-150k on the PyTorch path at T = 1k ... 64k, with 55 vs 65 GiB peak memory;
* under ``torch.compile`` (static shapes) the PyTorch path is as fast: 313k / 314k tokens/s at
  T = 1k / 4k against 315k / 312k with the fused kernel inside the compiled graphs, and with the
  kernel inside them Inductor failed to compile the backward at T = 16k and 64k (torch 2.11);
  with the kernel outside them (a graph break) the step is slower: 265k / 252k against 310k /
  313k tokens/s at 16k / 64k. Hence ``auto`` leaves code that torch.compile traces on the
  PyTorch path.

The environment variable ``PULSE_LA_BACKEND`` (``auto``, ``torch``, ``triton``) or
:func:`set_linear_attention_backend` overrides the choice; ``triton`` also runs in Triton's CPU
interpreter (``TRITON_INTERPRET=1``). Under ``torch.compile`` the choice is made when a graph is
traced, and a change of the environment variable is not seen by graphs already compiled (Dynamo
does not guard on it); :func:`set_linear_attention_backend` is guarded.
Nothing here imports Triton until a fused call is made, so CPU installs never need it.
"""

from __future__ import annotations

import os

import torch

_BACKENDS = ("auto", "torch", "triton")
_override: str | None = None


def set_linear_attention_backend(name: str | None) -> None:
    """Force a backend (``"torch"``, ``"triton"``), or ``None``/``"auto"`` to choose per call."""
    global _override
    if name is not None and name not in _BACKENDS:
        raise ValueError(f"name: expected one of {_BACKENDS}, got {name!r}")
    _override = None if name == "auto" else name


_TRITON_OK: bool | None = None


@torch.compiler.assume_constant_result  # torch.compile: a constant, no import traced, no graph break
def triton_available() -> bool:
    global _TRITON_OK
    if _TRITON_OK is None:
        try:
            import triton  # noqa: F401
        except Exception:
            _TRITON_OK = False
        else:
            _TRITON_OK = True
    return _TRITON_OK


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _is_cuda(t: torch.Tensor) -> bool:
    return t.is_cuda


def fused_supported(q: torch.Tensor, v: torch.Tensor) -> bool:
    """The kernel needs power-of-two head dims >= 16 (tensor-core tiles)."""
    dk, dv = q.shape[-1], v.shape[-1]
    pow2 = lambda d: d >= 16 and d & (d - 1) == 0  # noqa: E731
    return pow2(dk) and pow2(dv) and dk <= 128 and dv <= 128


def linear_attention_backend(q: torch.Tensor, v: torch.Tensor) -> str:
    choice = _override or os.environ.get("PULSE_LA_BACKEND", "auto")
    if choice not in _BACKENDS:
        raise ValueError(f"PULSE_LA_BACKEND: expected one of {_BACKENDS}, got {choice!r}")
    if choice == "torch":
        return "torch"
    if choice == "triton":
        if not (triton_available() and fused_supported(q, v) and (_is_cuda(q) or _interpreting())):
            raise RuntimeError("PULSE_LA_BACKEND=triton: Triton is missing, the tensors are not on CUDA, "
                               "or the head dims are not powers of two >= 16")
        return "triton"
    # "auto": the fused kernel on CUDA, eager (see the module docstring for what was measured)
    if torch.compiler.is_compiling():
        return "torch"
    if _is_cuda(q) and _is_cuda(v) and fused_supported(q, v) and triton_available():
        return "triton"
    return "torch"


def fused_linear_attention(*args, **kwargs):
    from pulse.kernels.linear_attention_triton import fused_linear_attention as fn

    return fn(*args, **kwargs)
