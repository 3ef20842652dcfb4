"""Fixed-capacity key-value memory with top-k reads.

``KeyValueMemory`` is the standalone store of the original API (one shared store,
``write`` then ``read``). ``MemoryAugmentedLayer`` gives every sequence in a batch its own
circular store inside the language model and keeps it causal: each token first reads the
entries written before it, then writes its own key and value.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pulse.hooks import HookPoint


def top_k_candidates(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Select the ``top_k`` best-matching valid entries.

    query [..., Q, d], keys/values [..., E, d], valid [..., Q, E] bool.
    Returns (scores [..., Q, k] (scaled dot products, -inf where fewer than k entries were
    valid), values [..., Q, k, d] of the selected entries, index [..., Q, k] (-1: nothing)).
    """
    k = min(top_k, keys.shape[-2])
    scores = (query @ keys.transpose(-1, -2)) / math.sqrt(query.shape[-1])  # [..., Q, E]
    scores = scores.masked_fill(~valid, float("-inf"))
    top_scores, index = scores.topk(k, dim=-1)  # [..., Q, k]
    picked = values.unsqueeze(-3).expand(*index.shape[:-1], values.shape[-2], values.shape[-1])
    gathered = picked.gather(-2, index[..., None].expand(*index.shape, values.shape[-1]))
    hit = torch.isfinite(top_scores)
    return top_scores, gathered, torch.where(hit, index, torch.full_like(index, -1))


