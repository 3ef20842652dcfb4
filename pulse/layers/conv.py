"""Causal depthwise convolution with a streaming cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pulse.hooks import HookPoint


def compact_real_tokens(
    x: torch.Tensor, real: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move each row's real tokens to the front, in order.

    x [B, T, D], real [B, T] bool -> (compacted [B, T, D] (tail zeros), rank [B, T] (index of
    each real token in the compacted row; pad tokens point at the next free slot), counts [B]).
    """
    B, T, D = x.shape
    rank = real.long().cumsum(1) - real.long()  # real token -> its compacted index
    counts = real.long().sum(1)
    # pad tokens are scattered into an extra dump column that is dropped afterwards
    index = torch.where(real, rank, torch.full_like(rank, T))
    out = x.new_zeros(B, T + 1, D)
    out.scatter_(1, index[..., None].expand(B, T, D), x)
    return out[:, :T], rank, counts


class LocalConv(nn.Module):
    """Causal depthwise 1-D convolution over the sequence.

    forward(x [B, T, D], mask [B, T] | None, state {"conv": [B, K-1, D]} | None)
      -> (out [B, T, D], {"conv": last K-1 real inputs [B, K-1, D]})
    Padding tokens are skipped: each real token sees the K-1 real tokens before it, so
    left, right or inner padding gives the same outputs as the unpadded sequence.
    Hook ``hook_out`` [B, T, D].
    """

    def __init__(self, hidden_size: int, kernel_size: int = 4) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size: must be >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(hidden_size, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        nn.init.normal_(self.weight, std=kernel_size**-0.5)
        self.hook_out = HookPoint(layout=("batch", "pos", "d_model"), kind="output")

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        D, K = self.weight.shape[0], self.kernel_size
        return {"conv": torch.zeros(batch_size, K - 1, D, device=device, dtype=dtype)}

    # up to this many output positions (generation steps, short pieces) a windowed sum is used:
    # conv1d's per-call set-up costs ~200 us on a CPU, 5x the sum's cost for one token
    windowed_sum_max_positions = 32

    def _conv(self, padded: torch.Tensor) -> torch.Tensor:
        # padded [B, K-1+T, D] -> [B, T, D]
        K = self.kernel_size
        if padded.shape[1] - K + 1 <= self.windowed_sum_max_positions:
            windows = padded.unfold(1, K, 1)  # [B, T, D, K]: windows[b, t, :, j] = padded[b, t + j]
            return (windows * self.weight[:, 0].to(padded.dtype)).sum(-1) + self.bias.to(padded.dtype)
        y = F.conv1d(padded.transpose(1, 2), self.weight.to(padded.dtype), self.bias.to(padded.dtype),
                     groups=padded.shape[-1])
        return y.transpose(1, 2)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, state: dict | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        B, T, D = x.shape
        K = self.kernel_size
        cache = state["conv"] if state is not None else x.new_zeros(B, K - 1, D)
        if mask is None:
            padded = torch.cat([cache, x], dim=1)  # [B, K-1+T, D]
            out = self._conv(padded)
            new_cache = padded[:, padded.shape[1] - (K - 1):]
        else:
            real = mask.bool()
            compact, rank, counts = compact_real_tokens(x, real)
            padded = torch.cat([cache, compact], dim=1)
            out_compact = self._conv(padded)  # [B, T, D], position i = i-th real token
            out = out_compact.gather(1, rank.clamp(max=T - 1)[..., None].expand(B, T, D))
            out = out * real[..., None].to(out.dtype)
            # the last K-1 real inputs of each row sit just before index K-1+count
            idx = counts[:, None] + torch.arange(K - 1, device=x.device)[None, :]  # [B, K-1]
            new_cache = padded.gather(1, idx[..., None].expand(B, K - 1, D))
        return self.hook_out(out), {"conv": new_cache}
