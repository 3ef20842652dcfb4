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
        with intervene(model, *_ivs):
            _, after_tr = run_with_trace(model, _ids, names="blocks.*.states.hook_read_weights")
    return res, after_tr


ctx = state.context()
if ctx is not None:
    from probes import ablate_slot, clamp_gate, memory_off, patch_activation, prune_slots, set_decay
    from probes.trace import hook_sites

    run, ckpt, cfg = ctx.run, ctx.ckpt, ctx.ckpt.config
    banks = ckpt.bank_layers()
    gates = [n for n in hook_sites(ckpt.model) if n.endswith(("_gate",)) and ".ffn." not in n]
    kinds = (["Ablate a slot", "Prune slots"] if banks else []) + (["Clamp a gate"] if gates else []) + \
        (["Memory off"] if cfg.use_memory else []) + (["Set decay"] if cfg.use_linear_attention else []) + \
        ["Patch activation"]
    kind = st.selectbox("Intervention", kinds, key="iv_kind")
    cols = st.columns(3)
    ivs, label, extra = [], "", ()
    try:
        if kind == "Ablate a slot":
            layer = cols[0].selectbox("Layer", banks, key="iv_layer")
            slot = cols[1].selectbox("Slot", list(range(cfg.resolved_max_states)), key="iv_slot")
            mode = cols[2].radio("Replace with", ["zero", "mean"], horizontal=True, key="iv_mode")
            ivs = [ablate_slot(int(layer), int(slot), mode)]
        elif kind == "Prune slots":
            layer = cols[0].selectbox("Layer", banks, key="iv_layer")
            slots = cols[1].multiselect("Slots", list(range(cfg.resolved_max_states)), default=[0], key="iv_slots")
            ivs = [prune_slots(int(layer), [int(s) for s in slots])] if slots else []
        elif kind == "Clamp a gate":
            name = cols[0].selectbox("Gate", gates, key="iv_gate")
            value = cols[1].slider("Clamp to", 0.0, 1.0, 0.0, 0.05, key="iv_value")
            ivs = [clamp_gate(name, float(value))]
        elif kind == "Memory off":
            layer = cols[0].selectbox("Layer", ["all"] + list(range(cfg.num_layers)), key="iv_mem_layer")
            ivs = [memory_off(None if layer == "all" else int(layer))]
        elif kind == "Set decay":
            layer = cols[0].selectbox("Layer", list(range(cfg.num_layers)), key="iv_layer_decay")
            head = cols[1].selectbox("Head", list(range(cfg.num_heads)), key="iv_head")
            gamma = cols[2].slider("γ (decay per token)", 0.05, 1.0, 0.5, 0.01, key="iv_gamma")
            ivs = [set_decay(int(layer), int(head), float(gamma))]
        else:
            exs = state.examples(ckpt)
            hooks = [n for n in hook_sites(ckpt.model) if n.endswith(("hook_resid_post", "hook_resid_mid"))]
            name = cols[0].selectbox("Activation", hooks, key="iv_patch_hook")
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
            name = f"blocks.{layer}.states.hook_read_weights"
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
