"""State-bank and memory charts: routing heatmap and flow, gates over time, importance,
memory reads, slot attributions. Pure functions: arrays in, Figure out."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from workbench.charts import style
from workbench.charts.style import PALETTE, esc
from workbench.charts.tokens import _ticks

_rgba = style.rgba


def _quantity_of(colorscale, value_name: str) -> str:
    """The quantity (key of ``style.SCALES``) a slot heatmap shows."""
    for q, s in style.SCALES.items():
        if colorscale is not None and s == colorscale:
            return q
    return "routing" if colorscale is None else ""


def slot_heatmap(weights: np.ndarray, positions: Sequence[int], tokens: Sequence[str],
                 title: str = "Token-to-slot routing", value_name: str = "weight",
                 colorscale: str | list | None = None, slot_label: str = "slot", *,
                 zmin: float | None = None, zmax: float | None = None, zmid: float | None = None,
                 slots: Sequence[int] | None = None) -> go.Figure:
    """Heatmap of ``weights`` [T, S]: rows = slots (slot 0 on top), columns = token positions;
    ``z[s][j] = weights[j, s]``. Default colour scale and range: the routing weights' own
    (``style.SCALES["routing"]``, 0 to 1), the same on every chart, so before / after compare.
    ``slots``: the slot index of each column of ``weights`` (default 0..S-1)."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2:
        raise ValueError(f"weights: expected [T, S], got shape {w.shape}")
    T, S = w.shape
    positions = list(positions)
    if len(positions) != T or len(tokens) != T:
        raise ValueError(f"weights: expected [{len(positions)} positions, S] with one token each, got shape "
                         f"{w.shape} and {len(tokens)} tokens")
    slot_ids = list(range(S)) if slots is None else [int(s) for s in slots]
    quantity = _quantity_of(colorscale, value_name)
    scale = style.SCALES["routing"] if colorscale is None else colorscale
    lo, hi = style.RANGES.get(quantity, (None, None))
    finite = w[np.isfinite(w)]
    if lo is not None and finite.size and (finite.min() < lo or finite.max() > hi):
        lo, hi = None, None  # not the bounded quantity after all: fall back to the data's range
    zmin = lo if zmin is None else zmin
    zmax = hi if zmax is None else zmax
    tok = [esc(t) for t in tokens]
    height, plot_px = style.rows_height(S)
    fig = go.Figure(go.Heatmap(
        z=[[None if not np.isfinite(v) else float(v) for v in row] for row in w.T], x=positions, y=slot_ids,
        colorscale=scale, zmin=zmin, zmax=zmax, zmid=zmid,
        customdata=[tok for _ in range(S)],
        hovertemplate=f"pos %{{x}}: %{{customdata}}<br>{slot_label} %{{y}}<br>{value_name} %{{z:.3f}}<extra></extra>",
        colorbar=dict(title=value_name, thickness=12),
    ))
    fig.update_layout(title=title, height=height, margin=dict(l=60, r=20, t=40, b=60))
    fig.update_yaxes(type="category", autorange="reversed")
    style.index_axis(fig, slot_ids, "y", slot_label, style.labels_fit(plot_px))
    _ticks(fig, positions, tokens)
    return fig


