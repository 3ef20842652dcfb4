"""Charts of the measured claim checks (``probes.claims.run_claim_checks`` results): one chart
per statistic, each on its own axis. Pure functions: result dicts in, Figure out."""

from __future__ import annotations

import math
from typing import Any, Sequence

import plotly.graph_objects as go

VERDICT_COLORS = {"supported": "#2ca02c", "not supported": "#d62728", "inconclusive": "#ff7f0e"}
VERDICT_ORDER = ["not supported", "inconclusive", "supported"]


def _f(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def verdict_overview(results: Sequence[dict[str, Any]], title: str = "Verdicts") -> go.Figure:
    """One marker per claim on a categorical verdict axis (no shared value axis: each
    statistic has its own chart)."""
    fig = go.Figure(go.Scatter(
        x=[r["verdict"] for r in results], y=[r["claim"] for r in results], mode="markers+text",
        marker=dict(size=18, color=[VERDICT_COLORS.get(r["verdict"], "#7f7f7f") for r in results]),
        text=[r["verdict"] for r in results], textposition="middle right",
        hovertext=[f"{r['statistic']} = {r['value']:.3g}" for r in results], hoverinfo="text+y"))
    fig.update_layout(title=title, xaxis=dict(categoryorder="array", categoryarray=VERDICT_ORDER, type="category",
                                              title="verdict"),
                      yaxis=dict(title="claim", autorange="reversed"), height=140 + 45 * len(results),
                      margin=dict(l=240, r=20, t=40, b=40))
    return fig


def effect_intervals(result: dict[str, Any], axis_title: str | None = None) -> go.Figure:
    """The claim's effect per seed with its interval, the null (0) and the negligible-effect
    threshold, on the statistic's own axis."""
    d = result["details"]
    seeds = d.get("per_seed") or []
    ys = [f"seed {p['seed']}" for p in seeds]
    x = [_f(p["value"]) for p in seeds]
    lo = [_f(p["ci_low"]) for p in seeds]
    hi = [_f(p["ci_high"]) for p in seeds]
    fig = go.Figure(go.Scatter(
        x=x, y=ys, mode="markers", marker=dict(size=10, color=[VERDICT_COLORS.get(p.get("verdict"), "#7f7f7f")
                                                             for p in seeds]),
        error_x=dict(type="data", symmetric=False,
                     array=[(h - v) if h is not None and v is not None else 0 for v, h in zip(x, hi)],
                     arrayminus=[(v - l) if l is not None and v is not None else 0 for v, l in zip(x, lo)]),
        name="estimate (95% interval)"))
    fig.add_vline(x=0, line_dash="dash", line_color="#444", annotation_text="null")
    neg = _f(d.get("negligible"))
    if neg is not None:
        fig.add_vline(x=neg, line_dash="dot", line_color="#999", annotation_text="negligible")
    why = d.get("precondition_failed")
    title = f"{result['claim']}: {result['verdict']}" + (f" ({why})" if why else "")
    fig.update_layout(title=title, xaxis_title=axis_title or result["statistic"], yaxis_title="seed",
                      height=150 + 40 * max(1, len(seeds)),
                      margin=dict(l=80, r=20, t=50, b=40), showlegend=False)
    return fig


def ablation_scatter(result: dict[str, Any]) -> go.Figure:
    """importance_predicts_ablation: each slot's importance against its ablation damage
    (answer-token loss increase, nats) with the first seed's interval."""
    pts = result["details"].get("points") or []
    y = [_f(p["delta_loss"]) for p in pts]
    ci = [(p.get("delta_loss_ci") or [(None, None)])[0] for p in pts]
    fig = go.Figure(go.Scatter(
        x=[p["importance"] for p in pts], y=y, mode="markers", text=[f"L{p['layer']} slot {p['slot']}" for p in pts],
        error_y=dict(type="data", symmetric=False,
                     array=[(_f(c[1]) - v) if _f(c[1]) is not None and v is not None else 0 for v, c in zip(y, ci)],
                     arrayminus=[(v - _f(c[0])) if _f(c[0]) is not None and v is not None else 0 for v, c in zip(y, ci)]),
        hovertemplate="%{text}: importance %{x:.3f}, damage %{y:.4g} nats<extra></extra>"))
    fig.update_layout(title="Slot importance vs ablation damage", xaxis_title="learned importance",
                      yaxis_title="answer-loss increase when ablated (nats)", height=360)
    return fig


def pruning_bars(result: dict[str, Any]) -> go.Figure:
    """pruning_beats_random: loss increase of the lowest-importance half next to each random half."""
    d = result["details"]
    rand = [_f(v) for v in d.get("delta_random") or []]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=["lowest-importance half"], y=[_f(d.get("delta_lowest"))], name="lowest half",
                         marker_color="#1f77b4"))
    fig.add_trace(go.Box(y=rand, name="random halves", boxpoints="all", marker_color="#7f7f7f"))
    fig.update_layout(title="Pruning half the slots", yaxis_title="answer-loss increase (nats)", height=360,
                      showlegend=False)
    return fig


