"""One look for every chart of the workbench: a colour scale per quantity (defined here once),
token tick labels that stay readable at any length, heights sized to the data.

Colour scales, one per quantity across the app:

* ``routing``: state-bank routing / read weights, in [0, 1] (white -> dark blue);
* ``gate``: gates in [0, 1];
* ``attention``: decay-weighted attention weights A[t, s] (>= 0);
* ``memory_read``: key-value memory read weights, in [0, 1]; ``memory_score``: its raw scores;
* ``loss``: per-token loss in nats (>= 0, white -> dark red);
* ``attribution``: signed attributions, centred on 0: red = pushed the target down, green = up;
* ``loss_change``: signed loss changes, centred on 0: red = harder to predict, green = easier.

Bars of a signed quantity use the two ends of that quantity's diverging scale, so a green bar
and a green heatmap cell mean the same thing.
"""

from __future__ import annotations

import html
import math
from typing import Iterable, Sequence

import numpy as np
import plotly.graph_objects as go

POSITIVE = "#1a9641"   # green: the end of a signed scale that is "good" (supports the target, lower loss)
NEGATIVE = "#d7191c"   # red: the "bad" end (works against the target, higher loss)
NEUTRAL = "#f7f7f7"    # the 0 of a diverging scale

DIVERGING_ATTRIBUTION = [[0.0, NEGATIVE], [0.5, NEUTRAL], [1.0, POSITIVE]]  # value -> low .. high
DIVERGING_LOSS_CHANGE = [[0.0, POSITIVE], [0.5, NEUTRAL], [1.0, NEGATIVE]]

SCALES: dict[str, str | list] = {
    "routing": "Blues",
    "gate": "Greens",
    "attention": "Viridis",
    "memory_read": "Purples",
    "memory_score": "Cividis",
    "loss": "Reds",
    "attribution": DIVERGING_ATTRIBUTION,
    "loss_change": DIVERGING_LOSS_CHANGE,
}
# the natural colour range of a bounded quantity: every chart of it uses the same range, so two
# heatmaps side by side (before / after, run A / run B) compare by colour
RANGES: dict[str, tuple[float, float]] = {"routing": (0.0, 1.0), "gate": (0.0, 1.0), "memory_read": (0.0, 1.0)}
SIGNED = {"attribution", "loss_change"}

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]

MAX_TICK_LABELS = 40   # at most this many token labels on an axis; the hover shows every token
TICK_PX = 15           # vertical pixels one horizontal tick label needs
LABEL_CHARS = 14       # longer tokens are cut in tick labels (never in the hover)


def colorscale(quantity: str) -> str | list:
    return SCALES[quantity]


def signed_color(value: float, quantity: str = "attribution") -> str:
    """Bar colour of a signed value: the matching end of the quantity's diverging scale."""
    scale = SCALES[quantity]
    return scale[-1][1] if value > 0 or (value == 0 and quantity == "attribution") else scale[0][1]


