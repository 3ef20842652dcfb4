"""Token-to-state routing: which state-bank slots each token writes to (and reads from)."""

import streamlit as st

from workbench import charts, state

st.title("Token → state routing")
state.explain(
    "The state bank is a small set of memory <b>slots</b>. Every token sends (routes) its information to "
    "the slots with a set of weights that add up to 1: a dark cell means that token wrote mostly into that "
    "slot. Reading works the same way in reverse. If slots specialise, tokens of one kind (say, places) "
    "flow to the same slots — the flow chart below shows it.")
ctx = state.context()
if ctx is not None and state.needs(ctx.run.trace, "routing", "state bank", "Nothing is routed."):
    run = ctx.run
    layers = sorted(state.layers_of(run.trace, "routing"))
    state.usage_line(ctx.ckpt, "state_bank")
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", layers, key="routing_layer")
    reads = state.layers_of(run.trace, "read_weights")
    kind = c2.radio("Weights", ["write (routing)", "read"] if layer in reads else ["write (routing)"],
                    horizontal=True, key="routing_kind")
    w = run.trace[state.layers_of(run.trace, "routing")[layer] if kind.startswith("write")
                  else reads[layer]][0].numpy()  # [T, S]
    t0, t1 = state.window(run.T, key="routing")
    state.plot(charts.slot_heatmap(w[t0:t1], range(t0, t1), run.tokens[t0:t1],
                                   title=f"Layer {layer}: {kind} weights, tokens × slots"), key="routing_heatmap")
    st.subheader("Flow: token category → slot")
    st.caption("Categories are the story world's ground-truth roles for example stories, otherwise a "
               "word-list guess. Link width = total weight sent.")
    state.plot(charts.routing_sankey(run.categories[t0:t1], w[t0:t1],
                                     title=f"Layer {layer}: {kind} flow"), key="routing_sankey")
