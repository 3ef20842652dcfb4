"""HierarchicalStateManager: token-, chunk- and global-level states, each with its own propagator.

Levels (``C = chunk_size``; chunks are by position: tokens ``k*C .. k*C + C - 1``):

* **token** states ``[B, T, Ds]``: ``token_prop(h = W_in x_t, input = ctx_t)`` where ``ctx_t`` is
  the mean of the chunk states as they stood *before* the token's chunk (plus the mean of the
  incoming global states). Causal: a token never sees its own chunk or later ones.
* **chunk** states ``[B, Sc, Ds]``: updated once per chunk from the chunk's token states
  (routing-weighted means through ``chunk_router``, then ``chunk_prop``); a chunk with no real
  token leaves them unchanged.
* **global** states ``[B, Sg, Ds]``: updated once per sequence, at the end, from all chunk-state
  snapshots (``global_router`` + ``global_prop``). Pass them back in to carry across sequences.

Hook points: those of the submodules (``token_prop.*``, ``chunk_router.hook_routing``,
``chunk_prop.*``, ``global_router.hook_routing``, ``global_prop.*``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from pulse.nsm.cells import check_positive_int
from pulse.nsm.propagator import StatePropagator
from pulse.nsm.router import TokenToStateRouter


class HierarchicalStateManager(nn.Module):
    """Three-level state hierarchy (see module docstring).

    Args:
        token_dim: token width ``Dt``.
        state_dim: state width ``Ds`` at every level.
        chunk_size: tokens per chunk-level update.
        num_chunk_states: chunk-level slots ``Sc``.
        num_global_states: global slots ``Sg``.
        gate_type: ``'gru'`` or ``'lstm'`` for all three propagators.
        num_heads: communication heads of the chunk and global propagators.

    ``forward(tokens [B,T,Dt], token_mask [B,T] | None, global_states [B,Sg,Ds] | None) -> dict``
    with ``token_states`` ``[B,T,Ds]``, ``chunk_states`` ``[B,Nc,Sc,Ds]`` (after each of the
    ``Nc = ceil(T / C)`` chunks) and ``global_states`` ``[B,Sg,Ds]``.
    """

    def __init__(
        self,
        token_dim: int,
        state_dim: int,
        chunk_size: int = 16,
        num_chunk_states: int = 8,
        num_global_states: int = 4,
        gate_type: str = "gru",
        num_heads: int = 4,
    ) -> None:
        super().__init__()
        self.token_dim = check_positive_int("token_dim", token_dim)
        self.state_dim = check_positive_int("state_dim", state_dim)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        check_positive_int("num_chunk_states", num_chunk_states)
        check_positive_int("num_global_states", num_global_states)
        self.in_proj = nn.Linear(token_dim, state_dim)
        self.chunk_init = nn.Parameter(torch.randn(num_chunk_states, state_dim) / math.sqrt(state_dim))
        self.global_init = nn.Parameter(torch.randn(num_global_states, state_dim) / math.sqrt(state_dim))
        self.token_prop = StatePropagator(state_dim, gate_type, num_heads, enable_communication=False,
                                          hook_layout=("batch", "pos", "d_state"))
        self.chunk_router = TokenToStateRouter(state_dim, state_dim, normalize=True)
        self.chunk_prop = StatePropagator(state_dim, gate_type, num_heads)
        self.global_router = TokenToStateRouter(state_dim, state_dim, normalize=True)
        self.global_prop = StatePropagator(state_dim, gate_type, num_heads)

    def forward(
        self,
        tokens: torch.Tensor,
        token_mask: Optional[torch.Tensor] = None,
        global_states: Optional[torch.Tensor] = None,
    ) -> dict[str, torch.Tensor]:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3 or tokens.shape[-1] != self.token_dim:
            raise ValueError(f"tokens must be [B, T, {self.token_dim}], got {getattr(tokens, 'shape', tokens)}")
        b, t, _ = tokens.shape
        if t == 0:
            raise ValueError("tokens must contain at least one position")
        if token_mask is None:
            token_mask = torch.ones(b, t, dtype=tokens.dtype, device=tokens.device)
        if token_mask.shape != (b, t):
            raise ValueError(f"token_mask must be [B, T] = {(b, t)}, got {tuple(token_mask.shape)}")
        if global_states is None:
            global_states = self.global_init.to(tokens.dtype)[None].expand(b, -1, -1)
        elif global_states.shape != (b, self.global_init.shape[0], self.state_dim):
            raise ValueError(f"global_states must be [B, Sg, Ds], got {tuple(global_states.shape)}")
        g_mean = global_states.mean(dim=1, keepdim=True)  # [B, 1, Ds]
        h_tok = self.in_proj(tokens)  # [B, T, Ds]
        chunk = self.chunk_init.to(tokens.dtype)[None].expand(b, -1, -1)
        token_states, history = [], []
        for start in range(0, t, self.chunk_size):
            sl = slice(start, min(start + self.chunk_size, t))
            h = h_tok[:, sl]
            ctx = (chunk.mean(dim=1, keepdim=True) + g_mean).expand_as(h)
            ts = self.token_prop(h, ctx)  # [B, c, Ds]
            token_states.append(ts)
            m = token_mask[:, sl]
            routed, _ = self.chunk_router(ts, chunk, token_mask=m)
            updated = self.chunk_prop(chunk, routed)
            has_real = (m > 0).any(dim=1)[:, None, None]
            chunk = torch.where(has_real, updated, chunk)
            history.append(chunk)
        chunk_states = torch.stack(history, dim=1)  # [B, Nc, Sc, Ds]
        snapshots = chunk_states.flatten(1, 2)  # [B, Nc*Sc, Ds]
        routed, _ = self.global_router(snapshots, global_states)
        new_global = self.global_prop(global_states, routed)
        return {
            "token_states": torch.cat(token_states, dim=1),
            "chunk_states": chunk_states,
            "global_states": new_global,
        }
