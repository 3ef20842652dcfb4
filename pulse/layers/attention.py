"""Softmax attention with rotary embeddings and a KV cache (Transformer baseline, legacy v1).

Multi-head attention is grouped-query attention with as many key/value heads as query heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pulse.hooks import HookPoint
from pulse.layers.rotary import RotaryEmbedding, apply_rotary_pos_emb

KVCache = dict[str, torch.Tensor]


class GroupedQueryAttention(nn.Module):
    """Causal softmax attention on ``scaled_dot_product_attention`` with a KV cache.

    forward(x [B, T, D], mask [B, T] | None, state KVCache | None) -> (out [B, T, D], KVCache)
    The cache holds k, v [B, Hkv, Tc, hd], a key mask [B, Tc] and the next position id [B].
    Padding (mask 0) is never attended to and does not advance positions.
    Hooks: hook_q, hook_k, hook_v ([B, H, T, hd] after rotary), hook_out [B, H, T, hd].
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        rope_base: float = 10000.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        num_kv_heads = num_kv_heads or num_heads
        if hidden_size % num_heads:
            raise ValueError(f"num_heads: {hidden_size} not divisible by {num_heads}")
        if num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads: num_heads {num_heads} not divisible by {num_kv_heads}")
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.q_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=False)
        self.rotary = RotaryEmbedding(self.head_dim, base=rope_base)
        self.dropout = dropout
        self.hook_q = HookPoint(layout=("batch", "head", "pos", "d_k"), kind="attention_input")
        self.hook_k = HookPoint(layout=("batch", "kv_head", "pos", "d_k"), kind="attention_input")
        self.hook_v = HookPoint(layout=("batch", "kv_head", "pos", "d_v"), kind="attention_input")
        self.hook_out = HookPoint(layout=("batch", "head", "pos", "d_v"), kind="output")

    def init_state(self, batch_size: int, device=None, dtype=None) -> KVCache:
        empty = torch.zeros(batch_size, self.num_kv_heads, 0, self.head_dim, device=device, dtype=dtype)
        return {
            "k": empty,
            "v": empty.clone(),
            "mask": torch.zeros(batch_size, 0, dtype=torch.bool, device=device),
            "pos": torch.zeros(batch_size, dtype=torch.long, device=device),
        }

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, state: KVCache | None = None
    ) -> tuple[torch.Tensor, KVCache]:
        B, T, _ = x.shape
        fresh = state is None
        if fresh:
            state = self.init_state(B, x.device, x.dtype)
        real = torch.ones(B, T, dtype=torch.bool, device=x.device) if mask is None else mask.bool()
        position_ids = state["pos"][:, None] + real.long().cumsum(1) - 1  # [B, T]
        position_ids = position_ids.clamp(min=0)

        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self.rotary(position_ids)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)

        k_all = torch.cat([state["k"], k], dim=2)  # [B, Hkv, Tc+T, hd]
        v_all = torch.cat([state["v"], v], dim=2)
        key_mask = torch.cat([state["mask"], real], dim=1)  # [B, Tc+T]
        groups = self.num_heads // self.num_kv_heads
        k_rep = k_all.repeat_interleave(groups, dim=1) if groups > 1 else k_all
        v_rep = v_all.repeat_interleave(groups, dim=1) if groups > 1 else v_all
        drop = self.dropout if self.training else 0.0
        if fresh and mask is None:
            out = F.scaled_dot_product_attention(q, k_rep, v_rep, is_causal=True, dropout_p=drop)
        else:
            Tc = state["k"].shape[2]
            q_idx = torch.arange(T, device=x.device)[:, None] + Tc
            k_idx = torch.arange(Tc + T, device=x.device)[None, :]
            allowed = (k_idx <= q_idx)[None] & key_mask[:, None, :]  # [B, T, Tc+T]
            allowed = allowed | (k_idx == q_idx)[None]  # a padding query sees itself: no NaN
            out = F.scaled_dot_product_attention(
                q, k_rep, v_rep, attn_mask=allowed[:, None], dropout_p=drop
            )
        out = self.hook_out(out)  # [B, H, T, hd]
        new_state = {
            "k": k_all,
            "v": v_all,
            "mask": key_mask,
            "pos": state["pos"] + real.long().sum(1),
        }
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1)), new_state


class MultiHeadAttention(GroupedQueryAttention):
    """Causal multi-head softmax attention (one key/value head per query head)."""

    def __init__(self, hidden_size: int, num_heads: int, rope_base: float = 10000.0, dropout: float = 0.0):
        super().__init__(hidden_size, num_heads, num_heads, rope_base, dropout)
