"""Interventions: change one internal quantity and see what changes downstream."""

import numpy as np
import streamlit as st
import torch

from workbench import charts, core, state

st.title("Interventions")
state.explain(
    "Looking is not proof: to test what a part of the model does, change it and watch. <b>Ablate</b> removes "
    "one slot from every read; <b>prune</b> kills slots outright; <b>clamp</b> pins a gate to a constant; "
    "<b>memory off</b> silences the key-value memory; <b>set decay</b> changes how fast a head forgets; "
    "<b>patch</b> copies an internal value from another text. Each runs on a private copy of the model, "
    "before and after are shown side by side.")


@st.cache_data(show_spinner="Running the text with the intervention on a copy of the model…", show_time=True,
               max_entries=32)
def _apply(path: str, key: str, text: str, inputs: tuple, _ivs: list, _ids, _labels, loss_name: str,
           banks: bool):
    """(CompareResult, trace of the state-bank reads after or None) of ``_ivs`` on the run;
    cached by ``inputs`` (checkpoint, text, kind, intervention and its source), so applying
    settings again, or going back to them, costs nothing."""
    from probes import compare, intervene, run_with_trace

    model = state.working_copy(state.load(path))
    res = compare(model, _ids, _ivs, labels=_labels, loss_name=loss_name)
    after_tr = None
    if banks:
        from probes.frames import frame_hooks

        with intervene(model, *_ivs):
            _, after_tr = run_with_trace(model, _ids, names=frame_hooks(["read_weights"]))
    return res, after_tr


