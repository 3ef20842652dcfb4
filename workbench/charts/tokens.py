"""Per-token charts: loss strip, top predictions, token attributions, loss comparisons.

Every function takes plain arrays and returns a ``plotly.graph_objects.Figure``. The x axis
is the token *position* (integers), never the token string: the same word occurs many
times and a categorical axis would merge them; tokens appear as tick labels (thinned to at most
``style.MAX_TICK_LABELS``) and, every one of them, in the hovers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from workbench.charts import style
from workbench.charts.style import MAX_TICK_LABELS, esc

__all__ = ["loss_strip", "top_predictions", "token_attribution_bars", "loss_comparison", "loss_delta_bars",
           "MAX_TICK_LABELS"]


def _ticks(fig: go.Figure, positions: Sequence[int], tokens: Sequence[str], axis: str = "x",
           title: str = "token position", max_labels: int | None = None) -> None:
    """Token strings as tick labels at their positions, thinned to a readable number."""
    style.token_axis(fig, positions, tokens, axis=axis, title=title, max_labels=max_labels)


def _nan_to_none(a: np.ndarray) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=float)]


def _check(positions: Sequence[int], tokens: Sequence[str], *arrays: Sequence[float]) -> None:
    n = len(list(positions))
    for name, a in zip(("tokens", "values", "values"), (tokens, *arrays)):
        if len(a) != n:
            raise ValueError(f"{name}: expected {n} (one per position), got {len(a)}")


def loss_strip(positions: Sequence[int], tokens: Sequence[str], loss: Sequence[float],
               title: str = "Per-token loss (nats)", zmin: float = 0.0, zmax: float | None = None) -> go.Figure:
    """One-row heatmap: colour = the loss of predicting each token from the ones before it
    (white = 0 nats, dark red = ``zmax``; default: the largest loss shown). Pass the same
    ``zmax`` to strips that are compared (``style.shared_range``)."""
    loss = np.asarray(loss, dtype=float)
    positions = list(positions)
    _check(positions, tokens, loss)
    if zmax is None:
        zmax = max(style.shared_range(loss)[1], zmin + 1e-6) if np.isfinite(loss).any() else zmin + 1.0
    fig = go.Figure(go.Heatmap(
        z=[_nan_to_none(loss)], x=positions, y=["loss"], colorscale=style.colorscale("loss"),
        zmin=float(zmin), zmax=float(zmax), customdata=[[esc(t) for t in tokens]],
        hovertemplate="pos %{x}: %{customdata}<br>loss %{z:.3f} nats<extra></extra>",
        colorbar=dict(title="loss (nats)", thickness=12),
    ))
    fig.update_layout(title=title, height=240, margin=dict(l=50, r=20, t=40, b=60),
                      yaxis=dict(showticklabels=False, title=None))
    _ticks(fig, positions, tokens)
    return fig


def top_predictions(tokens: Sequence[str], probs: Sequence[float], actual: str | None = None,
                    title: str = "Top next-token predictions") -> go.Figure:
    """Horizontal bars of the model's most likely next tokens, most likely on top; the actual
    next token highlighted (orange, "actual" in its hover)."""
    tokens = [str(t) for t in tokens]
    if len(tokens) != len(probs):
        raise ValueError(f"probs: expected {len(tokens)} (one per token), got {len(probs)}")
    hit = [actual is not None and t == actual for t in tokens]
    colors = [style.PALETTE[1] if h else style.PALETTE[0] for h in hit]
    fig = go.Figure(go.Bar(x=list(map(float, probs)), y=[f"{i + 1}. {esc(t)}" for i, t in enumerate(tokens)],
                           orientation="h", marker_color=colors,
                           customdata=[" (actual next token)" if h else "" for h in hit],
                           hovertemplate="%{y}: p = %{x:.3f}%{customdata}<extra></extra>"))
    fig.update_layout(title=title, xaxis=dict(title="probability", range=[0, 1]),
                      yaxis=dict(title="predicted next token (rank)", autorange="reversed", automargin=True),
                      height=120 + 24 * max(4, len(tokens)), margin=dict(l=120, r=20, t=40, b=40))
    return fig


def token_attribution_bars(positions: Sequence[int], tokens: Sequence[str], attributions: Sequence[float],
                           target_pos: int | None = None, title: str = "Integrated gradients per input token"
                           ) -> go.Figure:
    """Signed bars: how much each input token pushed the target up (green, positive) or down
    (red): the two ends of the app's one attribution scale (``style.SCALES["attribution"]``)."""
    a = np.asarray(attributions, dtype=float)
    positions = list(positions)
    _check(positions, tokens, a)
    colors = [style.signed_color(v, "attribution") for v in a]
    fig = go.Figure(go.Bar(x=positions, y=_nan_to_none(a), marker_color=colors,
                           customdata=[esc(t) for t in tokens],
                           hovertemplate="pos %{x}: %{customdata}<br>attribution %{y:.4f}<extra></extra>"))
    if target_pos is not None:
        fig.add_vline(x=target_pos, line_dash="dot", line_color="grey", annotation_text="target",
                      annotation_position="top left")
    fig.update_layout(title=title, yaxis_title="attribution (target logit units)", height=340,
                      margin=dict(l=60, r=20, t=40, b=60))
    _ticks(fig, positions, tokens)
    return fig


def loss_comparison(positions: Sequence[int], tokens: Sequence[str], loss_a: Sequence[float],
                    loss_b: Sequence[float], name_a: str = "before", name_b: str = "after",
                    title: str = "Per-token loss") -> go.Figure:
    """Two per-token loss lines over the same positions."""
    positions = list(positions)
    _check(positions, tokens, loss_a, loss_b)
    fig = go.Figure()
    for name, loss, color in ((name_a, loss_a, style.PALETTE[0]), (name_b, loss_b, style.PALETTE[1])):
        fig.add_trace(go.Scatter(x=positions, y=_nan_to_none(np.asarray(loss, float)), mode="lines+markers",
                                 name=name, line=dict(color=color), marker=dict(size=4),
                                 customdata=[esc(t) for t in tokens],
                                 hovertemplate="pos %{x}: %{customdata}<br>loss %{y:.3f} nats<extra>" + name
                                 + "</extra>"))
    fig.update_layout(title=title, yaxis_title="loss (nats)", height=340, margin=dict(l=50, r=20, t=60, b=60),
                      legend=dict(orientation="h", y=1.12))
    _ticks(fig, positions, tokens)
    return fig


def loss_delta_bars(positions: Sequence[int], tokens: Sequence[str], delta: Sequence[float],
                    title: str = "Loss change per token (after - before)") -> go.Figure:
    """Bars of the per-token loss change; red = the change made the token harder to predict,
    green = easier (the ends of ``style.SCALES["loss_change"]``)."""
    d = np.asarray(delta, dtype=float)
    positions = list(positions)
    _check(positions, tokens, d)
    colors = [style.signed_color(v if np.isfinite(v) else 0.0, "loss_change") for v in d]
    fig = go.Figure(go.Bar(x=positions, y=_nan_to_none(d), marker_color=colors,
                           customdata=[esc(t) for t in tokens],
                           hovertemplate="pos %{x}: %{customdata}<br>loss change %{y:+.4f} nats<extra></extra>"))
    fig.update_layout(title=title, yaxis_title="loss change (nats)", height=320, margin=dict(l=50, r=20, t=40, b=60))
    _ticks(fig, positions, tokens)
    return fig
