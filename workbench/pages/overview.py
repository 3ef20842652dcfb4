"""Overview: the model card, the per-token loss strip and the top predictions."""

import numpy as np
import streamlit as st

from workbench import charts, core, state

st.title("Overview")
state.explain(
    "A language model reads the text one token at a time and, after each token, guesses the next one. "
    "The <b>loss</b> of a token measures how surprised the model was by it (0 = certain, higher = more "
    "surprised). PULSE carries a fixed-size <b>state</b> from token to token instead of looking back at "
    "every earlier token; the other pages open that state up.")
ctx = state.context()
if ctx is not None:  # leads with what the model uses: a mechanism it does not use explains nothing
    st.subheader("What this model relies on")
    usage, why = state.usage(ctx.ckpt)
    if usage is None:
        st.info(f"What this model relies on cannot be measured for this checkpoint: {why}")
    else:
        um = usage.meta
        st.caption(
            f"Held-out answer accuracy with one mechanism switched off at a time ({um.get('task', 'its task')}, "
            f"`{um.get('split', 'test')}` split, n = {usage.n} examples, {um['n_answer_tokens']} answers; "
            f"error bars: {round(100 * um['confidence'])}% paired bootstrap CI over examples). Solid line: "
            f"intact; dashed: chance (always the most frequent answer, {um['chance_accuracy']:.3f}). "
            f"Loss = {um['loss_name']}.")
        heads = st.checkbox("Show each head's decay", value=False, key="overview_usage_heads")
        state.plot(charts.usage_bars(usage.rows, chance=um["chance_accuracy"], heads=heads,
                                     confidence=um["confidence"]), key="overview_usage")
        ranked = sorted(usage.mechanisms(), key=lambda m: (usage.row(m) or {}).get("delta_accuracy") or 0.0)
        if ranked:
            st.markdown("**Largest effect.** " + usage.sentence(ranked[0]))
        with st.expander("Every mechanism, and the table", expanded=False):
            for m in ranked[1:]:
                st.markdown("- " + usage.sentence(m))
            st.dataframe(usage.frame(), hide_index=True)
if ctx is not None:
    ckpt, run = ctx.ckpt, ctx.run
    cfg = ckpt.config
    from probes.frames import frame_spec
    from pulse.hooks import layer_of

    tr = run.trace
    layers = sorted({layer_of(n) for n in ckpt.sites} - {None})
    dec = tr.frame("decay") if frame_spec("decay").applies(tr) else None
    heads = sorted(dec["head"].unique().tolist()) if dec is not None and not dec.empty else []
    c = st.columns(4)
    c[0].metric("Tokens", run.T)
    c[1].metric(f"Mean {run.loss_label()} (nats)", core.fmt_loss(run.mean_loss()),
                help=f"Mean over the {run.n_loss_tokens()} scored tokens: {core.loss_explanation(run.loss_name)}. "
                     "The loss strip below shows only those tokens.")
    c[2].metric("Parameters", f"{ckpt.num_parameters():,}")
    if heads:
        c[3].metric("Layers × heads", f"{len(layers)} × {len(heads)}")
    else:
        c[3].metric("Layers", f"{len(layers)}")
    # what the model has, read from its hook sites and the frames its trace gives (not its config)
    kinds_here = {s.kind for s in ckpt.sites.values()}
    parts = []
    if frame_spec("decay_attention").applies(tr):
        parts.append("linear attention with per-head decay")
    if any(n.endswith(".conv.hook_out") for n in ckpt.sites):
        parts.append("local convolution")
    if frame_spec("recurrent").applies(tr):
        parts.append("recurrent state")
    if frame_spec("memory_reads").applies(tr):
        reads = tr[state.entry(tr, "memory_reads", min(state.layers_of(tr, "memory_reads")), "*.hook_read_slots")]
        cap = getattr(cfg, "memory_capacity", None)
        parts.append(f"key-value memory ({cap} slots, top-{reads.shape[-1]} reads)" if cap else
                     f"key-value memory (top-{reads.shape[-1]} reads)")
    imp = tr.frame("importance") if frame_spec("importance").applies(tr) else None
    if imp is not None and not imp.empty:
        n_slots = int(imp.groupby("layer")["slot"].nunique().max())
        parts.append(f"state bank of {n_slots} Neural-State-Machine slots")
    if not parts:
        from probes.frames import available_kinds

        described = sorted(kinds_here - {"residual", "output", "loss", "prediction"})
        parts.append(f"{len(layers)} layers with hook sites of kind {', '.join(described) or '(none)'}; "
                     f"tables on this trace: {', '.join(available_kinds(tr)) or 'none'}")
    st.write(f"**{ckpt.name}**: " + ", ".join(parts) + ".")
    with st.expander("Model card", expanded=False):
        st.markdown(ckpt.card or "_This folder has no model_card.md._")
        st.json(cfg.to_dict(), expanded=False)
        if ckpt.task_record:
            st.json(ckpt.task_record, expanded=False)

    t0, t1 = state.window(run.T, key="overview")
    loss = run.loss()
    if run.no_loss_reason():
        st.info(run.no_loss_reason())
    state.plot(charts.loss_strip(range(t0, t1), run.tokens[t0:t1], loss[t0:t1]), key="overview_loss")

    st.subheader("What the model expects next")
    pos = state.position("After reading the token at position", t0, t1 - 1, t0 + (t1 - t0) // 2,
                         key="overview_pos")
    top_ids = run.trace["predictions.top_ids"][0, pos].tolist()
    top_p = run.trace["predictions.top_probs"][0, pos].tolist()
    top_tokens = [ckpt.tokenizer.decode([i]) for i in top_ids]
    actual = run.tokens[pos + 1] if pos + 1 < run.T else None
    st.caption(f"Context ends with: … {' '.join(run.tokens[max(0, pos - 12):pos + 1])}  →  actual next: "
               f"**{actual if actual is not None else '(end of text)'}**")
    state.plot(charts.top_predictions(top_tokens, top_p, actual), key="overview_top")
    worst = np.argsort(-np.nan_to_num(loss, nan=-1))[:8]
    st.caption("Most surprising tokens: " + ", ".join(f"{run.tokens[i]!s} @{i} ({loss[i]:.2f})"
                                                      for i in worst if np.isfinite(loss[i])))
