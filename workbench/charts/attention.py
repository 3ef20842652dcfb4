"""Decay-weighted attention charts: the materialised A[t, s] of one head, and half-lives."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from workbench.charts import style
from workbench.charts.style import PALETTE, esc


def decay_attention_heatmap(A: np.ndarray, t_positions: Sequence[int], s_positions: Sequence[int],
                            tokens_t: Sequence[str], tokens_s: Sequence[str],
                            title: str = "Decay-weighted attention A[t, s]", *,
                            zmin: float | None = 0.0, zmax: float | None = None) -> go.Figure:
    """Rows = query positions t (top to bottom), columns = key positions s (s <= t; zero above
    the diagonal); ``z[i][j] = A[i, j]``. Colour: ``style.SCALES["attention"]`` from ``zmin``
    (0) to ``zmax`` (default: the largest weight shown). Token tick labels are thinned to what
    fits (the y axis to the plot height, unrotated); the hover names both tokens."""
    a = np.asarray(A, dtype=float)
    t_positions, s_positions = list(t_positions), list(s_positions)
    if a.shape != (len(t_positions), len(s_positions)):
        raise ValueError(f"A: expected [{len(t_positions)}, {len(s_positions)}] (t positions x s positions), "
                         f"got shape {a.shape}")
    if len(tokens_t) != len(t_positions) or len(tokens_s) != len(s_positions):
        raise ValueError("tokens_t / tokens_s: expected one token per t / s position")
    if zmin is not None and zmax is None:
        zmax = max(style.shared_range(a)[1], zmin + 1e-12)
    height = int(min(760, max(380, 160 + 8 * len(t_positions))))
    plot_px = height - 50 - 110
    ts, ss = [esc(t) for t in tokens_t], [esc(s) for s in tokens_s]
    fig = go.Figure(go.Heatmap(
        z=a.tolist(), x=s_positions, y=t_positions, colorscale=style.colorscale("attention"), zmin=zmin, zmax=zmax,
        customdata=[[f"{tt} ← {sv}" for sv in ss] for tt in ts],
        hovertemplate="query t %{y} ← key s %{x}<br>%{customdata}<br>A %{z:.4f}<extra></extra>",
        colorbar=dict(title="A[t, s]", thickness=12),
    ))
    fig.update_layout(title=title, height=height, margin=dict(l=70, r=20, t=50, b=60))
    style.token_axis(fig, s_positions, tokens_s, "x", title="key position s (token attended to)")
    style.token_axis(fig, t_positions, tokens_t, "y", title="query position t (token attending)",
                     max_labels=style.labels_fit(plot_px))
    fig.update_yaxes(autorange="reversed")
    return fig


def half_life_bars(layers: Sequence[int], heads: Sequence[int], half_lives: Sequence[float],
                   title: str = "Half-life of each head (tokens, log scale)",
                   unit_labels: Mapping[int, str] | None = None, unit_title: str = "head") -> go.Figure:
    """Grouped bars: one group per layer, one bar per head, on a log axis whose ticks are
    plain numbers (1, 2, 5, 10, ...: no minor-digit labels). ``unit_labels`` / ``unit_title``
    name the bars when they are not heads (e.g. deciles over a layer's channels)."""
    layers, heads, hl = np.asarray(layers), np.asarray(heads), np.asarray(half_lives, dtype=float)
    fig = go.Figure()
    for h in sorted(set(heads.tolist())):
        m = heads == h
        label = (unit_labels or {}).get(int(h), f"{unit_title} {h}")
        fig.add_trace(go.Bar(x=[f"layer {int(l)}" for l in layers[m]], y=hl[m].tolist(), name=label,
                             marker_color=PALETTE[int(h) % len(PALETTE)],
                             hovertemplate="%{x}, " + label + ": half-life %{y:.3g} tokens<extra></extra>"))
    ticks = style.nice_log_ticks(hl)
    fig.update_layout(title=title, barmode="group", legend_title_text=unit_title, xaxis_title="layer",
                      yaxis=dict(title="half-life (tokens)", type="log", tickmode="array", tickvals=ticks,
                                 ticktext=[style.fmt_tick(t) for t in ticks], minor=dict(showgrid=False),
                                 range=[np.log10(ticks[0]), np.log10(ticks[-1])]),
                      height=340, margin=dict(l=60, r=20, t=40, b=40))
    return fig
