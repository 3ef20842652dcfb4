"""Decay-weighted causal linear attention: one recurrence, two code paths.

Per head h with decay gamma_h in (0, 1) and feature map phi(x) = elu(x) + 1:

    S_t = gamma_h * S_{t-1} + phi(k_t) v_t^T          S: [d_k, d_v]
    z_t = gamma_h * z_{t-1} + phi(k_t)                z: [d_k]
    o_t = phi(q_t) S_t / (phi(q_t) . z_t + eps)

Unrolled, o_t = sum_{s<=t} A[t, s] v_s with A[t, s] = gamma^{t-s} phi(q_t).phi(k_s) / n_t,
n_t = phi(q_t).z_t + eps: the "decay-weighted attention" that ``probes`` materialises.

A padding token gets decay 1 and phi(k) = 0, so it never touches S or z.

``chunked_linear_attention`` (training, prompts) splits the sequence into chunks of L:
inside a chunk a masked L x L product with decay gamma^{t-s} (from cumulative log decays,
so no power ever underflows or overflows), across chunks the carried state (S, z).
``recurrent_linear_attention_step`` (generation) is the one-token recurrence above.
Both are computed in fp32 and must agree to fp32 rounding.

On CUDA (eager) the chunked form runs through the fused Triton kernel of
:mod:`pulse.kernels.linear_attention_triton` (forward and backward), checked against this
PyTorch path on an H200; elsewhere, and under ``torch.compile``, through the PyTorch path
below. ``PULSE_LA_BACKEND`` overrides the choice (see :mod:`pulse.kernels`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pulse.hooks import HookPoint
from pulse.kernels import fused_linear_attention, linear_attention_backend

LinearAttentionState = dict[str, torch.Tensor]  # {"S": [B,H,dk,dv], "z": [B,H,dk]}


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1 > 0."""
    return F.elu(x) + 1.0


