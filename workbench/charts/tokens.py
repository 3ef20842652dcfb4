"""Per-token charts: loss strip, top predictions, token attributions, loss comparisons.

Every function takes plain arrays and returns a ``plotly.graph_objects.Figure``. The x axis
is the token *position* (integers), never the token string: the same word occurs many
times and a categorical axis would merge them; tokens appear as tick labels and in hovers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

MAX_TICK_LABELS = 80


def _ticks(fig: go.Figure, positions: Sequence[int], tokens: Sequence[str], axis: str = "x") -> None:
    """Token strings as tick labels when there are few enough to read."""
    positions = list(positions)
    if 0 < len(positions) <= MAX_TICK_LABELS:
        fig.update_layout(**{f"{axis}axis": dict(tickmode="array", tickvals=positions,
                                                 ticktext=[str(t) for t in tokens], tickangle=-60)})


def _nan_to_none(a: np.ndarray) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=float)]


def loss_strip(positions: Sequence[int], tokens: Sequence[str], loss: Sequence[float],
               title: str = "Per-token loss (nats)") -> go.Figure:
    """One-row heatmap: colour = the loss of predicting each token from the ones before it."""
    loss = np.asarray(loss, dtype=float)
    fig = go.Figure(go.Heatmap(
        z=[_nan_to_none(loss)], x=list(positions), y=["loss"], colorscale="Reds", zmin=0,
        customdata=[[str(t) for t in tokens]],
        hovertemplate="pos %{x}: %{customdata}<br>loss %{z:.3f}<extra></extra>",
        colorbar=dict(title="nats", thickness=12),
    ))
    fig.update_layout(title=title, height=220, margin=dict(l=40, r=20, t=40, b=60))
    _ticks(fig, positions, tokens)
    return fig


def top_predictions(tokens: Sequence[str], probs: Sequence[float], actual: str | None = None,
                    title: str = "Top next-token predictions") -> go.Figure:
    """Horizontal bars of the model's most likely next tokens; the actual next token in red."""
    tokens = [str(t) for t in tokens]
    colors = ["#d62728" if actual is not None and t == actual else "#1f77b4" for t in tokens]
    fig = go.Figure(go.Bar(x=list(map(float, probs)), y=[f"{i + 1}. {t}" for i, t in enumerate(tokens)],
                           orientation="h", marker_color=colors,
                           hovertemplate="%{y}: p = %{x:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis=dict(title="probability", range=[0, 1]),
                      yaxis=dict(autorange="reversed"), height=260, margin=dict(l=120, r=20, t=40, b=40))
    return fig


def token_attribution_bars(positions: Sequence[int], tokens: Sequence[str], attributions: Sequence[float],
                           target_pos: int | None = None, title: str = "Integrated gradients per input token"
                           ) -> go.Figure:
    """Signed bars: how much each input token pushed the target up (positive) or down."""
    a = np.asarray(attributions, dtype=float)
    colors = ["#2ca02c" if v >= 0 else "#d62728" for v in a]
    fig = go.Figure(go.Bar(x=list(positions), y=a.tolist(), marker_color=colors,
                           customdata=[str(t) for t in tokens],
                           hovertemplate="pos %{x}: %{customdata}<br>attribution %{y:.4f}<extra></extra>"))
    if target_pos is not None:
        fig.add_vline(x=target_pos, line_dash="dot", line_color="grey")
    fig.update_layout(title=title, yaxis_title="attribution", height=320, margin=dict(l=50, r=20, t=40, b=60))
    _ticks(fig, positions, tokens)
    return fig


def loss_comparison(positions: Sequence[int], tokens: Sequence[str], loss_a: Sequence[float],
                    loss_b: Sequence[float], name_a: str = "before", name_b: str = "after",
                    title: str = "Per-token loss") -> go.Figure:
    """Two per-token loss lines over the same positions."""
    fig = go.Figure()
    for name, loss, color in ((name_a, loss_a, "#1f77b4"), (name_b, loss_b, "#ff7f0e")):
        fig.add_trace(go.Scatter(x=list(positions), y=_nan_to_none(np.asarray(loss, float)), mode="lines+markers",
                                 name=name, line=dict(color=color), marker=dict(size=4),
                                 customdata=[str(t) for t in tokens],
                                 hovertemplate="pos %{x}: %{customdata}<br>loss %{y:.3f}<extra>" + name + "</extra>"))
    fig.update_layout(title=title, yaxis_title="loss (nats)", height=320, margin=dict(l=50, r=20, t=40, b=60),
                      legend=dict(orientation="h", y=1.1))
    _ticks(fig, positions, tokens)
    return fig


def loss_delta_bars(positions: Sequence[int], tokens: Sequence[str], delta: Sequence[float],
                    title: str = "Loss change per token (after - before)") -> go.Figure:
    """Bars of the per-token loss change; red = the change made the token harder to predict."""
    d = np.asarray(delta, dtype=float)
    colors = ["#d62728" if (np.isfinite(v) and v > 0) else "#2ca02c" for v in d]
    fig = go.Figure(go.Bar(x=list(positions), y=_nan_to_none(d), marker_color=colors,
                           customdata=[str(t) for t in tokens],
                           hovertemplate="pos %{x}: %{customdata}<br>delta %{y:.4f}<extra></extra>"))
    fig.update_layout(title=title, yaxis_title="delta loss (nats)", height=300, margin=dict(l=50, r=20, t=40, b=60))
    _ticks(fig, positions, tokens)
    return fig