def routing_sankey(categories: Sequence[str], weights: np.ndarray, title: str = "Where each kind of token goes",
                   height: int | None = None) -> go.Figure:
    """Sankey from token category (left, sorted by name) to slot (right, in slot order 0, 1, ...
    from the top); link width = the total routing weight that tokens of that category send to
    that slot, link colour = the category's. Node labels sit outside the flows (left of the
    categories, right of the slots); hovering a node or a link gives its totals."""
    w = np.asarray(weights, dtype=float)
    cats = [str(c) for c in categories]
    if w.ndim != 2 or w.shape[0] != len(cats):
        raise ValueError(f"weights: expected [{len(cats)}, S], got shape {w.shape}")
    S = w.shape[1]
    names = sorted(set(cats))
    C = len(names)
    src, dst, val = [], [], []
    cat_tot = np.zeros(C)
    for ci, c in enumerate(names):
        tot = w[[i for i, x in enumerate(cats) if x == c]].sum(0)
        cat_tot[ci] = tot.sum()
        for s in range(S):
            if tot[s] > 1e-9:
                src.append(ci)
                dst.append(C + s)
                val.append(float(tot[s]))
    slot_tot = w.sum(0) if len(cats) else np.zeros(S)
    # only linked nodes: plotly drops a node without links, which would shift the x / y given
    # below onto the wrong nodes
    used_c = [ci for ci in range(C) if ci in set(src)]
    used_s = [s for s in range(S) if C + s in set(dst)]
    node_of = {ci: k for k, ci in enumerate(used_c)} | {C + s: len(used_c) + k for k, s in enumerate(used_s)}
    labels = [names[ci] for ci in used_c] + [f"slot {s}" for s in used_s]
    colors = [PALETTE[ci % len(PALETTE)] for ci in used_c] + ["#9e9e9e"] * len(used_s)
    link_colors = [_rgba(PALETTE[c % len(PALETTE)], 0.45) for c in src]
    # fixed layout: each column stacked top to bottom in its order (categories by name, slots
    # by index), node heights as the sankey draws them (value * ky); x, y are node centres
    n_max = max(len(used_c), len(used_s), 1)
    if height is None:
        height = int(min(1100, max(360, 80 + 26 * n_max)))
    top, bottom = 50, 20
    plot_h = height - top - bottom
    pad = min(12.0, 0.5 * plot_h / n_max)
    total = float(max(sum(val), 1e-9))
    ky = (plot_h - (n_max - 1) * pad) / total

    def centres(vals) -> list[float]:
        hs = np.maximum(np.asarray(vals, dtype=float), 0) * ky
        if len(hs) == 0:
            return []
        gap = (plot_h - hs.sum()) / (len(hs) - 1) if len(hs) > 1 else 0.0
        y, out = (0.0 if len(hs) > 1 else (plot_h - hs.sum()) / 2), []
        for h in hs:
            out.append(min(0.999, max(0.001, (y + h / 2) / plot_h)))
            y += h + gap
        return out

    xs = [0.001] * len(used_c) + [0.999] * len(used_s)
    ys = centres(cat_tot[used_c]) + centres(slot_tot[used_s])
    hover = [f"{esc(names[ci])}: sends {cat_tot[ci]:.2f}" for ci in used_c] + \
            [f"slot {s}: receives {slot_tot[s]:.2f}" for s in used_s]
    fig = go.Figure(go.Sankey(
        arrangement="fixed",
        node=dict(label=[""] * len(labels), color=colors, pad=pad, thickness=14, x=xs, y=ys,
                  customdata=hover, hovertemplate="%{customdata}<extra></extra>"),
        link=dict(source=[node_of[a] for a in src], target=[node_of[b] for b in dst], value=val,
                  color=link_colors,
                  customdata=[f"{esc(names[a])} → slot {b - C}" for a, b in zip(src, dst)],
                  hovertemplate="%{customdata}: weight %{value:.2f}<extra></extra>"),
    ))
    # labels outside the flows: categories left of their node, slots right of theirs
    for i, (lab, y) in enumerate(zip(labels, ys)):
        left = i < len(used_c)
        fig.add_annotation(x=0 if left else 1, y=1 - y, xref="paper", yref="paper", text=esc(lab),
                           showarrow=False, xanchor="right" if left else "left", xshift=-10 if left else 10,
                           font=dict(size=12))
    fig.update_layout(title=title, height=height, margin=dict(l=130, r=70, t=top, b=bottom))
    return fig


def gates_over_time(positions: np.ndarray, slots: np.ndarray, values: np.ndarray,
                    title: str = "Gate value per slot over time", value_name: str = "gate",
                    tokens: Sequence[str] | None = None) -> go.Figure:
    """One line per slot: gate value (mean over the state dims) at each update position.
    ``tokens``: the run's tokens, indexed by position (for the hover)."""
    positions, slots, values = (np.asarray(a) for a in (positions, slots, values))
    fig = go.Figure()
    for s in sorted(set(slots.tolist())):
        m = slots == s
        order = np.argsort(positions[m], kind="stable")
        p = positions[m][order].astype(int).tolist()
        tok = [esc(tokens[i]) if tokens is not None and 0 <= i < len(tokens) else "" for i in p]
        fig.add_trace(go.Scatter(x=p, y=values[m][order].astype(float).tolist(),
                                 mode="lines+markers", name=f"slot {s}", customdata=tok,
                                 line=dict(color=PALETTE[int(s) % len(PALETTE)]),
                                 hovertemplate="pos %{x}: %{customdata}<br>" + f"slot {s}<br>{value_name} "
                                 + "%{y:.3f}<extra></extra>"))
    v = values.astype(float)
    rng = [0, 1.02] if v.size and np.nanmin(v) >= 0 and np.nanmax(v) <= 1 else None
    fig.update_layout(title=title, xaxis_title="token position (state update at chunk end)",
                      yaxis=dict(title=f"{value_name} (0 to 1)" if rng else value_name, range=rng),
                      legend_title_text="slot", height=340, margin=dict(l=50, r=20, t=40, b=40))
    return fig


