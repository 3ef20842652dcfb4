"""AdaptiveStateAllocator: decide from a complexity score how many slots a StateManager keeps.

Hook points: ``hook_complexity`` ``[B]`` (the complexity score in (0, 1)).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from pulse.hooks import HookPoint
from pulse.nsm.cells import check_positive_int
from pulse.nsm.manager import SlotBookkeeping


class AdaptiveStateAllocator(nn.Module):
    """Score input complexity and grow or shrink a slot bank to match.

    ``complexity = sigmoid(MLP(masked mean of tokens))`` in (0, 1) per sequence. The target
    number of alive slots is ``round(min_states + mean(complexity) * (max - min_states))``
    where ``max`` is the manager's capacity. :meth:`adjust` allocates dead slots
    (``allocate_states``) or prunes the least important alive ones (``prune_lowest``) until
    the manager has that many; both are recorded in the manager's ``events``.

    Args:
        token_dim: token width ``Dt``.
        min_states: never shrink below this.
        hidden_dim: width of the scoring MLP.

    ``forward(tokens [B,T,Dt], token_mask [B,T] | None) -> complexity [B]``.
    """

    def __init__(self, token_dim: int, min_states: int = 1, hidden_dim: int = 32) -> None:
        super().__init__()
        self.token_dim = check_positive_int("token_dim", token_dim)
        self.min_states = check_positive_int("min_states", min_states)
        check_positive_int("hidden_dim", hidden_dim)
        self.scorer = nn.Sequential(nn.Linear(token_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 1))
        self.hook_complexity = HookPoint(layout=("batch",), kind="score")

    def forward(self, tokens: torch.Tensor, token_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3 or tokens.shape[-1] != self.token_dim:
            raise ValueError(f"tokens must be [B, T, {self.token_dim}], got {getattr(tokens, 'shape', tokens)}")
        if token_mask is None:
            pooled = tokens.mean(dim=1)
        else:
            w = token_mask.to(tokens.dtype)[..., None]
            pooled = (tokens * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
        return self.hook_complexity(torch.sigmoid(self.scorer(pooled))[..., 0])  # [B]

    def target_count(self, manager: SlotBookkeeping, complexity: torch.Tensor | float) -> int:
        """Number of alive slots wanted for this complexity (scalar or ``[B]``, averaged)."""
        c = float(torch.as_tensor(complexity, dtype=torch.float32).mean().clamp(0.0, 1.0))
        cap = int(manager.alive.numel())
        lo = min(self.min_states, cap)
        return int(round(lo + c * (cap - lo)))

    def adjust(self, manager: SlotBookkeeping, complexity: torch.Tensor | float, step: Optional[int] = None) -> dict:
        """Allocate or prune so ``manager`` has :meth:`target_count` alive slots.

        Returns ``{"target", "allocated", "pruned", "active"}``."""
        target = self.target_count(manager, complexity)
        active = manager.get_active_count()
        allocated = pruned = 0
        if target > active:
            allocated = manager.allocate_states(target - active, step=step)
        elif target < active:
            pruned = manager.prune_lowest(active - target, step=step)
        return {"target": target, "allocated": allocated, "pruned": pruned, "active": manager.get_active_count()}
