"""Decay-weighted attention: the implicit attention matrix of one linear-attention head."""

import numpy as np
import pandas as pd
import streamlit as st

from probes.frames import frame_spec
from workbench import charts, state

st.title("Decay-weighted attention")
state.explain(
    "Linear attention never builds an attention matrix, but one is hidden in it: token t gives earlier "
    "token s the weight A[t, s] = γ<sup>t−s</sup> · (match of t's query with s's key) / normaliser. "
    "Each head has its own decay γ; its <b>half-life</b> is how many tokens it takes for an old token's "
    "weight to halve. Short half-lives look locally, long ones far back.")
ctx = state.context()
implicit = ctx is not None and not frame_spec("decay_attention").applies(ctx.run.trace) and \
    state.has_implicit_attention(ctx.ckpt)
if implicit:
    run, tr = ctx.run, ctx.run.trace
    st.markdown("This model mixes tokens with a per-channel recurrence; unrolled, each channel (or head) of a "
                "layer's mixer is an exact attention matrix A[t, s] over earlier tokens: the core's output is "
                "A @ values (times its gate). The residual checks it against the layer's own output.")
    dec = tr.frame("channel_decay") if frame_spec("channel_decay").applies(tr) else None
    layers = sorted(state.layers_of(tr, "channel_decay")) if dec is not None else [0]
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", layers, key="attention_layer")
    units = sorted(int(u) for u in dec.loc[dec["layer"] == layer, "unit"].unique()) if dec is not None else [0]
    channel = c2.selectbox("Channel / head", units, key="attention_channel")
    t0, t1 = state.window(run.T, key="attention", default_width=96, max_width=256)
    try:
        ia = state.implicit_attention(ctx.ckpt, run, layer, channel)
        A = ia["matrix"][t0:t1, t0:t1]
        ts = list(range(t0, t1))
        m1, m2 = st.columns(2)
        m1.metric("Reconstruction residual", f"{ia['residual']:.2e}",
                  help="||A @ V − core output|| / ||core output|| for this channel (exact: ~1e-7 in fp32).")
        m2.metric("Largest error", f"{ia['max_abs_error']:.2e}")
        st.caption(f"Layer {layer}, {ia['unit']} {channel}: {ia['notes']}.")
        state.plot(charts.decay_attention_heatmap(A, ts, ts, [run.tokens[i] for i in ts], [run.tokens[i] for i in ts],
                                                  title=f"Layer {layer}, {ia['unit']} {channel}: implicit A[t, s]",
                                                  zmin=None),
                   key="attention_implicit")
    except (KeyError, ValueError, RuntimeError) as e:
        state.show_error(e, "Cannot build the implicit attention")
    if dec is not None:
        per = dec.groupby(["layer", "unit"], as_index=False)["half_life"].median()
        if per["unit"].nunique() > 64:  # many channels: the quantiles of each layer, not one bar each
            q = np.linspace(0, 1, 11)
            per = pd.DataFrame([{"layer": l, "unit": i, "half_life": v} for l, d in per.groupby("layer")
                                for i, v in enumerate(np.quantile(d["half_life"], q))])
            title = "Half-life per layer: deciles over channels (tokens per unit step, log scale)"
            names = {i: ("min" if i == 0 else "max" if i == 10 else f"{10 * i}th pct") for i in range(11)}
            unit = "decile over channels"
        else:
            title = "Half-life of each channel (median over its state dims; per unit step, log scale)"
            names, unit = None, "channel"
        state.plot(charts.half_life_bars(per["layer"], per["unit"], per["half_life"], title=title,
                                         unit_labels=names, unit_title=unit), key="attention_halflife")
        with st.expander("Decay and half-life per channel (every layer)"):
            st.dataframe(dec, hide_index=True)
elif ctx is not None and state.needs(
        ctx.run.trace, "decay_attention", "linear attention",
        "It mixes tokens without per-head decayed query-key features: no attention matrix of this kind is "
        "hidden in it, and no head has a decay."):
    from probes import decay_attention_matrix, head_summary

    run, tr = ctx.run, ctx.run.trace
    dec = tr.frame("decay")
    state.usage_line(ctx.ckpt, "linear_attention", "decay_short")
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", sorted(state.layers_of(tr, "decay_attention")), key="attention_layer")
    heads = sorted(int(h) for h in dec.loc[dec["layer"] == layer, "head"].unique())
    head = c2.selectbox("Head", heads, key="attention_head")
    t0, t1 = state.window(run.T, key="attention", default_width=96, max_width=256)
    try:
        A, ts, ss = decay_attention_matrix(tr, layer, head, window=(t0, t1), s_start=t0)
        gamma = float(dec.loc[(dec["layer"] == layer) & (dec["head"] == head), "gamma"].iloc[0])
        hl = np.log(0.5) / np.log(gamma) if 0 < gamma < 1 else float("inf")
        st.caption(f"Layer {layer}, head {head}: γ = {gamma:.4f}, half-life ≈ {hl:.1f} tokens. "
                   "Columns start at the window; rows still include attention to earlier tokens.")
        state.plot(charts.decay_attention_heatmap(A.numpy(), ts, ss, [run.tokens[i] for i in ts],
                                                  [run.tokens[i] for i in ss],
                                                  title=f"Layer {layer}, head {head}: A[t, s]"),
                   key="attention_heatmap")
    except (KeyError, ValueError) as e:
        state.show_error(e, "Cannot build the attention matrix")
    state.plot(charts.half_life_bars(dec["layer"], dec["head"], dec["half_life"]), key="attention_halflife")
    with st.expander("Measured attention distance per head (this window)"):
        st.dataframe(head_summary(tr, window=(t0, t1)), hide_index=True)