ctx = state.context()
if ctx is not None:
    from probes import ablate_slot, clamp_gate, memory_off, patch_activation, prune_slots, set_decay
    from probes.frames import frame_spec

    run, ckpt, tr = ctx.run, ctx.ckpt, ctx.run.trace
    sites = ckpt.sites
    # what this model's trace has decides what can be changed (probes.frames), not its config
    banks = sorted(state.layers_of(tr, "read_weights")) if frame_spec("read_weights").applies(tr) else []
    imp = tr.frame("importance") if frame_spec("importance").applies(tr) else None
    n_slots = int(imp["slot"].max()) + 1 if imp is not None and not imp.empty else 0
    mem_layers = sorted(state.layers_of(tr, "memory_reads")) if frame_spec("memory_reads").applies(tr) else []
    dec = tr.frame("decay") if frame_spec("decay_attention").applies(tr) else None
    # gates of the per-token or per-update kind the model declares (the FFN's GLU gate is no dial)
    gates = [n for n, s in sites.items() if s.kind == "gate" and "d_ff" not in s.layout]
    # the residual stream (or, without one, each block's output to it): what a patch copies
    patchable = [n for n, s in sites.items() if s.kind == "residual" and n.endswith(("hook_resid_post",
                                                                                      "hook_resid_mid"))] or \
        [n for n, s in sites.items() if s.kind == "output" and s.layout == ("batch", "pos", "d_model")]
    kinds = (["Ablate a slot", "Prune slots"] if banks and n_slots else []) + (["Clamp a gate"] if gates else []) + \
        (["Memory off"] if mem_layers else []) + (["Set decay"] if dec is not None else []) + \
        (["Patch activation"] if patchable else [])
    if not kinds:
        st.info("This model's hook sites offer nothing this page can change (no state bank, gate, memory, decay "
                "or residual stream was found among them).")
        state.mark_done()
        st.stop()
    kind = st.selectbox("Intervention", kinds, key="iv_kind")
    cols = st.columns(3)
    ivs, label, extra = [], "", ()
    try:
        if kind == "Ablate a slot":
            layer = cols[0].selectbox("Layer", banks, key="iv_layer")
            slot = cols[1].selectbox("Slot", list(range(n_slots)), key="iv_slot")
            mode = cols[2].radio("Replace with", ["zero", "mean"], horizontal=True, key="iv_mode")
            ivs = [ablate_slot(int(layer), int(slot), mode)]
        elif kind == "Prune slots":
            layer = cols[0].selectbox("Layer", banks, key="iv_layer")
            slots = cols[1].multiselect("Slots", list(range(n_slots)), default=[0], key="iv_slots")
            ivs = [prune_slots(int(layer), [int(s) for s in slots])] if slots else []
        elif kind == "Clamp a gate":
            name = cols[0].selectbox("Gate", gates, key="iv_gate")
            value = cols[1].slider("Clamp to", 0.0, 1.0, 0.0, 0.05, key="iv_value")
            ivs = [clamp_gate(name, float(value))]
        elif kind == "Memory off":
            layer = cols[0].selectbox("Layer", ["all"] + mem_layers, key="iv_mem_layer")
            ivs = [memory_off(None if layer == "all" else int(layer))]
        elif kind == "Set decay":
            layer = cols[0].selectbox("Layer", sorted(dec["layer"].unique().tolist()), key="iv_layer_decay")
            head = cols[1].selectbox("Head", sorted(dec.loc[dec["layer"] == layer, "head"].unique().tolist()),
                                     key="iv_head")
            gamma = cols[2].slider("γ (decay per token)", 0.05, 1.0, 0.5, 0.01, key="iv_gamma")
            ivs = [set_decay(int(layer), int(head), float(gamma))]
        else:
            exs = state.examples(ckpt)
            name = cols[0].selectbox("Activation", patchable, key="iv_patch_hook")
            src_text = cols[1].text_input("Source text", exs[1].text if len(exs) > 1 else run.text,
                                          key="iv_patch_text")
            src = core.encode_text(ckpt.tokenizer, src_text)
            n = min(len(src.ids), run.T)
            with cols[2]:
                lo, hi = state.position_range("Positions to patch", 0, n - 1, (0, min(n - 1, 4)), key="iv_patch_pos")
            ivs = [patch_activation(name, torch.tensor([src.ids]), list(range(lo, hi + 1)))]
            extra = (tuple(src.ids), lo, hi)  # the patch's repr names only the hook
    except core.WorkbenchError as e:
        st.error(f"Source text: {e}")
    label = ", ".join(repr(i) for i in ivs)
    # a result belongs to its inputs: other controls (another kind, a bad source) hide it
    inputs = (ckpt.key, run.text, kind, label, extra)
    if st.button("Apply intervention", key="iv_apply", type="primary", disabled=not ivs):
        try:
            res, after_tr = _apply(str(ckpt.path), ckpt.key, run.text, inputs, ivs, run.input_ids(), run.label_ids(),
                                   run.loss_name, bool(banks))
            st.session_state["iv_result"] = {"key": inputs, "label": label, "res": res, "after_tr": after_tr}
        except Exception as e:  # noqa: BLE001
            st.session_state.pop("iv_result", None)
            state.show_error(e, "The intervention failed")
    out = st.session_state.get("iv_result")
    if out is not None and out["key"] != inputs:
        st.session_state.pop("iv_result", None)  # stale: made with other settings
        out = None
        st.caption("Press “Apply intervention” to run these settings.")
    if out is not None:
        res = out["res"]
        s = res.summary()
        st.caption(f"Applied: `{out['label']}`")
        scored = f"{s['loss']}, n={s['n_label_tokens']}"
        if not s["n_label_tokens"]:
            st.info(run.no_loss_reason())
        c = st.columns(4)
        c[0].metric(f"Mean loss before ({scored})", core.fmt_loss(s["mean_loss_before"], 4))
        c[1].metric(f"Mean loss after ({scored})", core.fmt_loss(s["mean_loss_after"], 4),
                    delta=f"{s['mean_delta_loss']:+.4f}" if s["n_label_tokens"] else None, delta_color="inverse")
        c[2].metric("Mean KL(before‖after), scored tokens", core.fmt_loss(s["mean_kl"], 4))
        c[3].metric("Top-1 prediction changed, scored tokens", f"{100 * s['top1_changed_fraction']:.1f}%"
                    if s["n_label_tokens"] else "n/a")
        st.caption(f"All four are over the {s['n_label_tokens']} scored tokens: {core.loss_explanation(s['loss'])} "
                   f"(KL and top-1 at the predictions of those tokens). Top-1 accuracy on them "
                   f"{100 * s['accuracy_before']:.1f}% → {100 * s['accuracy_after']:.1f}%. Over every position: "
                   f"mean KL {s['mean_kl_all_positions']:.4f}, top-1 changed "
                   f"{100 * s['top1_changed_fraction_all_positions']:.1f}%." if s["n_label_tokens"] else
                   f"Over every position: mean KL {s['mean_kl_all_positions']:.4f}, top-1 changed "
                   f"{100 * s['top1_changed_fraction_all_positions']:.1f}%.")
        t0, t1 = state.window(run.T, key="iv")
        pos, toks = range(t0, t1), run.tokens[t0:t1]
        before, after = res.loss_before[0].numpy(), res.loss_after[0].numpy()
        left, right = st.columns(2)
        with left:
            state.plot(charts.loss_strip(pos, toks, before[t0:t1], title=f"Before: per-token {s['loss']}",
                                         zmax=charts.shared_range(before[t0:t1], after[t0:t1])[1]),
                       key="iv_before")
        with right:
            state.plot(charts.loss_strip(pos, toks, after[t0:t1], title=f"After: per-token {s['loss']}",
                                         zmax=charts.shared_range(before[t0:t1], after[t0:t1])[1]),
                       key="iv_after")
        state.plot(charts.loss_delta_bars(pos, toks, (after - before)[t0:t1]), key="iv_delta")
        if out["after_tr"] is not None:
            layer = st.selectbox("Read weights of layer", banks, key="iv_show_layer")
            name = state.layers_of(run.trace, "read_weights")[layer]
            left, right = st.columns(2)
            with left:
                state.plot(charts.slot_heatmap(run.trace[name][0, t0:t1].numpy(), pos, toks,
                                               title="Before: slot read weights"), key="iv_rw_before")
            with right:
                state.plot(charts.slot_heatmap(out["after_tr"][name][0, t0:t1].numpy(), pos, toks,
                                               title="After: slot read weights"), key="iv_rw_after")
        changed = np.nonzero(res.top1_changed[0].numpy())[0]
        if len(changed):
            st.caption("Every position whose top-1 prediction changed (the prediction made after reading it).")
            tok = ckpt.tokenizer
            st.dataframe([{"pos": int(p), "token": run.tokens[p],
                           "top-1 before": tok.decode([int(res.top1_before[0, p])]),
                           "top-1 after": tok.decode([int(res.top1_after[0, p])])} for p in changed[:200]],
                         hide_index=True)
