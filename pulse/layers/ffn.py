"""SwiGLU feed-forward network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pulse.hooks import HookPoint


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)).

    x: [B, T, D] -> [B, T, D]. Hook ``hook_gate``: silu(gate(x)) [B, T, I].
    """

    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.hook_gate = HookPoint(layout=("batch", "pos", "d_ff"), kind="gate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.hook_gate(F.silu(self.gate_proj(x)))  # [B, T, I]
        return self.dropout(self.down_proj(gate * self.up_proj(x)))