def read_weights(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the selected entries' scores [..., k]; entries scored -inf (none) get 0."""
    hit = torch.isfinite(scores)
    weights = torch.softmax(scores.masked_fill(~hit, -1e30), dim=-1) * hit
    return weights / weights.sum(-1, keepdim=True).clamp_min(1e-30)  # an empty read stays 0


class KeyValueMemory(nn.Module):
    """A circular store of ``capacity`` (key, value) rows of width ``hidden_size``.

    write(key [D] or [N, D], value=None): value defaults to the key; the oldest rows are
    overwritten once full. read(query [D] or [B, D], top_k) -> (values [B, k, D],
    scores [B, k], indices [B, k]) with k = min(top_k, len(memory)); reading an empty
    memory returns tensors with k = 0. Hook ``hook_read_scores`` [B, k].
    """

    def __init__(self, hidden_size: int, capacity: int) -> None:
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size: must be >= 1, got {hidden_size}")
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {capacity}")
        self.hidden_size, self.capacity = hidden_size, capacity
        self.register_buffer("keys", torch.zeros(capacity, hidden_size), persistent=False)
        self.register_buffer("values", torch.zeros(capacity, hidden_size), persistent=False)
        self.register_buffer("written", torch.zeros((), dtype=torch.long), persistent=False)
        self.hook_read_scores = HookPoint(layout=("batch", "rank"), kind="memory_read")

    def __len__(self) -> int:
        return int(min(self.written.item(), self.capacity))

    def clear(self) -> None:
        self.keys.zero_()
        self.values.zero_()
        self.written.zero_()

    def _rows(self, t: torch.Tensor, name: str) -> torch.Tensor:
        if t.dim() == 1:
            t = t[None]
        if t.dim() != 2 or t.shape[-1] != self.hidden_size:
            raise ValueError(f"{name}: expected shape [{self.hidden_size}] or [N, {self.hidden_size}], "
                             f"got {tuple(t.shape)}")
        return t

    @torch.no_grad()
    def write(self, key: torch.Tensor, value: torch.Tensor | None = None) -> None:
        key = self._rows(key, "key")
        value = key if value is None else self._rows(value, "value")
        if value.shape[0] != key.shape[0]:
            raise ValueError(f"value: {value.shape[0]} rows for {key.shape[0]} keys")
        n = key.shape[0]
        start = int(self.written.item())
        # only the last `capacity` rows can survive a large write
        keep = max(0, n - self.capacity)
        slots = (torch.arange(start + keep, start + n) % self.capacity).to(self.keys.device)
        self.keys[slots] = key[keep:].to(self.keys)
        self.values[slots] = value[keep:].to(self.values)
        self.written += n

    def read(self, query: torch.Tensor, top_k: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if top_k < 1:
            raise ValueError(f"top_k: must be >= 1, got {top_k}")
        query = self._rows(query, "query").to(self.keys)
        n = len(self)
        B, D = query.shape
        if n == 0:
            empty = query.new_zeros(B, 0)
            return query.new_zeros(B, 0, D), self.hook_read_scores(empty), empty.long()
        keys, values = self.keys[:n], self.values[:n]
        scores = (query @ keys.T) / math.sqrt(D)  # [B, n]
        top_scores, index = scores.topk(min(top_k, n), dim=-1)
        top_scores = self.hook_read_scores(top_scores)
        return values[index], top_scores, index


class MemoryAugmentedLayer(nn.Module):
    """Causal per-sequence key-value memory inside the language model.

    Token t reads the top-k of the last ``capacity`` entries written before it, then writes
    (W_k h_t, W_v h_t). Computed chunk by chunk, so the cost is O(T * (capacity + chunk)).
    forward(x [B, T, D], mask, state) -> (delta [B, T, D], state) with state
    {"keys", "values": [B, C, D], "widx": [B, C] (write index of each slot, -1 empty),
    "count": [B]}. Hooks: hook_read_scores [B, T, k], hook_read_weights [B, T, k],
    hook_read_slots [B, T, k] (slot index, -1 = nothing read), hook_read [B, T, D],
    hook_write_keys [B, T, D].
    """

    def __init__(self, hidden_size: int, capacity: int = 64, top_k: int = 4, chunk_size: int = 64) -> None:
        super().__init__()
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {capacity}")
        if top_k < 1:
            raise ValueError(f"top_k: must be >= 1, got {top_k}")
        self.capacity, self.top_k, self.chunk_size = capacity, top_k, chunk_size
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.out_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.hook_read_scores = HookPoint(layout=("batch", "pos", "rank"), kind="memory_read")
        self.hook_read_weights = HookPoint(layout=("batch", "pos", "rank"), kind="memory_read")
        self.hook_read_slots = HookPoint(layout=("batch", "pos", "rank"), kind="memory_read")
        self.hook_read = HookPoint(layout=("batch", "pos", "d_model"), kind="memory_read")
        self.hook_write_keys = HookPoint(layout=("batch", "pos", "d_model"), kind="memory_write")

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        D, C = self.q_proj.in_features, self.capacity
        return {
            "keys": torch.zeros(batch_size, C, D, device=device, dtype=torch.float32),
            "values": torch.zeros(batch_size, C, D, device=device, dtype=torch.float32),
            "widx": torch.full((batch_size, C), -1, dtype=torch.long, device=device),
            "count": torch.zeros(batch_size, dtype=torch.long, device=device),
        }

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, state: dict | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        B, T, D = x.shape
        C = self.capacity
        if state is None:
            state = self.init_state(B, x.device)
        real = torch.ones(B, T, dtype=torch.bool, device=x.device) if mask is None else mask.bool()
        q = self.q_proj(x).float()
        k = self.hook_write_keys(self.k_proj(x)).float()
        v = self.v_proj(x).float()
        # write index of every token (number of real tokens before it in the whole stream)
        widx_tok = state["count"][:, None] + real.long().cumsum(1) - real.long()  # [B, T]
        keys, values, widx, count = state["keys"], state["values"], state["widx"], state["count"]

        scores_all, picked_all, slots_all = [], [], []
        for start in range(0, T, self.chunk_size):
            sl = slice(start, min(T, start + self.chunk_size))
            tok_w = torch.where(real[:, sl], widx_tok[:, sl], torch.full_like(widx_tok[:, sl], -1))
            cand_keys = torch.cat([keys, k[:, sl]], dim=1)  # [B, C+Lc, D]
            cand_values = torch.cat([values, v[:, sl]], dim=1)
            cand_w = torch.cat([widx, tok_w], dim=1)  # [B, C+Lc], -1 = nothing there
            cand_slot = torch.cat([torch.arange(C, device=x.device).expand(B, C), tok_w % C], dim=1)
            n_t = widx_tok[:, sl, None]  # entries with write index in [n_t - C, n_t) are visible
            valid = (cand_w[:, None, :] >= 0) & (cand_w[:, None, :] < n_t) & (cand_w[:, None, :] >= n_t - C)
            sc, picked, idx = top_k_candidates(q[:, sl], cand_keys, cand_values, valid, min(self.top_k, C))
            slot = torch.where(idx >= 0, cand_slot.gather(1, idx.clamp(min=0).view(B, -1)).view_as(idx), idx)
            scores_all.append(sc)
            picked_all.append(picked)
            slots_all.append(slot)
            # write this chunk's real tokens; only the newest C writes can survive
            new_count = count + real[:, sl].long().sum(1)
            keep = real[:, sl] & (tok_w >= new_count[:, None] - C)
            target = torch.where(keep, tok_w % C, torch.full_like(tok_w, C))  # C = dump column
            keys = _scatter_rows(keys, target, k[:, sl])
            values = _scatter_rows(values, target, v[:, sl])
            widx = torch.cat([widx, torch.zeros_like(widx[:, :1])], 1).scatter(1, target, tok_w)[:, :C]
            count = new_count

        # scores -> weights -> read: each hook's returned value is what the next step uses
        scores = self.hook_read_scores(torch.cat(scores_all, dim=1))  # [B, T, k]
        weights = self.hook_read_weights(read_weights(scores))  # [B, T, k]
        self.hook_read_slots(torch.cat(slots_all, dim=1))  # observed only: which slot was read
        picked = torch.cat(picked_all, dim=1)  # [B, T, k, D]
        read = (weights[..., None] * picked).sum(-2)
        read = self.hook_read(read * real[..., None])
        delta = self.out_proj(read.to(x.dtype))
        return delta, {"keys": keys, "values": values, "widx": widx, "count": count}


def _scatter_rows(buffer: torch.Tensor, target: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """buffer [B, C, D]; rows [B, L, D] go to slots target [B, L] (C = discard)."""
    B, C, D = buffer.shape
    extended = torch.cat([buffer, buffer.new_zeros(B, 1, D)], dim=1)
    extended = extended.scatter(1, target[..., None].expand(-1, -1, D), rows.to(buffer.dtype))
    return extended[:, :C]
