"""State importance and pruning: the learned importance of each slot, and what pruning costs."""

import numpy as np
import streamlit as st
import torch

from workbench import charts, core, state

st.title("State importance & pruning")
state.explain(
    "Each slot of the state bank has a learned <b>importance</b> between 0 and 1 that scales what the slot "
    "contributes. Slots below the prune threshold are candidates for removal. Pruning here is real: a copy "
    "of the model marks the slots dead (never written, never read), the text is run again, and the chart "
    "shows how much harder each token became to predict.")
ctx = state.context()
if ctx is not None and state.needs(ctx.run.trace, "importance", "state bank", "Nothing to prune."):
    from probes import compare, prune_slots
    from probes.trace import per_token_loss

    run, ckpt = ctx.run, ctx.ckpt
    state.usage_line(ckpt, "state_bank")
    imp = run.trace.frame("importance")
    thr = float(getattr(ckpt.config, "prune_threshold", 0.0) or 0.0)
    layer = st.selectbox("Layer", sorted(imp["layer"].unique().tolist()), key="importance_layer")
    d = imp[imp["layer"] == layer].sort_values("slot")
    state.plot(charts.importance_bars(d["importance"].to_numpy(), d["alive"].to_numpy(), thr,
                                      title=f"Layer {layer}: slot importance"), key="importance_bars")

    st.subheader("Prune and see the loss change")
    how = st.radio("How", ["Pick slots", "Everything below a threshold"], horizontal=True, key="prune_how")
    alive = d[d["alive"]]
    if how == "Pick slots":
        low = alive[alive["importance"] < thr]["slot"].tolist() or \
            alive.sort_values("importance")["slot"].head(1).tolist()
        slots = st.multiselect("Slots to prune", alive["slot"].tolist(), default=low, key="prune_slots")
        label = f"prune_slots({layer}, {slots})"
    else:
        t = st.slider("Threshold (all layers)", 0.0, 1.0, thr, 0.01, key="prune_threshold")
        slots = []
        label = f"model.prune_low_importance_states({t:.2f})"
    inputs = (ckpt.key, run.text, label)  # a result shows only under the settings that made it
    if st.button("Prune (on a copy of the model)", key="prune_button", type="primary"):
        try:
            with st.spinner(f"Pruning a copy of the model ({label}) and running the text again…"):
                ids = run.input_ids()
                model = state.working_copy(ckpt)
                if how == "Pick slots":
                    if not slots:
                        raise ValueError("pick at least one slot")
                    res = compare(model, ids, [prune_slots(layer, slots)], labels=run.label_ids())
                    after = res.loss_after[0].numpy()
                    n = len(slots)
                else:
                    n = model.prune_low_importance_states(t)
                    with torch.no_grad():
                        after = per_token_loss(model(ids)["logits"].float(), run.label_ids())[0].numpy()
                st.session_state["prune_result"] = {"key": inputs, "label": label, "n": n,
                                                    "before": run.loss(), "after": after}
        except Exception as e:  # noqa: BLE001
            st.session_state.pop("prune_result", None)
            state.show_error(e, "Pruning failed")
    res = st.session_state.get("prune_result")
    if res is not None and res["key"] != inputs:
        st.session_state.pop("prune_result", None)  # stale: made with other settings
        res = None
    if res is not None:
        before, after = res["before"], res["after"]
        delta = after - before
        c = st.columns(3)
        c[0].metric("Slots pruned", res["n"])
        scored = bool(np.isfinite(before).any())
        mean_b = float(np.nanmean(before)) if scored else float("nan")
        mean_a = float(np.nanmean(after)) if scored else float("nan")
        c[1].metric("Mean loss before", core.fmt_loss(mean_b, 4))
        c[2].metric("Mean loss after", core.fmt_loss(mean_a, 4), delta=f"{mean_a - mean_b:+.4f}" if scored else None,
                    delta_color="inverse")
        if not scored:
            st.info(run.no_loss_reason())
        st.caption(f"Intervention: `{res['label']}`. Loss delta per token = after − before; losses: {run.loss_label()}.")
        t0, t1 = state.window(run.T, key="prune")
        state.plot(charts.loss_delta_bars(range(t0, t1), run.tokens[t0:t1], delta[t0:t1]), key="prune_delta")
