"""Attribution: which input tokens, and which state-bank slots, made the model predict a token."""

import numpy as np
import streamlit as st

from workbench import charts, state

st.title("Attribution")
state.explain(
    "<b>Integrated gradients</b> (Captum) answers “which inputs made the model say this?”. It slides each "
    "input from a neutral baseline (padding) to its real value and adds up how the target's score changed "
    "along the way; the attributions add up to the total change. Green bars pushed the prediction up, red "
    "ones down. The same method applied to the state-bank reads tells which slots the answer came from.")
ctx = state.context()
if ctx is not None:
    run, ckpt = ctx.run, ctx.ckpt
    if run.T < 2:
        st.info("Attribution needs at least two tokens.")
        st.stop()
    c1, c2, c3 = st.columns([2, 1, 1])
    pos = c1.slider("Predict the token after position", 0, run.T - 2, run.T - 2, key="attr_pos")
    what = c2.radio("Target", ["actual next token", "model's top guess"], key="attr_target")
    n_steps = c3.select_slider("IG steps", [8, 16, 32, 64], 16, key="attr_steps")
    target = run.ids[pos + 1] if what.startswith("actual") else \
        int(run.trace["predictions.top_ids"][0, pos, 0])
    st.caption(f"Target: logit of **{ckpt.tokenizer.decode([target])}** after “… "
               f"{' '.join(run.tokens[max(0, pos - 10):pos + 1])}”")
    ids = tuple(run.ids)
    try:
        attr, err = state.token_ig(str(ckpt.path), ckpt.key, ids, pos, target, int(n_steps))
        lo = max(0, pos + 1 - state.DEFAULT_WINDOW)
        if lo > 0:
            st.caption(f"Showing the last {pos + 1 - lo} tokens before the target (of {pos + 1}).")
        state.plot(charts.token_attribution_bars(range(lo, pos + 1), run.tokens[lo:pos + 1], attr[lo:],
                                                 target_pos=pos), key="attr_tokens")
        st.caption(f"Completeness check: attributions sum to the score change within {100 * err:.1f}%.")
    except Exception as e:  # noqa: BLE001
        state.show_error(e, "Token attribution failed")
    layers = ckpt.bank_layers()
    if layers:
        st.subheader("Over slots")
        layer = st.selectbox("State-bank layer", layers, key="attr_layer")
        try:
            sattr, serr = state.slot_ig(str(ckpt.path), ckpt.key, ids, int(layer), pos, target, int(n_steps))
            lo = max(0, pos + 1 - state.DEFAULT_WINDOW)
            state.plot(charts.per_slot_bars(sattr.sum(0), title=f"Layer {layer}: total attribution per slot"),
                       key="attr_slot_bars")
            state.plot(charts.slot_attribution(sattr[lo:], range(lo, pos + 1), run.tokens[lo:pos + 1],
                                               title=f"Layer {layer}: attribution to slot reads (position × slot)"),
                       key="attr_slot_heatmap")
            st.caption(f"Completeness: within {100 * serr:.1f}% of F(reads) − F(no reads).")
        except Exception as e:  # noqa: BLE001
            state.show_error(e, "Slot attribution failed")
