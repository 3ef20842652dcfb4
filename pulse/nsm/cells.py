"""Shared building blocks of the Neural State Machine: gated cells and slot communication.

The GRU and LSTM equations live here once; :class:`~pulse.nsm.propagator.StatePropagator`
and :class:`~pulse.nsm.state_bank.StateBank` both call them, and each owns its own
HookPoints. Instead of hook modules, :class:`GatedCell` and :class:`SlotCommunication`
take a mapping of plain callables (``{"update": fn, ...}``) applied in-flow to each
intermediate value, so the caller decides which named hook site (or override) sees it.

GRU (``x`` = input, ``h`` = state; all gates ``[..., D]``)::

    r      = sigmoid(W_r x + b_r + U_r h)          # "reset"
    z      = sigmoid(W_z x + b_z + U_z h)          # "update"
    h_cand = tanh(W_h x + b_h + U_h (r * h))       # "candidate"
    h_new  = (1 - z) * h + z * h_cand

LSTM (``c`` = cell)::

    i = sigmoid(.)  f = sigmoid(.)  g = tanh(.)  o = sigmoid(.)   # from W x + b + U h
    c_new = f * c + i * g                           # "cell"
    h_new = o * tanh(c_new)

Weight layout: ``weight_ih`` ``[G*D, D]``, ``weight_hh`` ``[G*D, D]``, ``bias`` ``[G*D]``
with row blocks in the order (r, z, h) for the GRU (G=3) and (i, f, g, o) for the LSTM (G=4).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

GATE_TYPES = ("gru", "lstm")

#: Names of the per-gate values a cell emits, by gate type.
GATE_NAMES = {
    "gru": ("reset", "update", "candidate"),
    "lstm": ("input", "forget", "candidate", "output", "cell"),
}

Hook = Callable[[torch.Tensor], torch.Tensor]


def check_gate_type(gate_type: str) -> str:
    """Return ``gate_type`` lower-cased, or raise ``ValueError`` naming ``gate_type``."""
    if not isinstance(gate_type, str) or gate_type.lower() not in GATE_TYPES:
        raise ValueError(f"gate_type must be one of {GATE_TYPES}, got {gate_type!r}")
    return gate_type.lower()


def check_positive_int(name: str, value: int) -> int:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _apply(hooks: Optional[Mapping[str, Hook]], name: str, value: torch.Tensor) -> torch.Tensor:
    if hooks is not None and name in hooks:
        return hooks[name](value)
    return value


class GatedCell(nn.Module):
    """One GRU or LSTM cell applied independently to every slot (weights shared over slots).

    Args:
        dim: state and input width ``D``.
        gate_type: ``'gru'`` or ``'lstm'``.

    ``forward(x [..., D], h [..., D], c [..., D] | None, hooks, mass [..., 1] | None)
    -> (h_new, c_new | None, gates)`` where ``gates`` maps the names in :data:`GATE_NAMES` to
    tensors ``[..., D]`` (after hooks). ``mass`` in [0, 1] scales the step: the GRU's update
    gate becomes ``mass * z`` (before its hook); the LSTM moves ``h`` and ``c`` by ``mass`` of
    the way to their new values.
    """

    def __init__(self, dim: int, gate_type: str = "gru") -> None:
        super().__init__()
        self.dim = check_positive_int("state_dim", dim)
        self.gate_type = check_gate_type(gate_type)
        g = 3 if self.gate_type == "gru" else 4
        self.weight_ih = nn.Parameter(torch.empty(g * dim, dim))
        self.weight_hh = nn.Parameter(torch.empty(g * dim, dim))
        self.bias = nn.Parameter(torch.zeros(g * dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.dim)
        nn.init.uniform_(self.weight_ih, -bound, bound)
        nn.init.uniform_(self.weight_hh, -bound, bound)
        with torch.no_grad():
            self.bias.zero_()
            if self.gate_type == "lstm":  # remember by default
                self.bias[self.dim : 2 * self.dim].fill_(1.0)

    def forward(
        self,
        x: torch.Tensor,
        h: torch.Tensor,
        c: Optional[torch.Tensor] = None,
        hooks: Optional[Mapping[str, Hook]] = None,
        mass: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor], dict[str, torch.Tensor]]:
        gi = F.linear(x, self.weight_ih, self.bias)  # [..., G*D]
        if self.gate_type == "gru":
            i_r, i_z, i_h = gi.chunk(3, dim=-1)
            w_r, w_z, w_h = self.weight_hh.chunk(3, dim=0)
            r = _apply(hooks, "reset", torch.sigmoid(i_r + F.linear(h, w_r)))
            z = torch.sigmoid(i_z + F.linear(h, w_z))
            z = _apply(hooks, "update", z if mass is None else mass * z)
            cand = _apply(hooks, "candidate", torch.tanh(i_h + F.linear(r * h, w_h)))
            h_new = (1 - z) * h + z * cand
            return h_new, None, {"reset": r, "update": z, "candidate": cand}
        if c is None:
            c = torch.zeros_like(h)
        gates = gi + F.linear(h, self.weight_hh)
        a_i, a_f, a_g, a_o = gates.chunk(4, dim=-1)
        i = _apply(hooks, "input", torch.sigmoid(a_i))
        f = _apply(hooks, "forget", torch.sigmoid(a_f))
        g_ = _apply(hooks, "candidate", torch.tanh(a_g))
        o = _apply(hooks, "output", torch.sigmoid(a_o))
        c_new = f * c + i * g_
        h_new = o * torch.tanh(c_new)
        if mass is not None:
            c_new, h_new = c + mass * (c_new - c), h + mass * (h_new - h)
        c_new = _apply(hooks, "cell", c_new)
        if "cell" in (hooks or {}):  # an edited cell sets the output it implies
            h_new = o * torch.tanh(c_new) if mass is None else h + mass * (o * torch.tanh(c_new) - h)
        return h_new, c_new, {"input": i, "forget": f, "candidate": g_, "output": o, "cell": c_new}


class SlotCommunication(nn.Module):
    """Multi-head self-attention among slots, residual, then LayerNorm (post-norm).

    ``forward(h [B, S, D], alive [S] bool | None, weights_hook) -> (out [B, S, D], weights [B, H, S, S])``.
    Dead slots (``alive == False``) are never attended to (their key column is masked before
    the softmax, so the weights there are exactly 0), their query rows are all zero, and their
    output equals their input. ``weights_hook`` is applied in-flow to the attention weights.
    """

    def __init__(self, dim: int, num_heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        check_positive_int("state_dim", dim)
        check_positive_int("num_heads", num_heads)
        if dim % num_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must divide state_dim ({dim})")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        h: torch.Tensor,
        alive: Optional[torch.Tensor] = None,
        weights_hook: Optional[Hook] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, s, d = h.shape
        nh, hd = self.num_heads, self.head_dim
        if alive is not None:
            h_in = torch.where(alive[None, :, None], h, torch.zeros((), dtype=h.dtype, device=h.device))
        else:
            h_in = h
        q = self.q_proj(h_in).view(b, s, nh, hd).transpose(1, 2)  # [B, H, S, hd]
        k = self.k_proj(h_in).view(b, s, nh, hd).transpose(1, 2)
        v = self.v_proj(h_in).view(b, s, nh, hd).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # [B, H, S, S]
        if alive is not None:
            scores = scores.masked_fill(~alive[None, None, None, :], float("-inf"))
        w = torch.softmax(scores, dim=-1)
        if alive is not None:
            w = w * alive[None, None, :, None].to(w.dtype)
        if weights_hook is not None:
            w = weights_hook(w)
        o = (w @ v).transpose(1, 2).reshape(b, s, d)  # [B, S, D]
        out = self.norm(h_in + self.dropout(self.out_proj(o)))
        if alive is not None:
            out = torch.where(alive[None, :, None], out, h)
        return out, w
