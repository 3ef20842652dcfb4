"""Decay-weighted attention of a LinearAttention layer, materialised for a window.

The trace keeps phi(q) (``attn.hook_q_features``), phi(k) after masking
(``attn.hook_k_features``), ``attn.hook_v``, gamma (``attn.hook_decay``) and the normalizer
``n_t = phi(q_t) . z_t`` (``attn.hook_normalizer``). For one sample, layer and head:

    A[t, s] = gamma^{m(s, t)} phi(q_t) . phi(k_s) / (n_t + eps),   s <= t,

with ``m(s, t)`` = the number of *real* tokens in ``(s, t]`` (padding neither decays the
state nor enters it: its phi(k) is already zero) and ``eps = config.linear_attn_eps``.
Then ``sum_s A[t, s] v_s`` is the head's output ``attn.hook_out[t]`` when the window's
columns reach back to the start of the traced stream (``s_start = 0``) and the trace began
with a fresh state. The matrix is computed in float64 from log decays, never for the
whole sequence unless asked.

(This module sits below :mod:`probes.trace`: ``Trace`` in the annotations names
:class:`probes.trace.Trace` without importing it.)
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch


def _layer_name(tr: Trace, layer: int, hook: str) -> str:
    for prefix in ("", "model."):
        name = f"{prefix}blocks.{layer}.attn.{hook}"
        if name in tr:
            return name
    raise KeyError(f"blocks.{layer}.attn.{hook}: not in this trace (trace the attn hooks of layer {layer}: "
                   f"names='blocks.{layer}.attn.*')")


def _eps(tr: Trace) -> float:
    cfg = tr.metadata.get("config") or {}
    return float(cfg.get("linear_attn_eps", 1e-6))


def real_mask(tr: Trace, sample: int, T: int) -> torch.Tensor:
    m = tr.attention_mask
    if m is None or m.shape[1] != T:
        return torch.ones(T, dtype=torch.float64)
    return (m[sample] > 0.5).to(torch.float64)


def decay_attention_matrix(
    tr: Trace,
    layer: int,
    head: int,
    window: tuple[int, int] | None = None,
    s_start: int | None = None,
    sample: int = 0,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``A`` [t1 - t0, t1 - s0] (float64; zero where s > t) for rows t in [t0, t1) and columns
    s in [s0, t1), with ``window = (t0, t1)`` (default: whole trace) and ``s_start = s0``
    (default 0: the full causal past). Returns (A, t positions, s positions); positions are
    indices into the traced sequence."""
    q = tr[_layer_name(tr, layer, "hook_q_features")]
    k = tr[_layer_name(tr, layer, "hook_k_features")]
    n = tr[_layer_name(tr, layer, "hook_normalizer")]
    gamma_all = tr[_layer_name(tr, layer, "hook_decay")]
    B, H, T, _ = q.shape
    if not 0 <= head < H:
        raise ValueError(f"head: must be in [0, {H}), got {head}")
    if not 0 <= sample < B:
        raise ValueError(f"sample: must be in [0, {B}), got {sample}")
    t0, t1 = (0, T) if window is None else (int(window[0]), int(window[1]))
    if not 0 <= t0 < t1 <= T:
        raise ValueError(f"window: need 0 <= t0 < t1 <= {T}, got {window}")
    s0 = 0 if s_start is None else int(s_start)
    if not 0 <= s0 <= t0:
        raise ValueError(f"s_start: need 0 <= s_start <= t0 = {t0}, got {s_start}")
    gamma = float(gamma_all[head])
    real = real_mask(tr, sample, T)
    # cum[t] = sum_{r <= t} real_r * log gamma ; exponent(s, t) = cum[t] - cum[s]
    cum = torch.cumsum(real * math.log(gamma), 0)
    qt = q[sample, head, t0:t1].double()
    ks = k[sample, head, s0:t1].double()
    dots = qt @ ks.T  # [Tt, Ts]
    expo = cum[t0:t1, None] - cum[None, s0:t1]
    ts = np.arange(t0, t1)
    ss = np.arange(s0, t1)
    causal = torch.from_numpy(ss[None, :] <= ts[:, None])
    decay = torch.exp(expo.masked_fill(~causal, float("-inf")))
    A = decay * dots / (n[sample, head, t0:t1].double()[:, None] + _eps(tr))
    return A, ts, ss


