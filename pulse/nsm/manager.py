"""StateManager: a bank of state slots with learnable importance, pruning and allocation.

A slot is *alive* or *dead* (persistent bool buffer ``alive`` ``[max_states]``, saved in the
``state_dict``). Consumers mask dead slots out (they are never attended to, never updated
and never read), so pruning is a mask, not a zeroing. Importance is
``sigmoid(importance_logits)`` in (0, 1), one value per slot.

``StateManager()`` returns the alive slots' values ``[n_alive, D]`` (as the NSM README's
``states = state_manager()``); :meth:`StateManager.importance_and_alive` returns the
importance ``[S]`` and alive mask ``[S]`` with hooks applied (what consumers mask with).

Hook points (emitted by :meth:`StateManager.importance_and_alive`, so also by ``forward``):

================  ===========  ======================================================
hook_importance   [S]          sigmoid(importance_logits), S = max_states
hook_alive        [S]          alive mask as float (1.0 alive); a hook returning 0.0
                               for a slot kills it for that forward (value > 0.5 = alive)
================  ===========  ======================================================

Every prune/allocate is appended to ``events`` as
``{"step": int | None, "kind": "prune" | "allocate", "slots": [int], "importance": [float]}``
(importance of those slots just before a prune, just after an allocation).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn

from pulse.hooks import HookPoint
from pulse.nsm.cells import check_positive_int


def _check_threshold(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
    return float(value)


class SlotBookkeeping:
    """Mixin with the prune/allocate/importance logic shared by StateManager and StateBank.

    The host module must define ``importance_logits`` (Parameter ``[S]``), ``alive``
    (bool buffer ``[S]``), ``slot_values`` (Parameter ``[S, D]``: the slot initial values),
    ``prune_threshold`` (float), ``importance_init`` (float) and ``events`` (list).
    """

    importance_logits: nn.Parameter
    alive: torch.Tensor
    slot_values: nn.Parameter
    prune_threshold: float
    importance_init: float
    events: list

    # -- queries -----------------------------------------------------------------
    def get_importance_scores(self, alive_only: bool = False) -> torch.Tensor:
        """Importance ``sigmoid(logits)``, detached: ``[max_states]`` (dead slots included, so
        index = slot id), or ``[n_alive]`` in slot order with ``alive_only=True``."""
        imp = torch.sigmoid(self.importance_logits.detach())
        return imp[self.alive] if alive_only else imp

    def get_active_count(self) -> int:
        """Number of alive slots."""
        return int(self.alive.sum().item())

    def importance_loss(self) -> torch.Tensor:
        """Mean importance over alive slots (a scalar with gradient; add ``reg * this`` to a loss)."""
        imp = torch.sigmoid(self.importance_logits)
        a = self.alive.to(imp.dtype)
        return (imp * a).sum() / a.sum().clamp_min(1.0)

    def get_state_info(self) -> dict[str, Any]:
        """Summary: active count, maximum, threshold, importance and alive lists, events."""
        return {
            "active_count": self.get_active_count(),
            "max_states": int(self.alive.numel()),
            "prune_threshold": self.prune_threshold,
            "importance": [float(v) for v in self.get_importance_scores().tolist()],
            "alive": [bool(v) for v in self.alive.tolist()],
            "events": [dict(e) for e in self.events],
        }

    # -- mutations ---------------------------------------------------------------
    def prune_states(self, slots: list[int], step: Optional[int] = None) -> int:
        """Mark the given alive slots dead (keeping at least one alive); returns how many."""
        imp = self.get_importance_scores()
        alive_now = [i for i in range(self.alive.numel()) if bool(self.alive[i])]
        chosen = sorted({int(i) for i in slots if 0 <= int(i) < self.alive.numel() and bool(self.alive[int(i)])})
        if len(chosen) >= len(alive_now):  # never prune the last alive slot: keep the most important
            keep = max(alive_now, key=lambda i: (float(imp[i]), -i))
            chosen = [i for i in chosen if i != keep]
        if not chosen:
            return 0
        with torch.no_grad():
            self.alive[chosen] = False
        self.events.append(
            {"step": step, "kind": "prune", "slots": chosen, "importance": [float(imp[i]) for i in chosen]}
        )
        return len(chosen)

    def prune_low_importance_states(self, threshold: Optional[float] = None, step: Optional[int] = None) -> int:
        """Kill alive slots whose importance is below ``threshold`` (default
        ``prune_threshold``), never the last alive one. Returns the number pruned."""
        thr = self.prune_threshold if threshold is None else _check_threshold("threshold", threshold)
        imp = self.get_importance_scores()
        low = [i for i in range(imp.numel()) if bool(self.alive[i]) and float(imp[i]) < thr]
        return self.prune_states(low, step=step)

    def prune_lowest(self, n: int, step: Optional[int] = None) -> int:
        """Kill the ``n`` least important alive slots (never the last one). Returns how many."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        imp = self.get_importance_scores()
        alive_ids = [i for i in range(imp.numel()) if bool(self.alive[i])]
        order = sorted(alive_ids, key=lambda i: (float(imp[i]), i))
        return self.prune_states(order[:n], step=step)

    def allocate_states(self, n: int, step: Optional[int] = None) -> int:
        """Revive up to ``n`` dead slots (lowest ids first, never beyond ``max_states``): their
        importance logit is reset to ``logit(importance_init)`` and their initial values are
        re-drawn (deterministically, from a generator seeded by the event index and slot id).
        Returns how many were allocated."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        dead = [i for i in range(self.alive.numel()) if not bool(self.alive[i])][:n]
        if not dead:
            return 0
        init_logit = math.log(self.importance_init / (1.0 - self.importance_init))
        d = self.slot_values.shape[1]
        with torch.no_grad():
            for i in dead:
                gen = torch.Generator().manual_seed(7919 * (len(self.events) + 1) + i)
                fresh = torch.randn(d, generator=gen) * self._value_init_std()
                self.slot_values[i] = fresh.to(self.slot_values.dtype)
                self.importance_logits[i] = init_logit
            self.alive[dead] = True
        imp = self.get_importance_scores()
        self.events.append(
            {"step": step, "kind": "allocate", "slots": dead, "importance": [float(imp[i]) for i in dead]}
        )
        return len(dead)

    def _value_init_std(self) -> float:
        return 1.0 / math.sqrt(self.slot_values.shape[1])

    def _init_bookkeeping(self, num_slots: int, state_dim: int, initial_alive: int) -> None:
        init_logit = math.log(self.importance_init / (1.0 - self.importance_init))
        self.slot_values = nn.Parameter(torch.randn(num_slots, state_dim) / math.sqrt(state_dim))
        self.importance_logits = nn.Parameter(torch.full((num_slots,), init_logit))
        alive = torch.zeros(num_slots, dtype=torch.bool)
        alive[:initial_alive] = True
        self.register_buffer("alive", alive, persistent=True)  # type: ignore[attr-defined]
        self.events = []


class StateManager(SlotBookkeeping, nn.Module):
    """Holds ``max_states`` slots, their learnable importance and the alive mask.

    Args:
        state_dim: slot width ``D``.
        max_states: capacity ``S`` (parameters are ``[S, D]`` and ``[S]``).
        initial_states: slots alive at construction (the first ones).
        prune_threshold: default threshold of :meth:`prune_low_importance_states`.
        importance_init: importance of fresh slots (initial and allocated), in (0, 1).

    ``forward() -> states [n_alive, D]``: the alive slots' values in slot order (the alive mask
    after ``hook_alive``), differentiable w.r.t. ``slot_values``;
    ``importance_and_alive() -> (importance [S], alive [S] bool)`` with hooks applied;
    ``initial_states(batch_size) -> [B, S, D]`` (differentiable w.r.t. ``slot_values``).
    """

    def __init__(
        self,
        state_dim: int,
        max_states: int = 64,
        initial_states: int = 16,
        prune_threshold: float = 0.3,
        importance_init: float = 0.9,
    ) -> None:
        super().__init__()
        self.state_dim = check_positive_int("state_dim", state_dim)
        self.max_states = check_positive_int("max_states", max_states)
        check_positive_int("initial_states", initial_states)
        if initial_states > max_states:
            raise ValueError(f"initial_states ({initial_states}) must be <= max_states ({max_states})")
        self.prune_threshold = _check_threshold("prune_threshold", prune_threshold)
        if not 0.0 < float(importance_init) < 1.0:
            raise ValueError(f"importance_init must be in (0, 1), got {importance_init!r}")
        self.importance_init = float(importance_init)
        self._init_bookkeeping(max_states, state_dim, initial_states)
        self.hook_importance = HookPoint(layout=("slot",), kind="importance")
        self.hook_alive = HookPoint(layout=("slot",), kind="alive")

    def forward(self) -> torch.Tensor:
        """The alive slots' values ``[n_alive, D]`` (slot order)."""
        _, alive = self.importance_and_alive()
        return self.slot_values[alive]

    def importance_and_alive(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(importance [S] in (0, 1), alive [S] bool)``, both through their hooks."""
        imp = self.hook_importance(torch.sigmoid(self.importance_logits))  # [S]
        alive_f = self.hook_alive(self.alive.to(imp.dtype))  # [S]
        return imp, alive_f > 0.5

    def initial_states(self, batch_size: int, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Slot initial values expanded over the batch: ``[B, S, D]``."""
        check_positive_int("batch_size", batch_size)
        v = self.slot_values if dtype is None else self.slot_values.to(dtype)
        return v[None].expand(batch_size, -1, -1)
