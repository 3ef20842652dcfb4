"""Optional fused backends for PULSE layers.

``linear_attention_backend(q)`` says which implementation of the chunked linear attention a
call on tensor ``q`` gets: ``"torch"`` (the pure-PyTorch chunked path) unless the fused
Triton kernel (forward and backward, :mod:`pulse.kernels.linear_attention_triton`) is asked
for. The kernel agrees with the PyTorch path in Triton's CPU interpreter, but it has not yet
been run on a GPU, so ``auto`` does not pick it: set ``PULSE_LA_BACKEND=triton`` to use it
(on CUDA, or with ``TRITON_INTERPRET=1``). The environment variable ``PULSE_LA_BACKEND`` (``auto``,
``torch``, ``triton``) or :func:`set_linear_attention_backend` overrides the choice.
Nothing here imports Triton until a fused call is made, so CPU installs never need it.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


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
    usable = triton_available() and fused_supported(q, v) and (q.is_cuda or _interpreting())
    if choice == "triton":
        if not usable:
            raise RuntimeError("PULSE_LA_BACKEND=triton: Triton is missing, the tensors are not on CUDA, "
                               "or the head dims are not powers of two >= 16")
        return "triton"
    # "auto": the fused kernel is opt-in until its GPU exactness check has run (issue 8)
    return "torch"


def fused_linear_attention(*args, **kwargs):
    from pulse.kernels.linear_attention_triton import fused_linear_attention as fn

    return fn(*args, **kwargs)
