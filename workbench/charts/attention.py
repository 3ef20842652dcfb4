"""Decay-weighted attention charts: the materialised A[t, s] of one head, and half-lives."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from workbench.charts.states import PALETTE
from workbench.charts.tokens import _ticks


def decay_attention_heatmap(A: np.ndarray, t_positions: Sequence[int], s_positions: Sequence[int],
                            tokens_t: Sequence[str], tokens_s: Sequence[str],
                            title: str = "Decay-weighted attention A[t, s]") -> go.Figure:
    """Rows = query positions t, columns = key positions s (s <= t; zero above the diagonal)."""
    a = np.asarray(A, dtype=float)
    fig = go.Figure(go.Heatmap(
        z=a.tolist(), x=list(s_positions), y=list(t_positions), colorscale="Viridis",
        customdata=[[f"{tt} ← {ss}" for ss in tokens_s] for tt in tokens_t],
        hovertemplate="t %{y} ← s %{x}<br>%{customdata}<br>A %{z:.4f}<extra></extra>",
        colorbar=dict(title="A", thickness=12),
    ))
    fig.update_layout(title=title, xaxis_title="key position s", yaxis=dict(title="query position t",
                      autorange="reversed"), height=520, margin=dict(l=60, r=20, t=40, b=60))
    _ticks(fig, s_positions, tokens_s, "x")
    _ticks(fig, t_positions, tokens_t, "y")
    return fig


def half_life_bars(layers: Sequence[int], heads: Sequence[int], half_lives: Sequence[float],
                   title: str = "Half-life of each head (tokens)") -> go.Figure:
    """Grouped bars: one group per layer, one bar per head, log scale."""
    layers, heads, hl = np.asarray(layers), np.asarray(heads), np.asarray(half_lives, dtype=float)
    fig = go.Figure()
    for h in sorted(set(heads.tolist())):
        m = heads == h
        fig.add_trace(go.Bar(x=[f"layer {int(l)}" for l in layers[m]], y=hl[m].tolist(), name=f"head {h}",
                             marker_color=PALETTE[int(h) % len(PALETTE)],
                             hovertemplate="%{x}, head " + str(h) + ": %{y:.1f} tokens<extra></extra>"))
    fig.update_layout(title=title, barmode="group", yaxis=dict(title="half-life (tokens)", type="log"),
                      height=320, margin=dict(l=50, r=20, t=40, b=40))
    return fig