def token_lines(positions: Sequence[int], tokens: Sequence[str], series: dict[str, Sequence[float]],
                title: str = "Per-token gate", y_title: str = "value",
                y_range: Sequence[float] | None = None) -> go.Figure:
    """One line per named series over token positions (e.g. fusion gate per layer). The y axis
    spans 0 to 1 when every value lies there (gates), unless ``y_range`` is given."""
    positions = list(positions)
    fig = go.Figure()
    allv = []
    for i, (name, ys) in enumerate(series.items()):
        ys = np.asarray(ys, float)
        if len(ys) != len(positions):
            raise ValueError(f"series {name!r}: expected {len(positions)} values, got {len(ys)}")
        allv.append(ys)
        fig.add_trace(go.Scatter(x=positions, y=ys.tolist(), mode="lines", name=name,
                                 line=dict(color=PALETTE[i % len(PALETTE)]), customdata=[esc(t) for t in tokens],
                                 hovertemplate="pos %{x}: %{customdata}<br>" + y_title + " %{y:.3f}<extra>" + name
                                 + "</extra>"))
    if y_range is None and allv:
        v = np.concatenate(allv)
        v = v[np.isfinite(v)]
        if v.size and v.min() >= 0 and v.max() <= 1:
            y_range = (0, 1.02)
    fig.update_layout(title=title, yaxis=dict(title=y_title, range=list(y_range) if y_range else None), height=340,
                      margin=dict(l=50, r=20, t=40, b=60))
    _ticks(fig, positions, tokens)
    return fig


def importance_bars(importance: Sequence[float], alive: Sequence[bool], threshold: float | None = None,
                    title: str = "Learned slot importance") -> go.Figure:
    """Bars of each slot's importance; dead (pruned) slots grey; the prune threshold dashed."""
    imp = np.asarray(importance, dtype=float)
    alive = np.asarray(alive, dtype=bool)
    colors = [PALETTE[0] if a else "#cccccc" for a in alive]
    fig = go.Figure(go.Bar(x=list(range(len(imp))), y=imp.tolist(), marker_color=colors,
                           customdata=["alive" if a else "pruned" for a in alive],
                           hovertemplate="slot %{x}: importance %{y:.3f} (%{customdata})<extra></extra>"))
    if threshold is not None:
        fig.add_hline(y=threshold, line_dash="dash", line_color="#555",
                      annotation_text=f"prune threshold {threshold:g}")
    fig.update_layout(title=title, yaxis=dict(title="importance (sigmoid, 0 to 1)", range=[0, 1]),
                      height=300, margin=dict(l=50, r=20, t=40, b=40))
    style.index_axis(fig, list(range(len(imp))), "x", "slot", 40)
    return fig


def memory_reads_heatmap(weights: np.ndarray, positions: Sequence[int], tokens: Sequence[str],
                         title: str = "Memory reads (slot x token)", value_name: str = "read weight",
                         only_read: bool = True) -> go.Figure:
    """``weights`` [capacity, T]: how strongly each token read each memory slot (0 or NaN = not
    read). ``only_read``: rows only for the slots read at least once in the window (the y axis
    keeps their slot numbers), so the chart is as tall as the data. Read weights use
    ``style.SCALES["memory_read"]`` on 0 to 1; scores their own scale on their data range."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2:
        raise ValueError(f"weights: expected [capacity, T], got shape {w.shape}")
    C = w.shape[0]
    rows = list(range(C))
    if only_read:
        read = [s for s in rows if np.any(np.isfinite(w[s]) & (w[s] != 0))]
        rows = read or rows
    score = "score" in value_name
    label = f"memory slot ({len(rows)} of {C} read)" if only_read and len(rows) < C else "memory slot"
    return slot_heatmap(w[rows].T, positions, tokens, title=title, value_name=value_name,
                        colorscale=style.SCALES["memory_score" if score else "memory_read"], slot_label=label,
                        slots=rows)


def slot_attribution(attributions: np.ndarray, positions: Sequence[int], tokens: Sequence[str],
                     title: str = "Attribution to slot reads (position x slot)") -> go.Figure:
    """Signed heatmap of attributions [T, S] on the app's one attribution scale (red = negative,
    white = 0, green = positive, symmetric range), the same colours as the attribution bars."""
    a = np.asarray(attributions, dtype=float)
    lo, hi = style.symmetric_range(a)
    return slot_heatmap(a, positions, tokens, title=title, value_name="attribution",
                        colorscale=style.SCALES["attribution"], zmin=lo, zmax=hi, zmid=0)


def per_slot_bars(values: Sequence[float], title: str = "Total attribution per slot", y_title: str = "attribution"
                  ) -> go.Figure:
    """Signed bars per slot, green = positive, red = negative (``style.SCALES["attribution"]``)."""
    v = np.asarray(values, dtype=float)
    fig = go.Figure(go.Bar(x=list(range(len(v))), y=v.tolist(),
                           marker_color=[style.signed_color(x, "attribution") for x in v],
                           hovertemplate="slot %{x}: " + y_title + " %{y:.4f}<extra></extra>"))
    fig.update_layout(title=title, yaxis_title=y_title, height=280, margin=dict(l=50, r=20, t=40, b=40))
    style.index_axis(fig, list(range(len(v))), "x", "slot", 40)
    return fig
