"""PULSE v1 (legacy): grouped-query softmax attention with RoPE and a KV cache, plus a
state bank in every block. Kept so v1-style models can be trained (``model.type:
legacy_pulse`` in a ``pulse.train`` YAML), loaded and compared. A block definition on the
causal-LM skeleton of :mod:`pulse.causal_lm`.

    from pulse import LegacyPulseConfig, LegacyPulseForCausalLM
    model = LegacyPulseForCausalLM(LegacyPulseConfig(vocab_size=1000, num_states=16))
    out = model(input_ids, labels=input_ids)
    model.generate(input_ids, max_new_tokens=20)

The state passed between calls is a list with one dict per block:
{"attn": KV cache, "states": state-bank state}. Unlike PULSE it grows with the context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from pulse.causal_lm import CausalLM, CausalLMBackbone
from pulse.config import ConfigBase, default_intermediate_size, _check, _positive_int
from pulse.hooks import HookPoint
from pulse.layers.attention import GroupedQueryAttention
from pulse.layers.ffn import SwiGLU
from pulse.layers.norm import RMSNorm
from pulse.nsm.state_bank import StateBank
from pulse.pretrained import register_model


@dataclass
class LegacyPulseConfig(ConfigBase):
    model_type: ClassVar[str] = "legacy_pulse"

    vocab_size: int = 256
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 2
    intermediate_size: int | None = None
    rope_base: float = 10000.0
    num_states: int = 16
    state_dim: int | None = None
    state_gate_type: str = "gru"
    state_num_heads: int = 4
    state_communication: bool = True
    state_chunk_size: int = 64
    prune_threshold: float = 0.3
    importance_reg: float = 0.0
    rms_norm_eps: float = 1e-6
    dropout: float = 0.0
    initializer_range: float = 0.02
    pad_token_id: int = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    # the longest context v1 takes: forward raises ValueError when the KV cache's positions plus
    # the new input_ids columns exceed it (RoPE has no table to size). None: no limit.
    max_position_embeddings: int | None = None

    def validate(self) -> None:
        _positive_int(self, "vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                      "state_num_heads", "state_chunk_size")
        if self.max_position_embeddings is not None:
            _positive_int(self, "max_position_embeddings")
        _check(self.hidden_size % self.num_heads == 0, "num_heads",
               f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        _check(self.num_heads % self.num_kv_heads == 0, "num_kv_heads",
               f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")
        _check(isinstance(self.num_states, int) and self.num_states >= 0, "num_states", "must be >= 0")
        _check(self.state_gate_type in ("gru", "lstm"), "state_gate_type", "must be 'gru' or 'lstm'")
        if self.state_dim is not None:
            _positive_int(self, "state_dim")
        if self.num_states:
            _check(self.resolved_state_dim % self.state_num_heads == 0, "state_num_heads",
                   f"state_dim {self.resolved_state_dim} is not divisible by {self.state_num_heads}")
        _check(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        _check(self.importance_reg >= 0, "importance_reg", "must be >= 0")

    @property
    def resolved_state_dim(self) -> int:
        return self.state_dim if self.state_dim is not None else self.hidden_size

    @property
    def resolved_intermediate_size(self) -> int:
        if self.intermediate_size is not None:
            return self.intermediate_size
        return default_intermediate_size(self.hidden_size)


class LegacyBlock(nn.Module):
    """x + GQA(norm(x)); x + StateBank(norm(x)); x + SwiGLU(norm(x))."""

    def __init__(self, c: LegacyPulseConfig) -> None:
        super().__init__()
        D = c.hidden_size
        self.norm_attn = RMSNorm(D, c.rms_norm_eps)
        self.attn = GroupedQueryAttention(D, c.num_heads, c.num_kv_heads, c.rope_base, c.dropout)
        if c.num_states:
            self.norm_states = RMSNorm(D, c.rms_norm_eps)
            self.states = StateBank(
                hidden_size=D, num_states=c.num_states, state_dim=c.resolved_state_dim,
                chunk_size=c.state_chunk_size, gate_type=c.state_gate_type, num_heads=c.state_num_heads,
                enable_communication=c.state_communication, prune_threshold=c.prune_threshold,
            )
        self.norm_ffn = RMSNorm(D, c.rms_norm_eps)
        self.ffn = SwiGLU(D, c.resolved_intermediate_size, c.dropout)
        self.hook_resid_post = HookPoint(layout=("batch", "pos", "d_model"), kind="residual")

    def forward(self, x, mask=None, state=None):
        state = state or {}
        delta, attn_state = self.attn(self.norm_attn(x), mask, state.get("attn"))
        x = x + delta
        new_state = {"attn": attn_state}
        if hasattr(self, "states"):
            delta, new_state["states"] = self.states(self.norm_states(x), mask, state.get("states"))
            x = x + delta
        x = x + self.ffn(self.norm_ffn(x))
        return self.hook_resid_post(x), new_state


class LegacyPulseModel(CausalLMBackbone):
    """Backbone: the causal-LM skeleton (:class:`pulse.causal_lm.CausalLMBackbone`) with
    :class:`LegacyBlock` blocks. forward(input_ids, attention_mask, state) ->
    {"last_hidden_state", "state"}; the state is the list of per-block dicts and its length
    in positions is the KV cache's."""

    config_class = LegacyPulseConfig

    def make_block(self, config: LegacyPulseConfig, index: int) -> LegacyBlock:
        return LegacyBlock(config)

    def past_positions(self, state: list) -> int:
        return state[0]["attn"]["k"].shape[2] if state and state[0] else 0  # KV cache length


@register_model
class LegacyPulseForCausalLM(CausalLM, LegacyPulseModel):
    """forward(input_ids, attention_mask=None, labels=None, state=None) -> {"logits", "state",
    and with labels "loss", "lm_loss", "aux_loss"}. The LM head is tied to the embeddings;
    ``loss = lm_loss + importance_reg * aux_loss`` (mean state-bank importance)."""

    config_class = LegacyPulseConfig
    residual_projections = ("o_proj.weight", "down_proj.weight", "out_proj.weight")
