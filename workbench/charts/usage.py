""""What this model relies on": held-out answer accuracy with each mechanism switched off."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

MECHANISM_COLORS = {
    "state_bank": "#9467bd", "memory": "#2ca02c", "recurrent_state": "#ff7f0e", "linear_attention": "#1f77b4",
    "attention": "#1f77b4", "convolution": "#8c564b", "decay_short": "#17becf",
}


def _f(v: Any) -> float:
    return float("nan") if v is None else float(v)


def usage_bars(rows: Sequence[Mapping[str, Any]] | Any, chance: float | None = None, n: int | None = None,
               heads: bool = True, confidence: float = 0.95,
               title: str = "What this model relies on") -> go.Figure:
    """One horizontal bar per intervention of a usage table (``probes.usage``: rows as dicts or
    its DataFrame; the row with ``mechanism`` "intact" gives the reference line): answer accuracy
    with the mechanism switched off, error bars = its confidence interval; a solid line at intact
    accuracy, a dashed one at ``chance``. ``heads=False`` leaves out the per-head decay rows."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # a DataFrame
        import pandas as pd

        rows = [{k: (None if pd.api.types.is_scalar(v) and pd.isna(v) else v) for k, v in r.items()}
                for r in rows.to_dict("records")]
    rows = list(rows)
    intact = next((r for r in rows if r["mechanism"] == "intact"), None)
    if intact is None:
        raise ValueError("rows: no 'intact' row (a usage table starts with it)")
    bars = [r for r in rows if r["mechanism"] != "intact" and (heads or r.get("head") is None)]
    acc = np.array([_f(r["accuracy"]) for r in bars])
    lo = np.array([_f(r["acc_lo"]) for r in bars])
    hi = np.array([_f(r["acc_hi"]) for r in bars])
    n = n if n is not None else intact.get("n_examples")
    hover = [
        f"{r['label']}<br>accuracy {_f(r['accuracy']):.3f} [{_f(r['acc_lo']):.3f}, {_f(r['acc_hi']):.3f}]"
        f"<br>change {_f(r['delta_accuracy']):+.3f} [{_f(r['delta_acc_lo']):+.3f}, {_f(r['delta_acc_hi']):+.3f}]"
        f"<br>loss {_f(r['loss']):.3f} nats (change {_f(r['delta_loss']):+.3f})"
        f"<br>n = {r['n_examples']} examples, {r['n_answer_tokens']} answers"
        for r in bars
    ]
    fig = go.Figure(go.Bar(
        x=acc.tolist(), y=[r["label"] for r in bars], orientation="h", name="switched off",
        marker_color=[MECHANISM_COLORS.get(r["mechanism"], "#7f7f7f") for r in bars],
        error_x=dict(type="data", symmetric=False, array=np.nan_to_num(hi - acc).tolist(),
                     arrayminus=np.nan_to_num(acc - lo).tolist(), color="#333", thickness=1.2),
        hovertext=hover, hoverinfo="text",
    ))
    ia = _f(intact["accuracy"])
    fig.add_vline(x=ia, line=dict(color="#222", width=2),
                  annotation_text=f"intact {ia:.3f}", annotation_position="top right")
    if chance is not None and np.isfinite(chance):
        fig.add_vline(x=float(chance), line=dict(color="#d62728", width=1.5, dash="dash"),
                      annotation_text=f"chance {float(chance):.3f}", annotation_position="bottom right")
    sub = f" (held-out answer accuracy, n = {n} examples, error bars: {round(100 * confidence)}% bootstrap CI)" if n else ""
    fig.update_layout(title=title + sub, xaxis=dict(title="answer accuracy with it switched off", range=[0, 1.05]),
                      yaxis=dict(title="switched off", autorange="reversed", automargin=True),
                      height=140 + 26 * len(bars),
                      margin=dict(l=330, r=30, t=60, b=50), showlegend=False)
    return fig
