"""The PULSE v1 README's small models, ``SimplePulse`` and ``SequencePulse``, as thin classes
over this project's models (they hold no model code of their own).

    import torch
    from pulse import SimplePulse, SequencePulse
    model = SimplePulse(input_dim=784, state_dim=256, num_states=32, output_dim=10, gate_type="gru")
    model(torch.randn(32, 784))                                  # [32, 10]
    seq_model = SequencePulse(input_dim=64, state_dim=128, num_states=16, output_dim=10,
                              output_mode="last")                # 'last', 'all' or 'mean'
    seq_model(torch.randn(32, 100, 64))                          # [32, 10]

* :class:`SimplePulse` is :class:`pulse.nsm.SimpleNSM` under v1's name: vectors (or
  sequences) of features routed into state slots, updated by the gated propagator, read out.
* :class:`SequencePulse` is the PULSE backbone (:class:`pulse.model.PulseModel`, with a state
  bank of ``num_states`` slots of width ``state_dim`` gated by ``gate_type``) on continuous
  inputs: a linear input projection in place of the token embedding, a linear head on every
  position, and v1's ``output_mode``. Its hook sites are the backbone's (``blocks.{i}.…``,
  ``hook_embed``, ``hook_final``), so traces and interventions work on it as on a language model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pulse.causal_lm import init_weights
from pulse.config import PulseConfig
from pulse.generation import last_real_logits
from pulse.model import PulseForCausalLM, PulseModel, PulseState
from pulse.nsm.simple import SimpleNSM

__all__ = ["SimplePulse", "SequencePulse"]


class SimplePulse(SimpleNSM):
    """PULSE v1's ``SimplePulse``: :class:`pulse.nsm.SimpleNSM` under that name, with the same
    arguments (``input_dim``, ``state_dim``, ``num_states``, ``output_dim``, ``gate_type``, and
    SimpleNSM's optional ``num_heads``, ``enable_communication``, ``max_states``,
    ``prune_threshold``). ``forward(x [B, input_dim] | [B, T, input_dim], token_mask [B, T] |
    None) -> [B, output_dim]``."""


class SequencePulse(nn.Module):
    """PULSE v1's ``SequencePulse``: the PULSE backbone over sequences of feature vectors.

    Args:
        input_dim: feature width of each time step.
        state_dim: model width (``hidden_size``) and width of the state slots.
        num_states: state-bank slots per block (0: no state bank).
        output_dim: width of the output.
        gate_type: the state bank's update gate, ``'gru'`` or ``'lstm'``.
        output_mode: ``'last'`` (the output at each row's last real step, [B, output_dim]),
            ``'all'`` (every step, [B, T, output_dim]) or ``'mean'`` (mean over real steps,
            [B, output_dim]).
        num_layers, num_heads: depth and linear-attention heads of the backbone.
        **config: any other :class:`~pulse.config.PulseConfig` field (``chunk_size``,
            ``use_memory``, ``state_num_heads``, ...).

    ``forward(x [B, T, input_dim], attention_mask [B, T] | None = None, state: PulseState |
    None = None, return_state=False)`` -> the output (and the carried :class:`PulseState`
    with ``return_state=True``: feeding a sequence in pieces with it gives the outputs of
    one call). The model is causal: in ``'all'`` mode step ``t`` sees steps ``<= t`` only.
    """

    OUTPUT_MODES = ("last", "all", "mean")

    def __init__(self, input_dim: int, state_dim: int, num_states: int, output_dim: int,
                 gate_type: str = "gru", output_mode: str = "last", num_layers: int = 2,
                 num_heads: int = 4, **config: Any) -> None:
        super().__init__()
        for name, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if output_mode not in self.OUTPUT_MODES:
            raise ValueError(f"output_mode: must be one of {self.OUTPUT_MODES}, got {output_mode!r}")
        self.input_dim, self.output_dim, self.output_mode = input_dim, output_dim, output_mode
        # vocab_size=1: the backbone's token embedding is unused (inputs come through input_proj)
        self.config = PulseConfig(vocab_size=1, hidden_size=state_dim, num_layers=num_layers,
                                  num_heads=num_heads, num_states=num_states, state_dim=state_dim,
                                  state_gate_type=gate_type, **config)
        self.input_proj = nn.Linear(input_dim, state_dim)
        self.model = PulseModel(self.config)
        self.head = nn.Linear(state_dim, output_dim)
        init_weights(self, self.config.initializer_range, self.config.num_layers,
                     PulseForCausalLM.residual_projections)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                state: PulseState | None = None, return_state: bool = False):
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"x: expected [batch, length, {self.input_dim}], got {getattr(x, 'shape', x)}")
        out = self.model.forward_embeddings(self.input_proj(x), attention_mask, state)
        y = self.head(out["last_hidden_state"])  # [B, T, output_dim]
        if self.output_mode == "last":
            y = last_real_logits(y, attention_mask)
        elif self.output_mode == "mean":
            w = torch.ones_like(y[..., :1]) if attention_mask is None else attention_mask[..., None].to(y.dtype)
            y = (y * w).sum(1) / w.sum(1).clamp_min(1.0)
        return (y, out["state"]) if return_state else y

    def get_state_info(self) -> dict[str, Any]:
        """The state configuration, as v1 reported it."""
        c = self.config
        return {"num_states": c.num_states, "state_dim": c.resolved_state_dim, "gate_type": c.state_gate_type,
                "output_mode": self.output_mode}
