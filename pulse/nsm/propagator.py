"""StatePropagator: gated (GRU/LSTM) state update plus optional slot-to-slot communication.

Hook points (module-relative names, shapes for ``[B, S, D]`` input; for ``[B, D]`` input
the slot axis is absent):

=====================  ==================  ==============================================
name                   shape               value
=====================  ==================  ==============================================
hook_reset_gate        [B, S, D]           GRU reset gate r
hook_update_gate       [B, S, D]           GRU update gate z
hook_candidate         [B, S, D]           GRU candidate h_cand (LSTM: g)
hook_input_gate        [B, S, D]           LSTM input gate i
hook_forget_gate       [B, S, D]           LSTM forget gate f
hook_output_gate       [B, S, D]           LSTM output gate o
hook_cell              [B, S, D]           LSTM new cell c_new
hook_slot_attention    [B, heads, S, S]    communication weights (only when S > 1 and enabled)
hook_state             [B, S, D]           the returned new states
=====================  ==================  ==============================================
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

from pulse.hooks import HookPoint
from pulse.nsm.cells import GatedCell, SlotCommunication, check_gate_type, check_positive_int


class PropagatorOutput(NamedTuple):
    """Result of :meth:`StatePropagator.step`: ``states`` like the input, ``cell`` (LSTM) or None."""

    states: torch.Tensor
    cell: Optional[torch.Tensor]


class StatePropagator(nn.Module):
    """Update state slots from their inputs with GRU or LSTM gates, then let slots talk.

    Args:
        state_dim: slot width ``D``.
        gate_type: ``'gru'`` or ``'lstm'``.
        num_heads: heads of the slot-to-slot attention (must divide ``state_dim``).
        enable_communication: apply multi-head self-attention among slots (residual +
            LayerNorm) after the gated update, for ``[B, S, D]`` inputs with ``S > 1``.
        dropout: dropout on the communication output.
        hook_layout: declared layout of the ``[B, S, D]`` hooks (``HookPoint`` layout); a
            propagator over token states passes ``("batch", "pos", "d_state")``.

    ``forward(states, inputs=None, cell=None, alive=None) -> new_states`` (same shape as
    ``states``: ``[B, D]`` or ``[B, S, D]``). ``inputs`` defaults to zeros. For the LSTM the
    new cell is available from :meth:`step`, which returns ``PropagatorOutput(states, cell)``
    (``cell`` is ``None`` for the GRU); ``forward`` is ``step(...).states``. ``alive`` is an
    optional ``[S]`` bool mask: dead slots are neither attended to nor changed.
    """

    def __init__(
        self,
        state_dim: int,
        gate_type: str = "gru",
        num_heads: int = 4,
        enable_communication: bool = True,
        dropout: float = 0.0,
        hook_layout: tuple[str, ...] = ("batch", "slot", "d_state"),
    ) -> None:
        super().__init__()
        self.state_dim = check_positive_int("state_dim", state_dim)
        self.gate_type = check_gate_type(gate_type)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.enable_communication = bool(enable_communication)
        self.cell = GatedCell(state_dim, self.gate_type)
        self.communication = (
            SlotCommunication(state_dim, num_heads, dropout) if self.enable_communication else None
        )
        self.hook_reset_gate = HookPoint(layout=hook_layout, kind="gate")
        self.hook_update_gate = HookPoint(layout=hook_layout, kind="gate")
        self.hook_candidate = HookPoint(layout=hook_layout, kind="candidate")
        self.hook_input_gate = HookPoint(layout=hook_layout, kind="gate")
        self.hook_forget_gate = HookPoint(layout=hook_layout, kind="gate")
        self.hook_output_gate = HookPoint(layout=hook_layout, kind="gate")
        self.hook_cell = HookPoint(layout=hook_layout, kind="state")
        self.hook_slot_attention = HookPoint(layout=("batch", "state_head", "slot", "key_slot"), kind="attention")
        self.hook_state = HookPoint(layout=hook_layout, kind="state")

    def _hooks(self) -> dict:
        return {
            "reset": self.hook_reset_gate,
            "update": self.hook_update_gate,
            "candidate": self.hook_candidate,
            "input": self.hook_input_gate,
            "forget": self.hook_forget_gate,
            "output": self.hook_output_gate,
            "cell": self.hook_cell,
        }

    def step(
        self,
        states: torch.Tensor,
        inputs: Optional[torch.Tensor] = None,
        cell: Optional[torch.Tensor] = None,
        alive: Optional[torch.Tensor] = None,
    ) -> PropagatorOutput:
        """Gated update + communication; returns ``PropagatorOutput(states, cell)``."""
        if not isinstance(states, torch.Tensor) or states.dim() not in (2, 3):
            raise ValueError("states must be a tensor of shape [B, D] or [B, S, D]")
        if states.shape[-1] != self.state_dim:
            raise ValueError(f"states last dim {states.shape[-1]} != state_dim {self.state_dim}")
        if inputs is None:
            inputs = torch.zeros_like(states)
        elif inputs.shape != states.shape:
            raise ValueError(f"inputs shape {tuple(inputs.shape)} != states shape {tuple(states.shape)}")
        if cell is not None and cell.shape != states.shape:
            raise ValueError(f"cell shape {tuple(cell.shape)} != states shape {tuple(states.shape)}")
        if alive is not None:
            if states.dim() != 3 or alive.shape != (states.shape[1],) or alive.dtype != torch.bool:
                raise ValueError("alive must be a bool tensor [S] matching states [B, S, D]")
            if not bool(alive.any()):
                raise ValueError("alive must mark at least one slot alive")
        h_new, c_new, _ = self.cell(inputs, states, cell, self._hooks())
        if self.communication is not None and states.dim() == 3 and states.shape[1] > 1:
            h_new, _ = self.communication(h_new, alive, self.hook_slot_attention)
        if alive is not None:
            keep = alive[None, :, None]
            h_new = torch.where(keep, h_new, states)
            if c_new is not None:
                c_old = cell if cell is not None else torch.zeros_like(states)
                c_new = torch.where(keep, c_new, c_old)
        h_new = self.hook_state(h_new)
        return PropagatorOutput(h_new, c_new)

    def forward(
        self,
        states: torch.Tensor,
        inputs: Optional[torch.Tensor] = None,
        cell: Optional[torch.Tensor] = None,
        alive: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        return self.step(states, inputs, cell, alive).states
