"""A plain Transformer language model on ``scaled_dot_product_attention``: the baseline.

Same embedding, RMSNorm, SwiGLU and tied head as PULSE; only the token mixer differs
(softmax attention with rotary positions and a KV cache). ``mixer="none"`` removes token
mixing altogether: the speed ceiling for any attention replacement. A block definition on the
causal-LM skeleton of :mod:`pulse.causal_lm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from pulse.causal_lm import CausalLM
from pulse.config import ConfigBase, default_intermediate_size, PulseConfig, _check, _positive_int
from pulse.hooks import HookPoint
from pulse.layers.attention import GroupedQueryAttention
from pulse.layers.ffn import SwiGLU
from pulse.layers.norm import RMSNorm
from pulse.pretrained import register_model


@dataclass
class TransformerConfig(ConfigBase):
    model_type: ClassVar[str] = "transformer"

    vocab_size: int = 256
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None
    intermediate_size: int | None = None
    rope_base: float = 10000.0
    rms_norm_eps: float = 1e-6
    dropout: float = 0.0
    initializer_range: float = 0.02
    mixer: str = "attention"  # "attention" or "none" (no token mixing: the speed ceiling)
    pad_token_id: int = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def validate(self) -> None:
        _positive_int(self, "vocab_size", "hidden_size", "num_layers", "num_heads")
        _check(self.hidden_size % self.num_heads == 0, "num_heads",
               f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_kv_heads is not None:
            _positive_int(self, "num_kv_heads")
            _check(self.num_heads % self.num_kv_heads == 0, "num_kv_heads",
                   f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")
        _check(self.mixer in ("attention", "none"), "mixer", f"must be 'attention' or 'none', got {self.mixer!r}")
        _check(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")

    @property
    def resolved_intermediate_size(self) -> int:
        if self.intermediate_size is not None:
            return self.intermediate_size
        return default_intermediate_size(self.hidden_size)

    @classmethod
    def matching(cls, config: PulseConfig, **overrides: Any) -> "TransformerConfig":
        """The Transformer of the same width, depth, heads, FFN and vocabulary as a PULSE config."""
        values = dict(
            vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_layers=config.num_layers,
            num_heads=config.num_heads, intermediate_size=config.resolved_intermediate_size,
            rms_norm_eps=config.rms_norm_eps, dropout=config.dropout,
            initializer_range=config.initializer_range, pad_token_id=config.pad_token_id,
            bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        )
        values.update(overrides)
        return cls(**values)


class TransformerBlock(nn.Module):
    """x + attn(norm(x)), then + ffn(norm(x)). forward(x, mask, cache) -> (x, cache)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        D = config.hidden_size
        self.mixer = config.mixer
        self.norm_attn = RMSNorm(D, config.rms_norm_eps)
        if config.mixer == "attention":
            self.attn = GroupedQueryAttention(D, config.num_heads, config.num_kv_heads, config.rope_base, config.dropout)
        self.norm_ffn = RMSNorm(D, config.rms_norm_eps)
        self.ffn = SwiGLU(D, config.resolved_intermediate_size, config.dropout)
        self.hook_resid_post = HookPoint(layout=("batch", "pos", "d_model"), kind="residual")

    def forward(self, x, mask=None, state=None):
        if self.mixer == "attention":
            delta, state = self.attn(self.norm_attn(x), mask, state)
            x = x + delta
        x = x + self.ffn(self.norm_ffn(x))
        return self.hook_resid_post(x), state


@register_model
class TransformerForCausalLM(CausalLM):
    """The causal-LM skeleton (:class:`pulse.causal_lm.CausalLM`) with :class:`TransformerBlock`
    blocks. forward(input_ids, attention_mask=None, labels=None, state=None) ->
    {"logits", "state" (list of per-layer KV caches), and with labels "loss" = "lm_loss"}."""

    config_class = TransformerConfig
    residual_projections = ("o_proj.weight", "down_proj.weight")
    reports_aux_loss = False

    def make_block(self, config: TransformerConfig, index: int) -> TransformerBlock:
        return TransformerBlock(config)
