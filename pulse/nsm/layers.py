"""Token/state layers of the Neural State Machine: NSMLayer, HybridAttention, SparseStateAttention.

These are sequence-level (non-causal unless stated) building blocks for NSM models; the
causal, chunk-updated bank used inside the PULSE language model is
:class:`pulse.nsm.state_bank.StateBank`.

Hook points:

* ``NSMLayer``: ``router.hook_routing`` ``[B, T, S]``, the propagator's hooks under
  ``propagator.`` (see :mod:`pulse.nsm.propagator`), ``hook_read_weights`` ``[B, heads, T, S]``.
* ``HybridAttention``: ``hook_state_weights`` ``[B, heads, T, S]``, ``hook_gate`` ``[B, T]`` (weight of the
  self-attention path; ``1 - gate`` goes to the state path).
* ``SparseStateAttention``: ``hook_weights`` ``[B, T, S]`` (exactly ``k`` non-zeros per token).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from pulse.hooks import HookPoint
from pulse.nsm.cells import check_positive_int
from pulse.nsm.propagator import StatePropagator
from pulse.nsm.router import TokenToStateRouter, check_alive


def _check_tokens_states(tokens: torch.Tensor, states: torch.Tensor, token_dim: int, state_dim: int) -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3 or tokens.shape[-1] != token_dim:
        raise ValueError(f"tokens must be [B, T, {token_dim}], got {getattr(tokens, 'shape', tokens)}")
    if not isinstance(states, torch.Tensor) or states.dim() != 3 or states.shape[-1] != state_dim:
        raise ValueError(f"states must be [B, S, {state_dim}], got {getattr(states, 'shape', states)}")
    if states.shape[0] != tokens.shape[0]:
        raise ValueError("tokens and states must have the same batch size")


class TokenStateAttention(nn.Module):
    """Multi-head attention from tokens (queries) to state slots (keys/values).

    ``forward(tokens [B,T,Dt], states [B,S,Ds], alive [S] | None, weights_hook) ->
    (out [B,T,Dt], weights [B,heads,T,S])``; dead slots get exactly zero weight.
    """

    def __init__(self, token_dim: int, state_dim: int, num_heads: int = 4) -> None:
        super().__init__()
        check_positive_int("token_dim", token_dim)
        check_positive_int("state_dim", state_dim)
        check_positive_int("num_heads", num_heads)
        if state_dim % num_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must divide state_dim ({state_dim})")
        self.num_heads, self.head_dim = num_heads, state_dim // num_heads
        self.q_proj = nn.Linear(token_dim, state_dim, bias=False)
        self.k_proj = nn.Linear(state_dim, state_dim, bias=False)
        self.v_proj = nn.Linear(state_dim, state_dim)
        self.out_proj = nn.Linear(state_dim, token_dim)

    def forward(self, tokens, states, alive=None, weights_hook=None):
        b, t, _ = tokens.shape
        s = states.shape[1]
        nh, hd = self.num_heads, self.head_dim
        if alive is not None:
            states = torch.where(alive[None, :, None], states, torch.zeros((), dtype=states.dtype, device=states.device))
        q = self.q_proj(tokens).view(b, t, nh, hd).transpose(1, 2)  # [B, H, T, hd]
        k = self.k_proj(states).view(b, s, nh, hd).transpose(1, 2)  # [B, H, S, hd]
        v = self.v_proj(states).view(b, s, nh, hd).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # [B, H, T, S]
        if alive is not None:
            scores = scores.masked_fill(~alive[None, None, None, :], float("-inf"))
        w = torch.softmax(scores, dim=-1)
        if weights_hook is not None:
            w = weights_hook(w)
        out = (w @ v).transpose(1, 2).reshape(b, t, nh * hd)
        return self.out_proj(out), w


class NSMLayer(nn.Module):
    """Tokens write into state slots (router + propagator), then tokens read the new slots.

    Args:
        state_dim: slot width ``Ds``.
        token_dim: token width ``Dt``.
        num_heads: heads of slot communication and of the token read (must divide ``state_dim``).
        gate_type: ``'gru'`` or ``'lstm'`` (the LSTM cell starts at zero in every call).
        num_states: number of learned initial slots used when ``states`` is None.
        enable_communication: slot-to-slot attention in the propagator.
        dropout: propagator dropout.

    ``forward(tokens [B,T,Dt], states [B,S,Ds] | None, alive [S] | None, token_mask [B,T] | None)
    -> (new_tokens [B,T,Dt], new_states [B,S,Ds])``. Slot inputs are routing-weighted means of
    the (masked) tokens; ``new_tokens = LayerNorm(tokens + read(new_states))``. Not causal: every
    token sees the states updated with the whole sequence.
    """

    def __init__(
        self,
        state_dim: int,
        token_dim: int,
        num_heads: int = 4,
        gate_type: str = "gru",
        num_states: int = 16,
        enable_communication: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.state_dim = check_positive_int("state_dim", state_dim)
        self.token_dim = check_positive_int("token_dim", token_dim)
        self.num_states = check_positive_int("num_states", num_states)
        self.initial_states = nn.Parameter(torch.randn(num_states, state_dim) / math.sqrt(state_dim))
        self.router = TokenToStateRouter(token_dim, state_dim, num_heads=1, normalize=True)
        self.propagator = StatePropagator(state_dim, gate_type, num_heads, enable_communication, dropout)
        self.read = TokenStateAttention(token_dim, state_dim, num_heads)
        self.norm = nn.LayerNorm(token_dim)
        self.hook_read_weights = HookPoint(layout=("batch", "head", "pos", "slot"), kind="memory_read")

    def forward(
        self,
        tokens: torch.Tensor,
        states: Optional[torch.Tensor] = None,
        alive: Optional[torch.Tensor] = None,
        token_mask: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if states is None:
            states = self.initial_states.to(tokens.dtype)[None].expand(tokens.shape[0], -1, -1)
        _check_tokens_states(tokens, states, self.token_dim, self.state_dim)
        check_alive(alive, states.shape[1])
        routed, _ = self.router(tokens, states, alive, token_mask)  # [B, S, Ds]
        new_states = self.propagator(states, routed, alive=alive)
        read, _ = self.read(tokens, new_states, alive, self.hook_read_weights)
        new_tokens = self.norm(tokens + read)
        if token_mask is not None:
            new_tokens = torch.where(token_mask[..., None] > 0, new_tokens, tokens)
        return new_tokens, new_states


class HybridAttention(nn.Module):
    """Token self-attention mixed with token-to-state attention by a learned per-token gate.

    ``out_t = W_o( g_t * selfattn_t + (1 - g_t) * stateattn_t )`` with
    ``g_t = sigmoid(w_g . x_t + b_g)``. Self-attention is causal by default and ignores
    padded keys (``token_mask``).

    ``forward(tokens [B,T,Dt], states [B,S,Ds], alive [S] | None, token_mask [B,T] | None)
    -> out [B,T,Dt]``.
    """

    def __init__(self, token_dim: int, state_dim: int, num_heads: int = 4, causal: bool = True) -> None:
        super().__init__()
        self.token_dim = check_positive_int("token_dim", token_dim)
        self.state_dim = check_positive_int("state_dim", state_dim)
        self.num_heads = check_positive_int("num_heads", num_heads)
        if token_dim % num_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must divide token_dim ({token_dim})")
        self.causal = bool(causal)
        self.qkv = nn.Linear(token_dim, 3 * token_dim)
        self.state_attn = TokenStateAttention(token_dim, state_dim, num_heads if state_dim % num_heads == 0 else 1)
        self.gate = nn.Linear(token_dim, 1)
        self.out_proj = nn.Linear(token_dim, token_dim)
        self.hook_state_weights = HookPoint(layout=("batch", "head", "pos", "slot"), kind="memory_read")
        self.hook_gate = HookPoint(layout=("batch", "pos"), kind="gate")

    def self_attention(self, tokens: torch.Tensor, token_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The self-attention path alone: ``[B, T, Dt]`` (before the gate and ``W_o``)."""
        b, t, d = tokens.shape
        nh = self.num_heads
        q, k, v = self.qkv(tokens).view(b, t, 3, nh, d // nh).permute(2, 0, 3, 1, 4)  # [B, H, T, hd]
        allowed = torch.ones(t, t, dtype=torch.bool, device=tokens.device)
        if self.causal:
            allowed = torch.tril(allowed)
        allowed = allowed[None].expand(b, t, t)
        if token_mask is not None:
            allowed = allowed & (token_mask[:, None, :] > 0)
        allowed = allowed | torch.eye(t, dtype=torch.bool, device=tokens.device)[None]  # never an empty row
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
        return out.transpose(1, 2).reshape(b, t, d)

    def forward(
        self,
        tokens: torch.Tensor,
        states: torch.Tensor,
        alive: Optional[torch.Tensor] = None,
        token_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        _check_tokens_states(tokens, states, self.token_dim, self.state_dim)
        check_alive(alive, states.shape[1])
        self_out = self.self_attention(tokens, token_mask)
        state_out, _ = self.state_attn(tokens, states, alive, self.hook_state_weights)
        g = self.hook_gate(torch.sigmoid(self.gate(tokens))[..., 0])  # [B, T]
        return self.out_proj(g[..., None] * self_out + (1 - g[..., None]) * state_out)


class SparseStateAttention(nn.Module):
    """Each token attends to its ``top_k`` highest-scoring alive slots only.

    Scores ``q_t . k_s / sqrt(Ds)``; the softmax runs over the selected slots, every other slot
    gets exactly 0. ``k = min(top_k, number of alive slots)``.

    ``forward(tokens [B,T,Dt], states [B,S,Ds], alive [S] | None) -> (out [B,T,Dt], weights [B,T,S])``.
    """

    def __init__(self, token_dim: int, state_dim: int, top_k: int = 4) -> None:
        super().__init__()
        self.token_dim = check_positive_int("token_dim", token_dim)
        self.state_dim = check_positive_int("state_dim", state_dim)
        self.top_k = check_positive_int("top_k", top_k)
        self.q_proj = nn.Linear(token_dim, state_dim, bias=False)
        self.k_proj = nn.Linear(state_dim, state_dim, bias=False)
        self.v_proj = nn.Linear(state_dim, state_dim)
        self.out_proj = nn.Linear(state_dim, token_dim)
        self.hook_weights = HookPoint(layout=("batch", "pos", "slot"), kind="memory_read")

    def forward(
        self, tokens: torch.Tensor, states: torch.Tensor, alive: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_tokens_states(tokens, states, self.token_dim, self.state_dim)
        s = states.shape[1]
        check_alive(alive, s)
        if alive is not None:
            states = torch.where(alive[None, :, None], states, torch.zeros((), dtype=states.dtype, device=states.device))
        n_alive = s if alive is None else int(alive.sum().item())
        k = min(self.top_k, n_alive)
        scores = self.q_proj(tokens) @ self.k_proj(states).transpose(1, 2) / math.sqrt(self.state_dim)  # [B,T,S]
        if alive is not None:
            scores = scores.masked_fill(~alive[None, None, :], float("-inf"))
        top_val, top_idx = scores.topk(k, dim=-1)  # [B, T, k]
        weights = torch.zeros_like(scores).scatter(-1, top_idx, torch.softmax(top_val, dim=-1))
        weights = self.hook_weights(weights)
        return self.out_proj(weights @ self.v_proj(states)), weights
