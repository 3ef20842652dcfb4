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
if ctx is not None and state.require(
        bool(ctx.ckpt.config.use_linear_attention),
        state.lacks("linear attention", "use_linear_attention",
                    "It mixes tokens with a local convolution and its other parts only: no attention matrix is "
                    "hidden in it, and no head has a decay.")):
    from probes import decay_attention_matrix, head_summary

    run, tr, cfg = ctx.run, ctx.run.trace, ctx.ckpt.config
    state.usage_line(ctx.ckpt, "linear_attention", "decay_short")
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", list(range(cfg.num_layers)), key="attention_layer")
    head = c2.selectbox("Head", list(range(cfg.num_heads)), key="attention_head")
    t0, t1 = state.window(run.T, key="attention", default_width=96, max_width=256)
    try:
        A, ts, ss = decay_attention_matrix(tr, layer, head, window=(t0, t1), s_start=t0)
        gamma = float(tr[f"blocks.{layer}.attn.hook_decay"][head])
        hl = np.log(0.5) / np.log(gamma) if 0 < gamma < 1 else float("inf")
        st.caption(f"Layer {layer}, head {head}: γ = {gamma:.4f}, half-life ≈ {hl:.1f} tokens. "
                   "Columns start at the window; rows still include attention to earlier tokens.")
        state.plot(charts.decay_attention_heatmap(A.numpy(), ts, ss, [run.tokens[i] for i in ts],
                                                  [run.tokens[i] for i in ss],
                                                  title=f"Layer {layer}, head {head}: A[t, s]"),
                   key="attention_heatmap")
    except (KeyError, ValueError) as e:
        state.show_error(e, "Cannot build the attention matrix")
    dec = tr.frame("decay")
    state.plot(charts.half_life_bars(dec["layer"], dec["head"], dec["half_life"]), key="attention_halflife")
    with st.expander("Measured attention distance per head (this window)"):
        st.dataframe(head_summary(tr, window=(t0, t1)), hide_index=True)
