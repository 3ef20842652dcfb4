"""UnifiedBlock: the PULSE block."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pulse.config import PulseConfig
from pulse.hooks import HookPoint
from pulse.layers.conv import LocalConv
from pulse.layers.ffn import SwiGLU
from pulse.layers.linear_attention import LinearAttention
from pulse.layers.memory import MemoryAugmentedLayer
from pulse.layers.norm import RMSNorm
from pulse.layers.recurrent import RecurrentState

BlockState = dict[str, dict[str, torch.Tensor]]


class UnifiedBlock(nn.Module):
    """RMSNorm -> [LocalConv (+) LinearAttention] -> fusion gate -> residual,
    then the optional sublayers (recurrent state, memory, state bank), each
    RMSNorm -> sublayer -> residual, then RMSNorm -> SwiGLU -> residual.

    ``UnifiedBlock(hidden_size=768, num_heads=8)`` builds a block with default settings;
    ``UnifiedBlock(config=cfg)`` uses a :class:`PulseConfig`.
    forward(x [B, T, D], mask [B, T] | None, state | None) -> (out [B, T, D], state), where the
    state is a dict of each sublayer's state (``attn``, ``conv``, ``recurrent``, ``memory``,
    ``states``). Hooks: hook_resid_pre, hook_mixer_out, hook_fusion_gate [B, T, D],
    hook_resid_mid, hook_resid_post, plus those of the sublayers.
    """

    def __init__(
        self,
        hidden_size: int | None = None,
        num_heads: int | None = None,
        config: PulseConfig | None = None,
        **config_overrides: Any,
    ) -> None:
        super().__init__()
        if config is None:
            if hidden_size is None or num_heads is None:
                raise ValueError("hidden_size and num_heads: both are needed when no config is given")
            config = PulseConfig(hidden_size=hidden_size, num_heads=num_heads, **config_overrides)
        elif hidden_size is not None or num_heads is not None or config_overrides:
            raise ValueError("config: give either a config or keyword settings, not both")
        self.config = c = config
        D = c.hidden_size
        self.norm_mixer = RMSNorm(D, c.rms_norm_eps)
        if c.use_linear_attention:
            self.attn = LinearAttention(D, c.num_heads, c.chunk_size, c.linear_attn_eps,
                                        c.decay_half_life_min, c.decay_half_life_max)
            self.fusion_gate = nn.Linear(D, D)
        self.conv = LocalConv(D, c.conv_kernel_size)
        self.mixer_out = nn.Linear(D, D, bias=False)
        self.sublayer_norms = nn.ModuleDict()
        if c.use_recurrent_state:
            self.recurrent = RecurrentState(D)
        if c.use_memory:
            self.memory = MemoryAugmentedLayer(D, c.memory_capacity, c.memory_top_k, c.chunk_size)
        if c.num_states:
            from pulse.nsm.state_bank import StateBank

            self.states = StateBank(
                hidden_size=D,
                num_states=c.num_states,
                state_dim=c.resolved_state_dim,
                chunk_size=c.chunk_size,
                gate_type=c.state_gate_type,
                num_heads=c.state_num_heads,
                enable_communication=c.state_communication,
                prune_threshold=c.prune_threshold,
                max_states=c.resolved_max_states,
                write_mode=c.state_write_mode,
            )
        for name in self.stateful_sublayer_names():
            self.sublayer_norms[name] = RMSNorm(D, c.rms_norm_eps)
        self.norm_ffn = RMSNorm(D, c.rms_norm_eps)
        self.ffn = SwiGLU(D, c.resolved_intermediate_size, c.dropout)
        self.dropout = nn.Dropout(c.dropout)
        self.hook_resid_pre = HookPoint(layout=("batch", "pos", "d_model"), kind="residual")
        if c.use_linear_attention:
            self.hook_fusion_gate = HookPoint(layout=("batch", "pos", "d_model"), kind="gate")
        self.hook_mixer_out = HookPoint(layout=("batch", "pos", "d_model"), kind="output")
        self.hook_resid_mid = HookPoint(layout=("batch", "pos", "d_model"), kind="residual")
        self.hook_resid_post = HookPoint(layout=("batch", "pos", "d_model"), kind="residual")

    def stateful_sublayer_names(self) -> list[str]:
        """The optional sublayers this block has, in the order they run."""
        return [n for n in ("recurrent", "memory", "states") if hasattr(self, n)]

    def init_state(self, batch_size: int, device=None, dtype=None) -> BlockState:
        state = {"conv": self.conv.init_state(batch_size, device, dtype)}
        if hasattr(self, "attn"):
            state["attn"] = self.attn.init_state(batch_size, device, dtype)
        for name in self.stateful_sublayer_names():
            state[name] = getattr(self, name).init_state(batch_size, device, dtype)
        return state

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        state: BlockState | None = None,
        attn_mode: str = "auto",
    ) -> tuple[torch.Tensor, BlockState]:
        state = state or {}
        x = self.hook_resid_pre(x)
        h = self.norm_mixer(x)
        conv_out, conv_state = self.conv(h, mask, state.get("conv"))
        new_state: BlockState = {"conv": conv_state}
        if hasattr(self, "attn"):
            attn_out, new_state["attn"] = self.attn(h, mask, state.get("attn"), mode=attn_mode)
            gate = self.hook_fusion_gate(torch.sigmoid(self.fusion_gate(h)))  # [B, T, D]
            mixed = self.hook_mixer_out(self.mixer_out(gate * attn_out + (1 - gate) * conv_out))
        else:  # convolution only
            mixed = self.hook_mixer_out(self.mixer_out(conv_out))
        x = x + self.dropout(mixed)
        for name in self.stateful_sublayer_names():
            delta, new_state[name] = getattr(self, name)(self.sublayer_norms[name](x), mask, state.get(name))
            x = x + self.dropout(delta)
        x = self.hook_resid_mid(x)
        x = self.hook_resid_post(x + self.ffn(self.norm_ffn(x)))
        return x, new_state