def shared_range(*arrays: Iterable[float]) -> tuple[float, float]:
    """(min, max) over all finite values of all arrays: one colour range for charts to compare."""
    vals = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays]) if arrays else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return 0.0, 1.0
    lo, hi = float(vals.min()), float(vals.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def symmetric_range(a: Iterable[float]) -> tuple[float, float]:
    """(-m, m) with m = the largest finite |value| (1 when there is none): 0 at the scale's middle."""
    v = np.asarray(a, dtype=float)
    v = v[np.isfinite(v)]
    m = float(np.abs(v).max()) if v.size else 0.0
    m = m if m > 0 else 1.0
    return -m, m


def esc(token: object) -> str:
    """A token as hover / tick text: HTML-escaped (``<eos>`` would vanish otherwise), newlines shown."""
    return html.escape(str(token), quote=False).replace("\n", "↵").replace("\t", "⇥")


def short(token: object, n: int = LABEL_CHARS) -> str:
    s = str(token).replace("\n", "↵").replace("\t", "⇥")
    return esc(s if len(s) <= n else s[: n - 1] + "…")


def thin(n: int, max_labels: int = MAX_TICK_LABELS) -> list[int]:
    """Indices of the tick labels to show out of ``n``: all when ``n <= max_labels``, otherwise
    every k-th (k = ceil(n / max_labels)), starting at 0."""
    max_labels = max(1, int(max_labels))
    step = max(1, math.ceil(n / max_labels))
    return list(range(0, n, step))


def token_axis(fig: go.Figure, positions: Sequence[int], tokens: Sequence[str], axis: str = "x",
               title: str = "token position", max_labels: int | None = None) -> None:
    """Token strings as tick labels at their positions (the axis values stay the positions).
    At most ``max_labels`` (default :data:`MAX_TICK_LABELS`) are shown; when thinned, each label
    also gives its position ("tok @12"). x labels are slanted, y labels horizontal."""
    positions, tokens = list(positions), list(tokens)
    if len(positions) != len(tokens):
        raise ValueError(f"tokens: expected {len(positions)} (one per position), got {len(tokens)}")
    keep = thin(len(positions), MAX_TICK_LABELS if max_labels is None else max_labels)
    thinned = len(keep) < len(positions)
    text = [short(tokens[i]) + (f" @{int(positions[i])}" if thinned else "") for i in keep]
    ax = dict(title=dict(text=title), tickmode="array", tickvals=[positions[i] for i in keep], ticktext=text,
              tickfont=dict(size=10), automargin=True, showgrid=False)
    if axis == "x":
        ax["tickangle"] = -60 if len(keep) > 8 else 0
    fig.update_layout(**{f"{axis}axis": ax})


def index_axis(fig: go.Figure, values: Sequence[int], axis: str, title: str, max_labels: int,
               prefix: str = "") -> None:
    """Integer indices (slots) as ticks, thinned to at most ``max_labels``."""
    values = list(values)
    keep = thin(len(values), max_labels)
    fig.update_layout(**{f"{axis}axis": dict(title=dict(text=title), tickmode="array",
                                             tickvals=[values[i] for i in keep],
                                             ticktext=[f"{prefix}{values[i]}" for i in keep],
                                             automargin=True, showgrid=False)})


def labels_fit(plot_px: float) -> int:
    """How many horizontal tick labels fit along ``plot_px`` pixels (at most MAX_TICK_LABELS)."""
    return max(2, min(MAX_TICK_LABELS, int(plot_px // TICK_PX)))


def rows_height(n_rows: int, row_px: float = 22.0, min_row_px: float = 6.0, max_plot_px: float = 560.0,
                extra: float = 200.0) -> tuple[int, int]:
    """(figure height, plot-area height) for a heatmap of ``n_rows`` rows: ``row_px`` per row while
    that fits in ``max_plot_px``, then rows shrink (down to ``min_row_px``): never 64 x 22 px tall."""
    n_rows = max(1, int(n_rows))
    per = max(min_row_px, min(row_px, max_plot_px / n_rows))
    plot = max(60.0, per * n_rows)
    return int(round(plot + extra)), int(round(plot))


def nice_log_ticks(values: Iterable[float], max_ticks: int = 10) -> list[float]:
    """Clear tick values for a log axis covering ``values``: 1-2-5 per decade (just the decades
    when that would be more than ``max_ticks``), from the largest tick <= min to the smallest >= max."""
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if not v.size:
        return [1.0, 10.0]
    lo, hi = float(v.min()), float(v.max())
    for mants in ((1, 2, 5), (1, 3), (1,)):
        e0, e1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
        cand = sorted({float(f"{m}e{e}") for e in range(e0, e1 + 1) for m in mants})
        below = [c for c in cand if c <= lo * (1 + 1e-9)]
        above = [c for c in cand if c >= hi * (1 - 1e-9)]
        start, stop = below[-1], above[0]
        ticks = [c for c in cand if start <= c <= stop]
        if stop == start:
            ticks = [start, next(c for c in cand if c > start)]
        if len(ticks) <= max_ticks:
            return ticks
    return ticks


def fmt_tick(v: float) -> str:
    return f"{v:,.0f}" if v >= 1 else f"{v:g}"


def rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"
