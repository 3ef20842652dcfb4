"""Gates over time: the state bank's update gates, the fusion gate, the recurrent input gate."""

import numpy as np
import streamlit as st

from workbench import charts, state

st.title("Gates over time")
state.explain(
    "Gates are dials between 0 and 1 that decide how much new information gets in. The state bank updates "
    "its slots at the end of each chunk of tokens: an <b>update gate</b> near 1 means the slot is overwritten "
    "by what it just read, near 0 means it keeps its old content. The <b>fusion gate</b> mixes linear "
    "attention (long range) with a local convolution (short range) at every token.")
ctx = state.context()
if ctx is not None:
    run, tr = ctx.run, ctx.run.trace
    t0, t1 = state.window(run.T, key="gates")
    from probes.frames import frame_spec

    layers = sorted(state.layers_of(tr, "gates")) if frame_spec("gates").applies(tr) else []
    if layers:
        df = tr.frame("gates")
        c1, c2 = st.columns(2)
        layer = c1.selectbox("State-bank layer", layers, key="gates_layer")
        kinds = sorted(df["gate"].unique().tolist())
        gate = c2.selectbox("Gate", kinds, index=kinds.index("update") if "update" in kinds else 0,
                            key="gates_kind")
        d = df[(df["layer"] == layer) & (df["gate"] == gate)]
        d = d[(d["pos"] >= t0) & (d["pos"] < t1)]
        if d.empty:
            st.info("No state-bank update happened inside this window (updates come at chunk ends).")
        else:
            state.plot(charts.gates_over_time(d["pos"].to_numpy(), d["slot"].to_numpy(), d["value"].to_numpy(),
                                              title=f"Layer {layer}: {gate} gate per slot (mean over state dims)",
                                              tokens=run.tokens),
                       key="gates_bank")
    else:
        st.info("This model has no state bank; showing the per-token gates only.")
    fusion = sorted(state.layers_of(tr, "fusion_gate").items()) if frame_spec("fusion_gate").applies(tr) else []
    fg = {f"layer {i}": tr[n][0, t0:t1].float().mean(-1).numpy() for i, n in fusion}
    if fg:
        state.plot(charts.token_lines(range(t0, t1), run.tokens[t0:t1], fg,
                                      title="Fusion gate (1 = linear attention, 0 = local convolution)",
                                      y_title="mean gate"), key="gates_fusion")
    else:
        st.info("No fusion gate: this model has no linear attention to mix with a local convolution (its trace "
                f"has no {'; '.join(n.describe() for n in frame_spec('fusion_gate').missing(tr))}), so "
                "there is nothing to mix with the local convolution.")
    rec = tr.frame("recurrent") if frame_spec("recurrent").applies(tr) else None
    if rec is not None and not rec.empty:
        rec = rec[(rec["sample"] == 0) & (rec["pos"] >= t0) & (rec["pos"] < t1)]
        series = {f"layer {i}": d.sort_values("pos")["input_gate_mean"].to_numpy()
                  for i, d in rec.groupby("layer")}
        state.plot(charts.token_lines(range(t0, t1), run.tokens[t0:t1], series,
                                      title="Recurrent state: input gate (how much each token writes)",
                                      y_title="mean gate"), key="gates_recurrent")
    if frame_spec("channel_gates").applies(tr):
        cg = tr.frame("channel_gates")
        cg = cg[(cg["sample"] == 0) & (cg["pos"] >= t0) & (cg["pos"] < t1)]
        names = list(dict.fromkeys(cg["gate"]))
        gname = st.selectbox("Mixer gate", names, key="gates_channel_gate") if len(names) > 1 else names[0]
        d = cg[cg["gate"] == gname]
        series = {f"layer {i}": g.sort_values("pos")["value"].to_numpy() for i, g in d.groupby("layer")}
        state.plot(charts.token_lines(range(t0, t1), run.tokens[t0:t1], series,
                                      title=f"Mixer gate {gname} per token (mean over channels)", y_title="mean gate"),
                   key="gates_channel")
    if frame_spec("channel_state").applies(tr):
        cs = tr.frame("channel_state")
        cs = cs[(cs["sample"] == 0) & (cs["pos"] >= t0) & (cs["pos"] < t1)]
        series = {f"layer {i} {s}": g.sort_values("pos")["norm"].to_numpy() for (i, s), g in cs.groupby(["layer", "state"])}
        state.plot(charts.token_lines(range(t0, t1), run.tokens[t0:t1], series,
                                      title="Recurrent state norm per token (over channels)", y_title="norm"),
                   key="gates_channel_state")
