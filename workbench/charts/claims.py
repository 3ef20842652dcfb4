"""Claim-check chart: one bar per claim, coloured by verdict."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go

VERDICT_COLORS = {"supported": "#2ca02c", "not supported": "#d62728", "inconclusive": "#ff7f0e"}


def claim_verdicts(results: Sequence[dict[str, Any]], title: str = "Claim checks") -> go.Figure:
    """Bars of each claim's statistic (text: statistic name and verdict), coloured by verdict."""
    names = [r["claim"] for r in results]
    vals = [float(r["value"]) if np.isfinite(r["value"]) else 0.0 for r in results]
    fig = go.Figure(go.Bar(
        x=vals, y=names, orientation="h",
        marker_color=[VERDICT_COLORS.get(r["verdict"], "#7f7f7f") for r in results],
        text=[f"{r['verdict']} ({r['statistic']} = {r['value']:.3g})" for r in results], textposition="auto",
        customdata=[r["statistic"] for r in results],
        hovertemplate="%{y}: %{customdata} = %{x:.4g}<extra></extra>",
    ))
    fig.update_layout(title=title, xaxis_title="statistic value (each claim's own statistic, see its text)",
                      yaxis=dict(title="claim", autorange="reversed", automargin=True),
                      height=120 + 50 * len(results), margin=dict(l=220, r=20, t=40, b=40))
    return fig