def decayed_state_scan(
    dS: torch.Tensor, log_decay: torch.Tensor, S0: torch.Tensor, group: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every chunk's starting state of the recurrence S_n = exp(a_n) S_{n-1} + dS_n, at once.

    dS: [B, H, N, F] (each chunk's contribution, already decayed to the chunk's end),
    log_decay: [B, H, N] (a_n <= 0, the log decay across chunk n), S0: [B, H, F].
    Returns (starts [B, H, N, F] with starts[n] = S_{n-1} (starts[0] = S0), S_N [B, H, F]).

    No Python loop over chunks: within a group of at most ``group`` chunks the scan is a
    lower-triangular matrix W[n, m] = exp(C_n - C_m) (C the cumulative log decay; every
    exponent <= 0, so nothing overflows) times dS; the groups' totals are scanned the same
    way, recursively, so a sequence of N chunks needs log_group(N) levels.
    """
    B, H, N, F_ = dS.shape
    if N <= group:
        C = log_decay.cumsum(-1)  # [B,H,N]
        causal = torch.ones(N, N, dtype=torch.bool, device=dS.device).tril()
        W = torch.exp((C[..., :, None] - C[..., None, :]).masked_fill(~causal, float("-inf")))
        ends = W @ dS + torch.exp(C)[..., None] * S0[:, :, None, :]  # [B,H,N,F]
        starts = torch.cat([S0[:, :, None, :], ends[:, :, :-1]], dim=2)
        return starts, ends[:, :, -1]
    M = -(-N // group)
    pad = M * group - N
    if pad:  # padded chunks: no contribution, no decay
        dS = F.pad(dS, (0, 0, 0, pad))
        log_decay = F.pad(log_decay, (0, pad))
    dS_g = dS.view(B, H * M, group, F_)
    a_g = log_decay.view(B, H * M, group)
    zeros = dS.new_zeros(B, H * M, F_)
    local_starts, local_ends = decayed_state_scan(dS_g, a_g, zeros, group)  # from zero state
    C_local = a_g.cumsum(-1)  # [B, H*M, group] decay from the group start to each chunk's end
    group_starts, final = decayed_state_scan(
        local_ends.view(B, H, M, F_), C_local[..., -1].view(B, H, M), S0, group
    )  # [B,H,M,F]
    # a chunk's start = local start + the group's start decayed to it (exclusive decay)
    C_excl = (C_local - a_g).view(B, H, M, group)
    starts = local_starts.view(B, H, M, group, F_) + torch.exp(C_excl)[..., None] * group_starts[:, :, :, None, :]
    return starts.reshape(B, H, M * group, F_)[:, :, :N], final


def sequential_state_scan(
    dS: torch.Tensor, log_decay: torch.Tensor, S0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same scan as :func:`decayed_state_scan`, as a loop over chunks.

    On a CPU this is the faster form: each step is one fused multiply-add over [B, H, F],
    while the matrix form does N (or ``group``) times the arithmetic. On a GPU the loop's
    per-chunk launches cost more than the extra arithmetic, so there the matrix form runs.
    """
    g = torch.exp(log_decay)  # [B,H,N]
    S, starts = S0, []
    for n in range(dS.shape[2]):
        starts.append(S)
        S = torch.addcmul(dS[:, :, n], g[:, :, n, None], S)
    return torch.stack(starts, dim=2), S


_LOG2E = 1.0 / math.log(2.0)


def chunked_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    S0: torch.Tensor,
    z0: torch.Tensor,
    chunk_size: int,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel decayed linear attention (pure PyTorch, any device, autograd).

    q, k: [B, H, T, dk] feature-mapped (k already zero at padding), v: [B, H, T, dv],
    log_decay: [B, H, T] (<= 0; 0 at padding), S0: [B, H, dk, dv], z0: [B, H, dk].
    Returns (out [B, H, T, dv], normalizer [B, H, T] = phi(q_t).z_t, S_T, z_T).

    Per chunk of L tokens (all chunks of all heads batched as one [B*H*N] batch of small
    matrix products): the masked L x L decayed scores give the within-chunk part of the
    numerator and, by their row sums, of the normaliser; each chunk's contribution to the
    state (S, z) is scanned across chunks (:func:`sequential_state_scan` on a CPU without
    autograd, :func:`decayed_state_scan` otherwise) and read by the chunk's decayed queries.
    Decays are exponentiated in base 2 from cumulative log2 decays (every exponent <= 0).
    Without autograd the large intermediates are updated in place.
    """
    B, H, T, dk = q.shape
    dv = v.shape[-1]
    L = chunk_size
    N = -(-T // L)
    pad = N * L - T
    if pad:
        # padded positions: zero keys and zero log decay, so they change nothing
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        log_decay = F.pad(log_decay, (0, pad))
    inplace = not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, log_decay, S0, z0)))
    BN = B * H * N
    q = q.reshape(BN, L, dk)
    k = k.reshape(BN, L, dk)
    v = v.reshape(BN, L, dv)
    b = (log_decay * _LOG2E).reshape(BN, L).cumsum(-1)  # log2 of the decay from chunk start to t

    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    # decay[t, s] = 2^(b_t - b_s) for s <= t, else 0 (the exponent is -inf there)
    decay = (b[:, :, None] - b[:, None, :]).masked_fill_(~causal, float("-inf")).exp2_()  # [BN,L,L]
    scores = torch.bmm(q, k.transpose(1, 2))
    scores = scores.mul_(decay) if inplace else scores * decay
    den = scores.sum(-1)  # [BN, L] within-chunk part of the normaliser

    # what each chunk adds to S and z, decayed to the chunk's end
    k_end = k * torch.exp2(b[:, -1:] - b)[..., None]  # [BN,L,dk]
    dS = torch.bmm(k_end.transpose(1, 2), v)  # [BN,dk,dv]
    dz = k_end.sum(1)  # [BN,dk]
    chunk_log_decay = (b[:, -1] * math.log(2.0)).view(B, H, N)
    # a loop is cheapest on a CPU without autograd; its backward (N tiny steps) is not
    scan = sequential_state_scan if inplace and q.device.type == "cpu" else decayed_state_scan
    S_starts, S_T = scan(dS.view(B, H, N, dk * dv), chunk_log_decay, S0.reshape(B, H, dk * dv).to(dS.dtype))
    z_starts, z_T = scan(dz.view(B, H, N, dk), chunk_log_decay, z0.to(dz.dtype))

    q_dec = q * torch.exp2(b)[..., None]  # phi(q_t) decayed back to the chunk start
    num = torch.baddbmm(torch.bmm(scores, v), q_dec, S_starts.reshape(BN, dk, dv))  # [BN,L,dv]
    den = den + torch.bmm(q_dec, z_starts.reshape(BN, dk, 1)).squeeze(-1)
    out = num.div_(den[..., None] + eps) if inplace else num / (den[..., None] + eps)
    out = out.view(B, H, N * L, dv)[:, :, :T]
    den = den.view(B, H, N * L)[:, :, :T]
    return out, den, S_T.view(B, H, dk, dv), z_T


def recurrent_linear_attention_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    S: torch.Tensor,
    z: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token of the recurrence.

    q, k: [B, H, dk] feature-mapped, v: [B, H, dv], log_decay: [B, H], S: [B, H, dk, dv],
    z: [B, H, dk]. Returns (out [B, H, dv], normalizer [B, H], S_new, z_new).
    """
    g = torch.exp(log_decay)
    S = g[..., None, None] * S + k[..., :, None] * v[..., None, :]
    z = g[..., None] * z + k
    den = (q * z).sum(-1)
    out = (q[..., None, :] @ S).squeeze(-2) / (den[..., None] + eps)
    return out, den, S, z


def _decay_logits(num_heads: int, half_life_min: float, half_life_max: float) -> torch.Tensor:
    """Logits whose sigmoid gives decays with half-lives spread geometrically."""
    if num_heads == 1:
        half_lives = torch.tensor([math.sqrt(half_life_min * half_life_max)])
    else:
        half_lives = torch.logspace(math.log10(half_life_min), math.log10(half_life_max), num_heads)
    gamma = torch.exp(math.log(0.5) / half_lives)
    return torch.log(gamma) - torch.log1p(-gamma)


class LinearAttention(nn.Module):
    """Causal linear attention with elu+1 features and a learned per-head decay.

    forward(x [B, T, D], mask [B, T] | None, state | None, mode) -> (out [B, T, D], state)
    ``out`` is the merged per-head output (the owning block applies the output projection).
    mode: "auto" (chunked for T > 1, recurrent step for T == 1), "chunked" or "recurrent"
    (a per-token loop over the one-step recurrence).

    Hooks (per head: [B, H, T, ...]): hook_q_features, hook_k_features (phi, after masking),
    hook_v, hook_decay [H] (gamma_h), hook_normalizer [B, H, T] (phi(q_t).z_t),
    hook_out [B, H, T, dv].
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        chunk_size: int = 64,
        eps: float = 1e-6,
        half_life_min: float = 4.0,
        half_life_max: float = 256.0,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"num_heads: hidden_size {hidden_size} not divisible by {num_heads}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.chunk_size = chunk_size
        self.eps = eps
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.decay_logit = nn.Parameter(_decay_logits(num_heads, half_life_min, half_life_max))
        self.hook_q_features = HookPoint(layout=("batch", "head", "pos", "d_k"), kind="attention_input")
        self.hook_k_features = HookPoint(layout=("batch", "head", "pos", "d_k"), kind="attention_input")
        self.hook_v = HookPoint(layout=("batch", "head", "pos", "d_v"), kind="attention_input")
        self.hook_decay = HookPoint(layout=("head",), kind="decay")
        self.hook_normalizer = HookPoint(layout=("batch", "head", "pos"), kind="normalizer")
        self.hook_out = HookPoint(layout=("batch", "head", "pos", "d_v"), kind="output")

    def init_state(self, batch_size: int, device=None, dtype=None) -> LinearAttentionState:
        H, d = self.num_heads, self.head_dim
        return {
            "S": torch.zeros(batch_size, H, d, d, device=device, dtype=torch.float32),
            "z": torch.zeros(batch_size, H, d, device=device, dtype=torch.float32),
        }

    def decay(self) -> torch.Tensor:
        """gamma_h, [H]."""
        return torch.sigmoid(self.decay_logit)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        state: LinearAttentionState | None = None,
        mode: str = "auto",
    ) -> tuple[torch.Tensor, LinearAttentionState]:
        B, T, D = x.shape
        H, d = self.num_heads, self.head_dim
        if state is None:
            state = self.init_state(B, x.device)

        def heads(t: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, H, T, d], fp32
            return t.view(B, T, H, d).transpose(1, 2).float()

        q = self.hook_q_features(feature_map(heads(self.q_proj(x))))
        k = feature_map(heads(self.k_proj(x)))
        v = self.hook_v(heads(self.v_proj(x)))
        gamma = self.hook_decay(self.decay())  # [H]
        log_gamma = torch.log(gamma.float()).view(1, H, 1).expand(B, H, T)
        if mask is not None:
            real = mask.to(torch.float32)[:, None, :]  # [B, 1, T]
            k = k * real[..., None]
            log_gamma = log_gamma * real
        k = self.hook_k_features(k)

        if mode == "auto":
            mode = "recurrent" if T == 1 else "chunked"
        if mode == "chunked":
            if linear_attention_backend(q, v) == "triton":  # fused kernel (CUDA), same result
                out, den, S, z = fused_linear_attention(q, k, v, log_gamma, state["S"], state["z"], self.eps)
            else:
                out, den, S, z = chunked_linear_attention(
                    q, k, v, log_gamma, state["S"], state["z"], self.chunk_size, self.eps
                )
        elif mode == "recurrent":
            S, z = state["S"], state["z"]
            outs, dens = [], []
            for t in range(T):
                o, n, S, z = recurrent_linear_attention_step(
                    q[:, :, t], k[:, :, t], v[:, :, t], log_gamma[:, :, t], S, z, self.eps
                )
                outs.append(o)
                dens.append(n)
            out, den = torch.stack(outs, dim=2), torch.stack(dens, dim=2)
        else:
            raise ValueError(f"mode: expected 'auto', 'chunked' or 'recurrent', got {mode!r}")
        den_used = self.hook_normalizer(den)
        if den_used is not den:  # an intervention: o_t = num_t / (n_t + eps), so re-divide by the new n_t
            out = out * ((den + self.eps) / (den_used + self.eps))[..., None]
        out = self.hook_out(out)  # [B, H, T, d]
        merged = out.transpose(1, 2).reshape(B, T, D).to(x.dtype)
        return merged, {"S": S, "z": z}