def half_life(gamma: torch.Tensor | float) -> torch.Tensor:
    """ln 0.5 / ln gamma (tokens until a contribution has halved)."""
    g = torch.as_tensor(gamma, dtype=torch.float64)
    return math.log(0.5) / torch.log(g)


def decay_bound(gamma: float, mass: float = 0.9) -> int:
    """Decay-only effective context: the smallest distance d with 1 - gamma^(d+1) >= mass
    (the share of an infinite, uniform-score geometric history lying within d tokens)."""
    return max(0, int(math.ceil(math.log(1.0 - mass) / math.log(gamma))) - 1)


def attention_distances(A: torch.Tensor, ts: np.ndarray, ss: np.ndarray, mass: float = 0.9,
                        real: torch.Tensor | None = None, effective: bool = True) -> tuple[float, float]:
    """(mean attention distance, mean over rows of the smallest distance holding ``mass`` of the
    row's attention) measured from a materialised ``A``.

    Each row is normalised by its own total (negative entries clipped to 0 first), so a row
    that does not sum to 1 (a window whose columns start after 0, the eps in the normaliser,
    an unnormalised implicit attention) gives the distances of its *measured* share: scaling
    a row changes nothing. Rows with no positive weight are skipped. With ``real`` [T] (1 =
    real token) distances count real tokens only and rows whose query is padding are skipped
    (a padded position predicts nothing). ``effective=False`` skips the second number (NaN)."""
    A = A.clamp_min(0)
    if real is None:
        dist = torch.from_numpy(ts[:, None] - ss[None, :]).double()
    else:
        c = torch.cumsum(real, 0)
        dist = (c[ts][:, None] - c[ss][None, :]).double()
    dist = dist.clamp_min(0)
    total = A.sum(1)
    ok = total > 0
    if real is not None:
        ok &= real[ts] > 0.5
    if not ok.any():
        return float("nan"), float("nan")
    A, dist, total = A[ok], dist[ok], total[ok]
    mean_dist = ((A * dist).sum(1) / total).mean().item()
    if not effective:
        return mean_dist, float("nan")
    order = torch.argsort(dist, dim=1, stable=True)
    d_sorted = torch.gather(dist, 1, order)
    cm = torch.cumsum(torch.gather(A, 1, order), 1) / total[:, None]
    j = torch.searchsorted(cm, torch.full((cm.shape[0], 1), mass, dtype=cm.dtype)).clamp_max(cm.shape[1] - 1)
    return mean_dist, float(torch.gather(d_sorted, 1, j).mean())


def head_summary(tr: Trace, layer: int | None = None, window: tuple[int, int] | None = None,
                 sample: int = 0, mass: float = 0.9, s_start: int | None = None) -> pd.DataFrame:
    """One row per (layer, head): gamma, half_life, mean_distance (attention-weighted mean
    distance t - s, measured from A), effective_context (mean over rows of the distance within
    which ``mass`` of the row's attention lies) and decay_bound (the decay-only bound)."""
    layers = sorted(tr.layers("attn.hook_q_features")) if layer is None else [layer]
    rows = []
    for li in layers:
        g = tr[_layer_name(tr, li, "hook_decay")]
        T = tr[_layer_name(tr, li, "hook_q_features")].shape[2]
        real = real_mask(tr, sample, T)
        for h in range(g.shape[0]):
            A, ts, ss = decay_attention_matrix(tr, li, h, window=window, s_start=s_start, sample=sample)
            md, eff = attention_distances(A, ts, ss, mass, real)
            gh = float(g[h])
            rows.append({"layer": li, "head": h, "gamma": gh, "half_life": float(half_life(gh)),
                         "mean_distance": md, "effective_context": eff, "decay_bound": decay_bound(gh, mass)})
    return pd.DataFrame(rows)
