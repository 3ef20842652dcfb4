"""Memory reads: which entries of the key-value memory each token read, with their scores."""

import numpy as np
import streamlit as st

from workbench import charts, state

st.title("Memory reads")
state.explain(
    "The key-value memory is a circular store: token p writes its key and value into slot p mod capacity. "
    "Each later token compares its query with the stored keys and reads only the <b>top-k</b> best matches, "
    "weighted by a softmax over their scores. Dark cells show which slot a token read, and how strongly.")
ctx = state.context()
if ctx is not None and state.needs(ctx.run.trace, "memory_reads", "key-value memory"):
    run, tr = ctx.run, ctx.run.trace
    state.usage_line(ctx.ckpt, "memory")
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", sorted(state.layers_of(tr, "memory_reads")), key="memory_layer")
    value = c2.radio("Cell value", ["read weight", "score"], horizontal=True, key="memory_value")
    t0, t1 = state.window(run.T, key="memory")
    slots = tr[state.entry(tr, "memory_reads", layer, "*.hook_read_slots")][0].numpy()  # [T, k]
    vals = tr[state.entry(tr, "memory_reads", layer,
                          "*.hook_read_weights" if value == "read weight" else "*.hook_read_scores")][0].numpy()
    # the memory's capacity: its configured number of slots, else the most slots this text reached
    C = int(getattr(ctx.ckpt.config, "memory_capacity", 0) or (int(slots.max()) + 1 if slots.size else 1))
    M = np.full((C, t1 - t0), np.nan if value == "score" else 0.0)
    for j, t in enumerate(range(t0, t1)):
        for r in range(slots.shape[1]):
            if slots[t, r] >= 0:
                M[slots[t, r], j] = vals[t, r]
    state.plot(charts.memory_reads_heatmap(M, range(t0, t1), run.tokens[t0:t1],
                                           title=f"Layer {layer}: memory {value} (slot × token)", value_name=value),
               key="memory_heatmap")
    pos = state.position("Top-k reads of the token at position", t0, t1 - 1, t1 - 1, key="memory_pos")
    df = tr.frame("memory_reads")
    d = df[(df["layer"] == layer) & (df["pos"] == pos)].sort_values("rank").copy()
    if d.empty:
        st.info("This token read nothing (no earlier entry was stored yet).")
    else:
        # the entry in slot s was written by the latest earlier position p with p mod C == s
        d["written by position"] = [int(pos - 1 - ((pos - 1 - s) % C)) for s in d["slot"]]
        d["written by token"] = [run.tokens[p] if 0 <= p < run.T else "?" for p in d["written by position"]]
        st.dataframe(d[["rank", "slot", "score", "weight", "written by position", "written by token"]],
                     hide_index=True)