def specialisation_bars(results: Sequence[dict[str, Any]]) -> go.Figure:
    """slot_specialisation, every bank: excess mutual information (over the shuffled baseline)
    of the argmax slot with the entity, the place, the chunk index and the position, with intervals."""
    fig = go.Figure()
    groups = [("entity", lambda r: {**r["details"], "value": r["value"]}),
              ("place", lambda r: (r["details"].get("also") or {}).get("location") or {}),
              ("chunk index", lambda r: (r["details"].get("position") or {}).get("chunk") or {}),
              ("position", lambda r: (r["details"].get("position") or {}).get("position") or {})]
    for name, get in groups:
        xs, ys, up, down = [], [], [], []
        for r in results:
            g = get(r) if r["details"].get("precondition_failed") is None else {}
            v = _f(g.get("value"))
            xs.append(r["claim"].replace("slot_specialisation ", ""))
            ys.append(v)
            up.append((_f(g.get("ci_high")) - v) if v is not None and _f(g.get("ci_high")) is not None else 0)
            down.append((v - _f(g.get("ci_low"))) if v is not None and _f(g.get("ci_low")) is not None else 0)
        fig.add_trace(go.Bar(x=xs, y=ys, name=name, error_y=dict(type="data", symmetric=False, array=up,
                                                                 arrayminus=down)))
    fig.update_layout(title="What routing follows: excess mutual information", barmode="group",
                      yaxis_title="excess MI / entropy of the category", height=380)
    return fig


def probe_bars(results: Sequence[dict[str, Any]]) -> go.Figure:
    """slot_specialisation, every bank: held-out accuracy of a linear probe from routing
    weights to the entity, against the shuffled-label probe and the majority class."""
    fig = go.Figure()
    xs = [r["claim"].replace("slot_specialisation ", "") for r in results]
    for key, name in (("accuracy", "probe"), ("shuffled_accuracy", "shuffled-label probe"),
                      ("majority_baseline", "majority class")):
        fig.add_trace(go.Bar(x=xs, y=[_f((r["details"].get("probe") or {}).get(key)) for r in results], name=name))
    fig.update_layout(title="Linear probe: routing weights -> entity", barmode="group",
                      yaxis_title="held-out accuracy", yaxis_range=[0, 1], height=360)
    return fig


def decay_scatter(result: dict[str, Any]) -> go.Figure:
    """slower_decay_attends_further: each head's half-life against its measured mean distance."""
    heads = result["details"].get("heads") or []
    fig = go.Figure(go.Scatter(
        x=[h["half_life"] for h in heads], y=[_f(h.get("mean_distance")) for h in heads], mode="markers",
        text=[f"L{h['layer']} head {h['head']}" for h in heads],
        hovertemplate="%{text}: half-life %{x:.1f}, distance %{y:.2f}<extra></extra>"))
    fig.update_layout(title="Half-life vs measured attention distance", xaxis_type="log",
                      xaxis_title="half-life (tokens, log)", yaxis_title="mean attention distance (tokens)", height=360)
    return fig
