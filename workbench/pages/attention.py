"""Decay-weighted attention: the implicit attention matrix of one linear-attention head."""

import numpy as np
import streamlit as st

from workbench import charts, state

st.title("Decay-weighted attention")
state.explain(
    "Linear attention never builds an attention matrix, but one is hidden in it: token t gives earlier "
    "token s the weight A[t, s] = γ<sup>t−s</sup> · (match of t's query with s's key) / normaliser. "
    "Each head has its own decay γ; its <b>half-life</b> is how many tokens it takes for an old token's "
    "weight to halve. Short half-lives look locally, long ones far back.")
ctx = state.context()
if ctx is not None and state.needs(
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
