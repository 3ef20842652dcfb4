"""SimpleNSM: a small Neural State Machine classifier for vector or sequence inputs.

Input ``[B, input_dim]`` (one token) or ``[B, T, input_dim]`` (tokens fed one step at a time).
Per step: the token is embedded, routed to the alive slots (:class:`TokenToStateRouter`), and
the slots are updated (:class:`StatePropagator`, GRU or LSTM, with communication). The logits
come from the importance-weighted mean of the alive slots: ``W_out LayerNorm(sum_s a_s imp_s h_s
/ sum_s a_s imp_s)``.

Hook points: ``manager.hook_importance``, ``manager.hook_alive``, ``router.hook_routing``
``[B, 1, S]`` per step, ``propagator.*`` and ``hook_pooled`` ``[B, Ds]``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from pulse.hooks import HookPoint
from pulse.nsm.cells import check_positive_int
from pulse.nsm.manager import StateManager
from pulse.nsm.propagator import StatePropagator
from pulse.nsm.router import TokenToStateRouter


class SimpleNSM(nn.Module):
    """Embed -> route to slots -> gated update (+ communication) -> importance-weighted readout.

    Args:
        input_dim: input feature width.
        state_dim: slot width ``Ds``.
        num_states: slots alive at construction.
        output_dim: number of logits.
        gate_type: ``'gru'`` or ``'lstm'``.
        num_heads: communication heads (must divide ``state_dim``).
        enable_communication: slot-to-slot attention.
        max_states: slot capacity (default ``num_states``) for later ``manager.allocate_states``.
        prune_threshold: the manager's default prune threshold.

    ``forward(x [B, input_dim] | [B, T, input_dim], token_mask [B, T] | None) -> logits [B, output_dim]``.
    """

    def __init__(
        self,
        input_dim: int,
        state_dim: int,
        num_states: int,
        output_dim: int,
        gate_type: str = "gru",
        num_heads: int = 4,
        enable_communication: bool = True,
        max_states: Optional[int] = None,
        prune_threshold: float = 0.3,
    ) -> None:
        super().__init__()
        self.input_dim = check_positive_int("input_dim", input_dim)
        self.state_dim = check_positive_int("state_dim", state_dim)
        self.output_dim = check_positive_int("output_dim", output_dim)
        check_positive_int("num_states", num_states)
        self.embed = nn.Linear(input_dim, state_dim)
        self.manager = StateManager(state_dim, max_states or num_states, num_states, prune_threshold)
        self.router = TokenToStateRouter(state_dim, state_dim)
        self.propagator = StatePropagator(state_dim, gate_type, num_heads, enable_communication)
        self.norm = nn.LayerNorm(state_dim)
        self.head = nn.Linear(state_dim, output_dim)
        self.hook_pooled = HookPoint(layout=("batch", "d_state"), kind="output")

    def forward(self, x: torch.Tensor, token_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3) or x.shape[-1] != self.input_dim:
            raise ValueError(f"x must be [B, {self.input_dim}] or [B, T, {self.input_dim}], got {getattr(x, 'shape', x)}")
        if x.dim() == 2:
            x = x[:, None]
        b, t, _ = x.shape
        if token_mask is not None and token_mask.shape != (b, t):
            raise ValueError(f"token_mask must be [B, T] = {(b, t)}, got {tuple(token_mask.shape)}")
        imp, alive = self.manager.importance_and_alive()
        states = self.manager.initial_states(b, x.dtype)
        cell = None
        tokens = self.embed(x)  # [B, T, Ds]
        for i in range(t):
            m = None if token_mask is None else token_mask[:, i : i + 1]
            routed, _ = self.router(tokens[:, i : i + 1], states, alive, m)
            new = self.propagator.step(states, routed, cell, alive)
            if m is None:
                states, cell = new.states, new.cell
            else:
                keep = (m[:, 0] > 0)[:, None, None]
                states = torch.where(keep, new.states, states)
                if new.cell is not None:
                    cell = torch.where(keep, new.cell, cell if cell is not None else torch.zeros_like(new.cell))
        w = imp.to(x.dtype) * alive.to(x.dtype)  # [S]
        pooled = self.hook_pooled((states * w[None, :, None]).sum(dim=1) / w.sum().clamp_min(1e-6))
        return self.head(self.norm(pooled))
