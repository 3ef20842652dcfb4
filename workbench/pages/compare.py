"""Compare two runs: the same text under two checkpoints, or two texts under one checkpoint."""

from pathlib import Path

import numpy as np
import streamlit as st

from workbench import charts, core, state

st.title("Compare runs")
state.explain(
    "Put two runs next to each other. With <b>two checkpoints</b> on the same text you see where one model "
    "is more surprised than the other and whether they route tokens to their slots alike. With <b>two "
    "texts</b> under one model you see how the same model treats different inputs.")
ctx = state.context()
if ctx is not None:
    run, ckpt = ctx.run, ctx.ckpt
    found = core.discover_checkpoints()
    # comparable: another checkpoint whose tokenizer reads this text as this one does
    others = [n for n, f in found.items() if f.resolve() != ckpt.path.resolve()]
    readable = [n for n in others if state.same_tokenizer(found[n], ckpt.path)]
    modes = ["Same text, another checkpoint", "Same checkpoint, another text"]
    mode = st.radio("Compare", modes, index=0 if readable else 1, horizontal=True, key="cmp_mode",
                    help="Another checkpoint can only be compared on this text when its tokenizer has the same "
                         "vocabulary; otherwise it reads the text as unknown words.")
    other_ckpt, other_run = None, None
    if mode.startswith("Same text"):
        options = readable + [n for n in others if n not in readable] + [state.OTHER_FOLDER]
        choice = st.selectbox("Other checkpoint", options, index=0, key="cmp_ckpt",
                              format_func=lambda n: n if n in readable or n == state.OTHER_FOLDER
                              else f"{n} (another vocabulary: cannot read this text)")
        if not readable:
            st.caption(f"No other checkpoint found in {core.checkpoint_root()} shares {ckpt.name}'s vocabulary.")
        path = st.text_input("Folder path", key="cmp_path", placeholder="/path/to/save_pretrained/folder") \
            if choice == state.OTHER_FOLDER else str(found[choice])
        unreadable = (f"{Path(path.strip()).name} has another vocabulary than {ckpt.name}: it cannot read this "
                      "text (its words would be unknown to it), so a comparison would say nothing. Pick a "
                      "checkpoint with the same tokenizer, or compare another text under this model.")
        if choice != state.OTHER_FOLDER and choice not in readable:
            st.info(unreadable)
        elif not path.strip():
            st.info("Type the path of another save_pretrained folder (config.json, model.safetensors and "
                    f"tokenizer.json; e.g. {next(iter(found.values()), '/path/to/checkpoint')}) in the box above "
                    "to compare it with this model on the same text.")
        else:
            try:
                other_ckpt = state.load(path)
                if state.same_tokenizer(other_ckpt.path, ckpt.path):
                    other_run, warns = state.trace(other_ckpt, run.text, run.categories)
                    for w in warns:
                        st.warning(f"{other_ckpt.name}: {w}")
                else:
                    st.info(unreadable)
            except Exception as e:  # noqa: BLE001
                state.show_error(e, "Cannot run the other checkpoint")
        name_a, name_b = ckpt.name, other_ckpt.name if other_ckpt else "other"
        if name_a == name_b:
            name_a, name_b = f"{name_a} ({ckpt.path.parent.name})", f"{name_b} (other folder)"
    else:
        exs = state.examples(ckpt)
        labels = [e.title or f"example {i}" for i, e in enumerate(exs)] + ["Free text"]
        choice = st.selectbox("Other text", list(range(len(labels))), index=min(1, len(labels) - 1),
                              format_func=lambda i: labels[i], key="cmp_text_choice")
        if choice < len(exs):
            text, cats = exs[choice].text, exs[choice].categories
        else:
            text, cats = st.text_area("Text", key="cmp_text"), None
        if not text.strip():
            st.info("Type the other text in the box above to compare it with the sidebar's text under this model.")
        else:
            try:
                other_ckpt = ckpt
                other_run, warns = state.trace(ckpt, text, cats)
                for w in warns:
                    st.warning(w)
            except core.WorkbenchError as e:
                st.error(str(e))
        name_a, name_b = "this text", "other text"
    if other_run is not None:
        c = st.columns(3)
        la, lb = run.mean_loss(), other_run.mean_loss()
        c[0].metric(f"Mean loss: {name_a} ({run.loss_label()})", core.fmt_loss(la, 4))
        c[1].metric(f"Mean loss: {name_b} ({other_run.loss_label()})", core.fmt_loss(lb, 4),
                    delta=f"{lb - la:+.4f}" if np.isfinite(la) and np.isfinite(lb) else None, delta_color="inverse")
        if run.loss_name != other_run.loss_name:
            st.warning(f"The two losses are on different tokens: {name_a} is scored on its {run.loss_name} "
                       f"({core.loss_explanation(run.loss_name)}), {name_b} on its {other_run.loss_name} "
                       f"({core.loss_explanation(other_run.loss_name)}): compare them with care.")
        else:
            st.caption(f"Both losses: {run.loss_name}, over {core.loss_explanation(run.loss_name)}.")
        same_tokens = other_run.ids == run.ids
        c[2].metric("Tokens", f"{run.T} vs {other_run.T}")
        T = min(run.T, other_run.T)
        t0, t1 = state.window(T, key="cmp")
        pos = range(t0, t1)
        if same_tokens or mode.startswith("Same text"):
            if not same_tokens:
                st.caption("The two tokenizers split the text differently: positions are compared as they come.")
            state.plot(charts.loss_comparison(pos, run.tokens[t0:t1], run.loss()[t0:t1], other_run.loss()[t0:t1],
                                              name_a, name_b, title="Per-token loss on the scored tokens, both runs"), key="cmp_loss")
        else:
            left, right = st.columns(2)
            with left:
                state.plot(charts.loss_strip(pos, run.tokens[t0:t1], run.loss()[t0:t1], title=f"{name_a}: loss",
                                             zmax=charts.shared_range(run.loss()[t0:t1], other_run.loss()[t0:t1])[1]),
                           key="cmp_loss_a")
            with right:
                state.plot(charts.loss_strip(pos, other_run.tokens[t0:t1], other_run.loss()[t0:t1],
                                             title=f"{name_b}: loss",
                                             zmax=charts.shared_range(run.loss()[t0:t1], other_run.loss()[t0:t1])[1]),
                           key="cmp_loss_b")
        route_a, route_b = state.layers_of(run.trace, "routing"), state.layers_of(other_run.trace, "routing")
        common = sorted(set(route_a) & set(route_b))
        if common:
            layer = st.selectbox("Routing of layer", common, key="cmp_layer")
            left, right = st.columns(2)
            with left:
                state.plot(charts.slot_heatmap(run.trace[route_a[layer]][0, t0:t1].numpy(), pos, run.tokens[t0:t1],
                                               title=f"{name_a}: routing"), key="cmp_route_a")
            with right:
                state.plot(charts.slot_heatmap(other_run.trace[route_b[layer]][0, t0:t1].numpy(), pos,
                                               other_run.tokens[t0:t1], title=f"{name_b}: routing"),
                           key="cmp_route_b")
        else:
            st.info("Routing is compared when both models have a state bank in the same layer.")
