"""Fused decayed linear attention in Triton: forward and backward (``torch.autograd.Function``).

Computes exactly what :func:`pulse.layers.linear_attention.chunked_linear_attention` computes

    S_t = exp(ld_t) S_{t-1} + k_t v_t^T,  z_t = exp(ld_t) z_{t-1} + k_t,
    out_t = q_t S_t / (q_t . z_t + eps),  den_t = q_t . z_t

for q, k: [B, H, T, dk] (already feature-mapped), v: [B, H, T, dv], ld: [B, H, T] (<= 0),
S0: [B, H, dk, dv], z0: [B, H, dk], all fp32, and returns (out, den, S_T, z_T).

Three kernels, each over a grid of (chunk, batch*head) or (batch*head, tile) programs, so
that a long sequence at batch 1 still fills the GPU:

1. ``_chunk_contrib``: each chunk's contribution to the state, decayed to the chunk's end
   (forward: sum_s exp(b_L - b_s) k_s [v_s, 1]^T), or, for the backward, each chunk's
   contribution to the reverse state (sum_t exp(b_t) q_t [dnum_t, dden_t]^T).
2. ``_state_scan``: the sequential recurrence over chunks of those [dk, dv] states, in place
   (each slot ends up holding the state at the chunk's start), tiles of the state in
   separate programs, loads software-pipelined.
3. ``_chunk_output`` (forward) and ``_chunk_grads`` (backward): intra-chunk masked product
   with decay exp(b_t - b_s) (local cumulative log decay, every used exponent <= 0) plus
   the inter-chunk term through the carried state.

Only q, k, v, ld, S0, z0, out and den are kept for the backward; the per-chunk states are
recomputed there (one cheap pass), so no per-chunk intermediate outlives the forward.
The gradient of the log decay uses the identity dL/dB_t = q_t.dq_t - k_t.dk_t (+ the final
state term at t = T-1), B being the global cumulative log decay, then a reverse cumsum.

Precision: ``precision="ieee"`` keeps the dot products in true fp32 (agrees with the
PyTorch path to ~1e-6); ``"tf32"`` (the default, or the environment variable
PULSE_LA_PRECISION) uses the tensor cores' tf32 mode (~1e-3 relative); Triton's CPU
interpreter always computes in fp32.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _chunk_contrib(A, C, E, LD, OUT_S, OUT_Z, OUT_A, T, N,
                   L: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                   REVERSE: tl.constexpr, HAS_E: tl.constexpr, PREC: tl.constexpr):
    n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_t = n * L + tl.arange(0, L)
    tmask = offs_t < T
    offs_k = tl.arange(0, DK)
    offs_v = tl.arange(0, DV)
    a = tl.load(A + bh * T * DK + offs_t[:, None] * DK + offs_k[None, :], mask=tmask[:, None], other=0.0)
    c = tl.load(C + bh * T * DV + offs_t[:, None] * DV + offs_v[None, :], mask=tmask[:, None], other=0.0)
    ld = tl.load(LD + bh * T + offs_t, mask=tmask, other=0.0)
    b = tl.cumsum(ld, 0)
    total = tl.sum(ld, 0)
    if REVERSE:
        w = tl.exp(b)
    else:
        w = tl.exp(total - b)
    aw = a * w[:, None]
    dS = tl.dot(tl.trans(aw), c, input_precision=PREC)  # [DK, DV]
    if HAS_E:
        e = tl.load(E + bh * T + offs_t, mask=tmask, other=0.0)
        dz = tl.sum(aw * e[:, None], 0)
    else:
        dz = tl.sum(aw, 0)
    base = bh * N + n
    tl.store(OUT_S + base * DK * DV + offs_k[:, None] * DV + offs_v[None, :], dS)
    tl.store(OUT_Z + base * DK + offs_k, dz)
    tl.store(OUT_A + base, total)


@triton.jit
def _state_scan(S, Z, A, INIT_S, INIT_Z, FINAL_S, FINAL_Z, N,
                DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                REVERSE: tl.constexpr):
    """In place: slot n of S/Z (a chunk's contribution) becomes the state before chunk n
    (forward) or after chunk n seen from the end (reverse). Programs: (bh, k tile, v tile)."""
    bh = tl.program_id(0).to(tl.int64)
    kt = tl.program_id(1)
    vt = tl.program_id(2)
    offs_k = kt * BK + tl.arange(0, BK)
    offs_v = vt * BV + tl.arange(0, BV)
    tile = offs_k[:, None] * DV + offs_v[None, :]
    s = tl.load(INIT_S + bh * DK * DV + tile)
    z = tl.load(INIT_Z + bh * DK + offs_k)
    for i in tl.range(0, N, num_stages=3):
        if REVERSE:
            n = N - 1 - i
        else:
            n = i
        base = bh * N + n
        ds = tl.load(S + base * DK * DV + tile)
        a = tl.exp(tl.load(A + base))
        tl.store(S + base * DK * DV + tile, s)
        s = a * s + ds
        if vt == 0:
            dz = tl.load(Z + base * DK + offs_k)
            tl.store(Z + base * DK + offs_k, z)
            z = a * z + dz
    tl.store(FINAL_S + bh * DK * DV + tile, s)
    if vt == 0:
        tl.store(FINAL_Z + bh * DK + offs_k, z)


@triton.jit
def _chunk_output(Q, K, V, LD, S, Z, OUT, DEN, T, N, eps,
                  L: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, PREC: tl.constexpr):
    n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_t = n * L + tl.arange(0, L)
    tmask = offs_t < T
    offs_k = tl.arange(0, DK)
    offs_v = tl.arange(0, DV)
    q = tl.load(Q + bh * T * DK + offs_t[:, None] * DK + offs_k[None, :], mask=tmask[:, None], other=0.0)
    k = tl.load(K + bh * T * DK + offs_t[:, None] * DK + offs_k[None, :], mask=tmask[:, None], other=0.0)
    v = tl.load(V + bh * T * DV + offs_t[:, None] * DV + offs_v[None, :], mask=tmask[:, None], other=0.0)
    ld = tl.load(LD + bh * T + offs_t, mask=tmask, other=0.0)
    b = tl.cumsum(ld, 0)
    rows = tl.arange(0, L)
    causal = rows[:, None] >= rows[None, :]
    decay = tl.where(causal, tl.exp(tl.where(causal, b[:, None] - b[None, :], 0.0)), 0.0)
    scores = tl.dot(q, tl.trans(k), input_precision=PREC) * decay  # [L, L]
    num = tl.dot(scores, v, input_precision=PREC)  # [L, DV]
    den = tl.sum(scores, 1)
    base = bh * N + n
    s = tl.load(S + base * DK * DV + offs_k[:, None] * DV + offs_v[None, :])
    z = tl.load(Z + base * DK + offs_k)
    qd = q * tl.exp(b)[:, None]
    num += tl.dot(qd, s, input_precision=PREC)
    den += tl.sum(qd * z[None, :], 1)
    out = num / (den + eps)[:, None]
    tl.store(OUT + bh * T * DV + offs_t[:, None] * DV + offs_v[None, :], out, mask=tmask[:, None])
    tl.store(DEN + bh * T + offs_t, den, mask=tmask)


@triton.jit
def _chunk_grads(Q, K, V, LD, DNUM, DDEN, S, Z, R, RZ, DQ, DK_, DV_, T, N,
                 L: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, PREC: tl.constexpr):
    n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_t = n * L + tl.arange(0, L)
    tmask = offs_t < T
    offs_k = tl.arange(0, DK)
    offs_v = tl.arange(0, DV)
    kptr = bh * T * DK + offs_t[:, None] * DK + offs_k[None, :]
    vptr = bh * T * DV + offs_t[:, None] * DV + offs_v[None, :]
    q = tl.load(Q + kptr, mask=tmask[:, None], other=0.0)
    k = tl.load(K + kptr, mask=tmask[:, None], other=0.0)
    v = tl.load(V + vptr, mask=tmask[:, None], other=0.0)
    dnum = tl.load(DNUM + vptr, mask=tmask[:, None], other=0.0)
    dden = tl.load(DDEN + bh * T + offs_t, mask=tmask, other=0.0)
    ld = tl.load(LD + bh * T + offs_t, mask=tmask, other=0.0)
    b = tl.cumsum(ld, 0)
    total = tl.sum(ld, 0)
    rows = tl.arange(0, L)
    causal = rows[:, None] >= rows[None, :]
    decay = tl.where(causal, tl.exp(tl.where(causal, b[:, None] - b[None, :], 0.0)), 0.0)
    base = bh * N + n
    sptr = base * DK * DV + offs_k[:, None] * DV + offs_v[None, :]
    s = tl.load(S + sptr)  # state before the chunk [DK, DV]
    z = tl.load(Z + base * DK + offs_k)
    r = tl.load(R + sptr)  # reverse state after the chunk [DK, DV]
    rz = tl.load(RZ + base * DK + offs_k)
    to_start = tl.exp(b)
    to_end = tl.exp(total - b)
    # dP[t, s] = [dnum_t, dden_t] . [v_s, 1]
    m = (tl.dot(dnum, tl.trans(v), input_precision=PREC) + dden[:, None]) * decay  # [L, L]
    dq = tl.dot(m, k, input_precision=PREC)
    dq += to_start[:, None] * (tl.dot(dnum, tl.trans(s), input_precision=PREC) + dden[:, None] * z[None, :])
    dk = tl.dot(tl.trans(m), q, input_precision=PREC)
    dk += to_end[:, None] * (tl.dot(v, tl.trans(r), input_precision=PREC) + rz[None, :])
    att = tl.dot(q, tl.trans(k), input_precision=PREC) * decay
    dv = tl.dot(tl.trans(att), dnum, input_precision=PREC)
    dv += to_end[:, None] * tl.dot(k, r, input_precision=PREC)
    tl.store(DQ + kptr, dq, mask=tmask[:, None])
    tl.store(DK_ + kptr, dk, mask=tmask[:, None])
    tl.store(DV_ + vptr, dv, mask=tmask[:, None])


def default_precision() -> str:
    """``PULSE_LA_PRECISION`` (``tf32`` unless set; ``ieee`` for true fp32 dot products)."""
    p = os.environ.get("PULSE_LA_PRECISION", "tf32")
    if p not in ("tf32", "ieee", "tf32x3"):
        raise ValueError(f"PULSE_LA_PRECISION: expected 'tf32', 'tf32x3' or 'ieee', got {p!r}")
    return p


def _tiles(dk: int, dv: int) -> tuple[int, int]:
    return min(dk, 16), min(dv, 32)


def _states(a, c, ld, init_s, init_z, chunk, reverse, prec, e=None):
    """Per-chunk states ([BH, N, dk, dv], [BH, N, dk]) by kernels 1 and 2, plus the final one
    and the per-chunk log decays [BH, N]."""
    BH, T, dk = a.shape
    dv = c.shape[-1]
    N = triton.cdiv(T, chunk)
    S = torch.empty(BH, N, dk, dv, device=a.device, dtype=torch.float32)
    Z = torch.empty(BH, N, dk, device=a.device, dtype=torch.float32)
    A = torch.empty(BH, N, device=a.device, dtype=torch.float32)
    _chunk_contrib[(N, BH)](a, c, e if e is not None else ld, ld, S, Z, A, T, N,
                            L=chunk, DK=dk, DV=dv, REVERSE=reverse, HAS_E=e is not None, PREC=prec)
    final_s = torch.empty(BH, dk, dv, device=a.device, dtype=torch.float32)
    final_z = torch.empty(BH, dk, device=a.device, dtype=torch.float32)
    BK, BV = _tiles(dk, dv)
    _state_scan[(BH, dk // BK, dv // BV)](S, Z, A, init_s, init_z, final_s, final_z, N,
                                          DK=dk, DV=dv, BK=BK, BV=BV, REVERSE=reverse)
    return S, Z, final_s, final_z


class FusedLinearAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, ld, S0, z0, eps, chunk, prec):
        B, H, T, dk = q.shape
        dv = v.shape[-1]
        BH = B * H
        q3, k3, v3 = (t.reshape(BH, T, -1).contiguous().float() for t in (q, k, v))
        ld2 = ld.reshape(BH, T).contiguous().float()
        S0_ = S0.reshape(BH, dk, dv).contiguous().float()
        z0_ = z0.reshape(BH, dk).contiguous().float()
        S, Z, ST, zT = _states(k3, v3, ld2, S0_, z0_, chunk, False, prec)
        out = torch.empty(BH, T, dv, device=q.device, dtype=torch.float32)
        den = torch.empty(BH, T, device=q.device, dtype=torch.float32)
        N = S.shape[1]
        _chunk_output[(N, BH)](q3, k3, v3, ld2, S, Z, out, den, T, N, eps, L=chunk, DK=dk, DV=dv, PREC=prec)
        del S, Z
        ctx.save_for_backward(q3, k3, v3, ld2, S0_, z0_, out, den, ST, zT)
        ctx.meta = (B, H, T, dk, dv, eps, chunk, prec)
        return out.view(B, H, T, dv), den.view(B, H, T), ST.view(B, H, dk, dv), zT.view(B, H, dk)

    @staticmethod
    def backward(ctx, g_out, g_den, g_S, g_z):
        q3, k3, v3, ld2, S0_, z0_, out, den, ST, zT = ctx.saved_tensors
        B, H, T, dk, dv, eps, chunk, prec = ctx.meta
        BH = B * H
        g_out = torch.zeros_like(out) if g_out is None else g_out.reshape(BH, T, dv).float()
        g_den = torch.zeros_like(den) if g_den is None else g_den.reshape(BH, T).float()
        g_S = torch.zeros_like(ST) if g_S is None else g_S.reshape(BH, dk, dv).contiguous().float()
        g_z = torch.zeros_like(zT) if g_z is None else g_z.reshape(BH, dk).contiguous().float()
        n = den + eps
        dnum = (g_out / n[..., None]).contiguous()
        dden = (g_den - (g_out * out).sum(-1) / n).contiguous()
        S, Z, _, _ = _states(k3, v3, ld2, S0_, z0_, chunk, False, prec)
        R, RZ, dS0, dz0 = _states(q3, dnum, ld2, g_S, g_z, chunk, True, prec, e=dden)
        dq, dk_, dv_ = torch.empty_like(q3), torch.empty_like(k3), torch.empty_like(v3)
        N = S.shape[1]
        _chunk_grads[(N, BH)](q3, k3, v3, ld2, dnum, dden, S, Z, R, RZ, dq, dk_, dv_, T, N,
                              L=chunk, DK=dk, DV=dv, PREC=prec)
        del S, Z, R, RZ
        # d loss / d B_t (B = global cumulative log decay), then back to the per-token ld
        dB = (q3 * dq).sum(-1, dtype=torch.float64) - (k3 * dk_).sum(-1, dtype=torch.float64)
        dB[:, -1] += (g_S * ST).sum((-1, -2), dtype=torch.float64) + (g_z * zT).sum(-1, dtype=torch.float64)
        dld = dB.flip(-1).cumsum(-1).flip(-1).float()
        return (dq.view(B, H, T, dk), dk_.view(B, H, T, dk), dv_.view(B, H, T, dv), dld.view(B, H, T),
                dS0.view(B, H, dk, dv), dz0.view(B, H, dk), None, None, None)


def fused_linear_attention(q, k, v, log_decay, S0, z0, eps: float, chunk_size: int = 64,
                           precision: str | None = None):
    """Same contract as ``chunked_linear_attention``; returns (out, den, S_T, z_T), fp32.
    ``chunk_size`` (a power of two >= 16) changes only rounding, never the result."""
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size: must be a power of two >= 16, got {chunk_size}")
    return FusedLinearAttention.apply(q, k, v, log_decay, S0, z0, eps, chunk_size,
                                      precision or default_precision())
