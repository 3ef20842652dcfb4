"""TokenToStateRouter: learned scaled dot-product attention from tokens to state slots.

Hook points: ``hook_routing`` ``[B, T, S]`` (routing weights; rows sum to one over alive
slots, exactly 0 on dead slots and on masked tokens).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from pulse.hooks import HookPoint
from pulse.nsm.cells import check_positive_int


def check_alive(alive: Optional[torch.Tensor], num_slots: int, name: str = "alive") -> None:
    """Validate an alive mask ``[S]`` bool with at least one True."""
    if alive is None:
        return
    if not isinstance(alive, torch.Tensor) or alive.dtype != torch.bool or alive.shape != (num_slots,):
        raise ValueError(f"{name} must be a bool tensor of shape [{num_slots}]")
    if not bool(alive.any()):
        raise ValueError(f"{name} must mark at least one slot alive")


class TokenToStateRouter(nn.Module):
    """Route tokens to state slots.

    For token ``t`` and slot ``s``, with ``q_t = W_q x_t`` and ``k_s = W_k state_s`` split into
    ``num_heads`` heads of width ``d``, the head weights are ``softmax_s(q_t . k_s / sqrt(d))``
    over alive slots; ``weights`` is their mean over heads (so each real token's row still sums
    to one over alive slots). Each slot receives

        routed_s = sum_t weights[t, s] * W_v x_t              (normalize=False, default)
        routed_s = sum_t weights[t, s] * W_v x_t / (sum_t weights[t, s] + eps)   (normalize=True)

    Args:
        token_dim: token width ``Dt``.
        state_dim: slot width ``Ds``.
        num_heads: routing heads (must divide ``state_dim``).
        normalize: divide each slot's input by its total routing weight.

    ``forward(tokens [B,T,Dt], states [B,S,Ds], alive [S] bool | None, token_mask [B,T] | None)
    -> (routed [B,S,Ds], weights [B,T,S])``.
    """

    def __init__(
        self, token_dim: int, state_dim: int, num_heads: int = 1, normalize: bool = False, eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.token_dim = check_positive_int("token_dim", token_dim)
        self.state_dim = check_positive_int("state_dim", state_dim)
        self.num_heads = check_positive_int("num_heads", num_heads)
        if state_dim % num_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must divide state_dim ({state_dim})")
        self.normalize, self.eps = bool(normalize), float(eps)
        self.q_proj = nn.Linear(token_dim, state_dim, bias=False)
        self.k_proj = nn.Linear(state_dim, state_dim, bias=False)
        self.v_proj = nn.Linear(token_dim, state_dim)
        self.hook_routing = HookPoint(layout=("batch", "pos", "slot"), kind="routing")

    def forward(
        self,
        tokens: torch.Tensor,
        states: torch.Tensor,
        alive: Optional[torch.Tensor] = None,
        token_mask: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if tokens.dim() != 3 or tokens.shape[-1] != self.token_dim:
            raise ValueError(f"tokens must be [B, T, {self.token_dim}], got {tuple(tokens.shape)}")
        if states.dim() != 3 or states.shape[-1] != self.state_dim or states.shape[0] != tokens.shape[0]:
            raise ValueError(f"states must be [B, S, {self.state_dim}], got {tuple(states.shape)}")
        b, t, _ = tokens.shape
        s = states.shape[1]
        check_alive(alive, s)
        nh, hd = self.num_heads, self.state_dim // self.num_heads
        if alive is not None:  # dead slot values never enter the computation
            states = torch.where(alive[None, :, None], states, torch.zeros((), dtype=states.dtype, device=states.device))
        q = self.q_proj(tokens).view(b, t, nh, hd).transpose(1, 2)  # [B, H, T, hd]
        k = self.k_proj(states).view(b, s, nh, hd).transpose(1, 2)  # [B, H, S, hd]
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # [B, H, T, S]
        if alive is not None:
            scores = scores.masked_fill(~alive[None, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1).mean(dim=1)  # [B, T, S]
        if token_mask is not None:
            if token_mask.shape != (b, t):
                raise ValueError(f"token_mask must be [B, T] = {(b, t)}, got {tuple(token_mask.shape)}")
            weights = weights * token_mask.to(weights.dtype)[..., None]
        weights = self.hook_routing(weights)
        v = self.v_proj(tokens)  # [B, T, Ds]
        routed = weights.transpose(1, 2) @ v  # [B, S, Ds]
        if self.normalize:
            routed = routed / (weights.sum(dim=1)[..., None] + self.eps)
        return routed, weights
