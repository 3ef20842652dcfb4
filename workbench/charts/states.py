"""State-bank and memory charts: routing heatmap and flow, gates over time, importance,
memory reads, slot attributions. Pure functions: arrays in, Figure out."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from workbench.charts.tokens import _ticks

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def slot_heatmap(weights: np.ndarray, positions: Sequence[int], tokens: Sequence[str],
                 title: str = "Token-to-slot routing", value_name: str = "weight",
                 colorscale: str = "Blues", slot_label: str = "slot") -> go.Figure:
    """Heatmap of ``weights`` [T, S]: rows = slots, columns = token positions."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2:
        raise ValueError(f"weights: expected [T, S], got shape {w.shape}")
    T, S = w.shape
    tok = [str(t) for t in tokens]
    fig = go.Figure(go.Heatmap(
        z=w.T.tolist(), x=list(positions), y=list(range(S)), colorscale=colorscale,
        customdata=[tok for _ in range(S)],
        hovertemplate=f"pos %{{x}}: %{{customdata}}<br>{slot_label} %{{y}}<br>{value_name} %{{z:.3f}}<extra></extra>",
        colorbar=dict(title=value_name, thickness=12),
    ))
    fig.update_layout(title=title, yaxis=dict(title=slot_label, dtick=1), height=120 + 22 * S + 80,
                      margin=dict(l=50, r=20, t=40, b=60))
    _ticks(fig, positions, tokens)
    return fig


def routing_sankey(categories: Sequence[str], weights: np.ndarray, title: str = "Where each kind of token goes"
                   ) -> go.Figure:
    """Sankey from token category (left) to slot (right); link width = the total routing
    weight that tokens of that category send to that slot."""
    w = np.asarray(weights, dtype=float)
    cats = [str(c) for c in categories]
    if w.ndim != 2 or w.shape[0] != len(cats):
        raise ValueError(f"weights: expected [{len(cats)}, S], got shape {w.shape}")
    S = w.shape[1]
    names = sorted(set(cats))
    src, dst, val = [], [], []
    for ci, c in enumerate(names):
        rows = w[[i for i, x in enumerate(cats) if x == c]]
        tot = rows.sum(0)
        for s in range(S):
            if tot[s] > 1e-9:
                src.append(ci)
                dst.append(len(names) + s)
                val.append(float(tot[s]))
    labels = names + [f"slot {s}" for s in range(S)]
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(names))] + ["#aaaaaa"] * S
    link_colors = [_rgba(PALETTE[(d - len(names)) % len(PALETTE)], 0.4) for d in dst]
    fig = go.Figure(go.Sankey(
        node=dict(label=labels, color=colors, pad=12, thickness=16),
        link=dict(source=src, target=dst, value=val, color=link_colors,
                  hovertemplate="%{source.label} → %{target.label}: %{value:.2f}<extra></extra>"),
    ))
    fig.update_layout(title=title, height=420, margin=dict(l=20, r=20, t=40, b=20))
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def gates_over_time(positions: np.ndarray, slots: np.ndarray, values: np.ndarray,
                    title: str = "Gate value per slot over time", value_name: str = "gate") -> go.Figure:
    """One line per slot: gate value (mean over the state dims) at each update position."""
    positions, slots, values = (np.asarray(a) for a in (positions, slots, values))
    fig = go.Figure()
    for s in sorted(set(slots.tolist())):
        m = slots == s
        order = np.argsort(positions[m], kind="stable")
        fig.add_trace(go.Scatter(x=positions[m][order].tolist(), y=values[m][order].astype(float).tolist(),
                                 mode="lines+markers", name=f"slot {s}",
                                 line=dict(color=PALETTE[int(s) % len(PALETTE)])))
    fig.update_layout(title=title, xaxis_title="token position (update)", yaxis=dict(title=value_name),
                      height=340, margin=dict(l=50, r=20, t=40, b=40))
    return fig


def token_lines(positions: Sequence[int], tokens: Sequence[str], series: dict[str, Sequence[float]],
                title: str = "Per-token gate", y_title: str = "value") -> go.Figure:
    """One line per named series over token positions (e.g. fusion gate per layer)."""
    fig = go.Figure()
    for i, (name, ys) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=list(positions), y=np.asarray(ys, float).tolist(), mode="lines", name=name,
                                 line=dict(color=PALETTE[i % len(PALETTE)]), customdata=[str(t) for t in tokens],
                                 hovertemplate="pos %{x}: %{customdata}<br>%{y:.3f}<extra>" + name + "</extra>"))
    fig.update_layout(title=title, yaxis_title=y_title, height=320, margin=dict(l=50, r=20, t=40, b=60))
    _ticks(fig, positions, tokens)
    return fig


def importance_bars(importance: Sequence[float], alive: Sequence[bool], threshold: float | None = None,
                    title: str = "Learned slot importance") -> go.Figure:
    """Bars of each slot's importance; dead (pruned) slots grey; the prune threshold dashed."""
    imp = np.asarray(importance, dtype=float)
    alive = np.asarray(alive, dtype=bool)
    colors = ["#1f77b4" if a else "#cccccc" for a in alive]
    fig = go.Figure(go.Bar(x=list(range(len(imp))), y=imp.tolist(), marker_color=colors,
                           customdata=["alive" if a else "pruned" for a in alive],
                           hovertemplate="slot %{x}: %{y:.3f} (%{customdata})<extra></extra>"))
    if threshold is not None:
        fig.add_hline(y=threshold, line_dash="dash", line_color="#d62728",
                      annotation_text=f"prune threshold {threshold:g}")
    fig.update_layout(title=title, xaxis=dict(title="slot", dtick=1), yaxis=dict(title="importance", range=[0, 1]),
                      height=300, margin=dict(l=50, r=20, t=40, b=40))
    return fig


def memory_reads_heatmap(weights: np.ndarray, positions: Sequence[int], tokens: Sequence[str],
                         title: str = "Memory reads (slot x token)", value_name: str = "read weight") -> go.Figure:
    """``weights`` [capacity, T]: how strongly each token read each memory slot (0 = not read)."""
    w = np.asarray(weights, dtype=float)
    return slot_heatmap(w.T, positions, tokens, title=title, value_name=value_name, colorscale="Purples",
                        slot_label="memory slot")


def slot_attribution(attributions: np.ndarray, positions: Sequence[int], tokens: Sequence[str],
                     title: str = "Attribution to slot reads (position x slot)") -> go.Figure:
    """Signed heatmap of attributions [T, S] with a diverging colour scale centred on 0."""
    a = np.asarray(attributions, dtype=float)
    m = float(np.abs(a).max()) if a.size else 1.0
    fig = slot_heatmap(a, positions, tokens, title=title, value_name="attribution", colorscale="RdBu")
    fig.update_traces(zmid=0, zmin=-m, zmax=m)
    return fig


def per_slot_bars(values: Sequence[float], title: str = "Total attribution per slot", y_title: str = "attribution"
                  ) -> go.Figure:
    v = np.asarray(values, dtype=float)
    fig = go.Figure(go.Bar(x=list(range(len(v))), y=v.tolist(),
                           marker_color=["#2ca02c" if x >= 0 else "#d62728" for x in v]))
    fig.update_layout(title=title, xaxis=dict(title="slot", dtick=1), yaxis_title=y_title, height=280,
                      margin=dict(l=50, r=20, t=40, b=40))
    return fig
