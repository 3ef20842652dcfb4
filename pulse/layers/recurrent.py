"""RecurrentState: one gated state vector per block, carried across calls."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pulse.hooks import HookPoint

# Inside a sub-chunk the recurrence is a cumulative sum scaled by exp(-b_s) <= lambda_min^-L;
# with lambda >= 0.5 and L = 16 that is at most 2^16, far inside fp32's exact range.
_SUBCHUNK = 16
_LAMBDA_MIN = 0.5


class RecurrentState(nn.Module):
    """A gated linear recurrence over a single state vector r [B, D]:

        i_t = sigmoid(W_i h_t)   (input gate)       u_t = tanh(W_u h_t)
        r_t = lambda * r_{t-1} + (1 - lambda) * i_t * u_t,   lambda in (0.5, 1) learned per channel
        delta_t = W_o r_t

    Padding tokens leave r unchanged. forward(x [B, T, D], mask, state {"r": [B, D]})
    -> (delta [B, T, D], {"r": r_T}). Hooks: hook_input_gate [B, T, D], hook_decay [D],
    hook_state [B, T, D] (r_t).
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.input_gate = nn.Linear(hidden_size, hidden_size)
        self.candidate = nn.Linear(hidden_size, hidden_size, bias=False)
        self.out_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        # lambda = 0.5 + 0.5 * sigmoid(p); initial half-lives spread from 2 to 512 tokens
        half_lives = torch.logspace(math.log10(2.0), math.log10(512.0), hidden_size)
        lam = torch.exp(math.log(0.5) / half_lives).clamp(0.51, 0.9999)
        s = (lam - _LAMBDA_MIN) / (1 - _LAMBDA_MIN)
        self.decay_logit = nn.Parameter(torch.log(s) - torch.log1p(-s))
        self.hook_input_gate = HookPoint(layout=("batch", "pos", "d_model"), kind="gate")
        self.hook_decay = HookPoint(layout=("d_model",), kind="decay")
        self.hook_state = HookPoint(layout=("batch", "pos", "d_model"), kind="state")

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        D = self.out_proj.in_features
        return {"r": torch.zeros(batch_size, D, device=device, dtype=torch.float32)}

    def decay(self) -> torch.Tensor:
        return _LAMBDA_MIN + (1 - _LAMBDA_MIN) * torch.sigmoid(self.decay_logit)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, state: dict | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        B, T, D = x.shape
        r = state["r"] if state is not None else x.new_zeros(B, D, dtype=torch.float32)
        gate = self.hook_input_gate(torch.sigmoid(self.input_gate(x)))  # [B, T, D]
        lam = self.hook_decay(self.decay()).float()  # [D]
        a = ((1 - lam) * gate.float() * torch.tanh(self.candidate(x)).float())  # [B, T, D]
        log_lam = torch.log(lam).expand(B, T, D)
        if mask is not None:
            real = mask.float()[..., None]
            a = a * real
            log_lam = log_lam * real

        L = _SUBCHUNK
        N = -(-T // L)
        pad = N * L - T
        a = F.pad(a, (0, 0, 0, pad)).view(B, N, L, D)
        b = F.pad(log_lam, (0, 0, 0, pad)).view(B, N, L, D).cumsum(2)  # log decay from chunk start
        local = torch.exp(b) * torch.cumsum(torch.exp(-b) * a, dim=2)  # state from this chunk alone
        carry = torch.exp(b)  # how much of the chunk's incoming state survives to t
        states = []
        for n in range(N):
            states.append(local[:, n] + carry[:, n] * r[:, None])
            r = states[-1][:, -1]
        r_all = torch.cat(states, dim=1)[:, :T]  # [B, T, D]
        r_all = self.hook_state(r_all)
        delta = self.out_proj(r_all.to(x.dtype))
        return delta, {"r": r}
