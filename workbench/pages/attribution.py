"""Attribution: which input tokens, and which state-bank slots, made the model predict a token.

Token attributions start on the answer (``probes.attribution.answer_index``: the task's answer
tokens, else the token after the last "?", else the last token) and add integration steps until
they add up to the score change within 5%; the completeness error and the steps used are shown
beside the chart, in red with a warning when the error is still >= 5%."""

import numpy as np
import streamlit as st

from workbench import charts, state

MAX_ERROR = 0.05
EMBED_SITE = "hook_embed"  # where probes.attribution.token_attributions integrates (the embeddings)


class NotApplicable(Exception):
    """The model's hook sites lack what an analysis reads: said in an info box, not an error."""

st.title("Attribution")
state.explain(
    "<b>Integrated gradients</b> (Captum) answers “which inputs made the model say this?”. It slides each "
    "input from a neutral baseline (padding) to its real value and adds up how the target's score changed "
    "along the way; done exactly, the attributions add up to the total change. The integral is approximated "
    "with a number of steps, so the page adds steps until the sum is within 5% of the change and shows the "
    "remaining <b>completeness error</b>: when it stays high (red), the bars are not a faithful split of the "
    "score and should not be read as one. Green bars pushed the prediction up, red ones down. The same method "
    "applied to the state-bank reads tells which slots the answer came from.")


@st.cache_data(show_spinner=False, max_entries=32)  # the page shows a spinner naming the work
def _token_ig(_model, path: str, key: str, ids: tuple[int, ...], position: int, target: int, n_steps: int,
              max_steps: int) -> dict:
    """Attributions [position + 1], completeness error, steps used and every try's error, of the
    target logit at ``position``; the model is causal, so only the prefix up to it is run."""
    import torch

    from probes.attribution import token_attributions

    prefix = torch.tensor([ids[: position + 1]], dtype=torch.long)
    update, close = state.progress_bar(f"Integrated gradients over {position + 1} tokens")
    try:
        res = token_attributions(_model, prefix, position=position, target=target, n_steps=n_steps,
                                 max_steps=max_steps, max_error=MAX_ERROR, internal_batch_size=256,
                                 progress=update)
    finally:
        close()
    return {"attr": res.attributions.numpy(), "error": float(res.relative_error), "steps": int(res.n_steps),
            "errors": {int(k): float(v) for k, v in res.errors.items()}, "f_input": res.f_input,
            "f_baseline": res.f_baseline}


def _answer_mask(run) -> list[bool] | None:
    """The run's answer tokens when its task scores only some tokens (answers-only training)."""
    if not run.labels:
        return None
    marked = [lab != -100 for lab in run.labels]
    return marked if any(marked[1:]) and not all(marked[1:]) else None


ctx = state.context()
if ctx is not None:
    run, ckpt = ctx.run, ctx.ckpt
    if run.T < 2:
        st.info("Attribution needs at least two tokens.")
        state.mark_done()
        st.stop()
    from probes.attribution import answer_index

    q_id = ckpt.tokenizer.token_to_id("?") if hasattr(ckpt.tokenizer, "token_to_id") else None
    mask = _answer_mask(run)
    answer = answer_index(run.ids, mask, q_id)  # in 1 .. T (T: the token after the text)
    has_answer = mask is not None or (q_id is not None and q_id in run.ids)
    ids = tuple(run.ids)
    if st.session_state.get("_attr_ids") != ids:  # a new text: start on its answer again
        st.session_state["_attr_ids"] = ids
        st.session_state.pop("attr_pos", None)
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    with c1:
        pos = state.position("Predict the token after position", 0, run.T - 1, answer - 1, key="attr_pos",
                             help="Starts on the answer: the task's answer token, else the token after the last "
                                  "“?”, else the last token.")
    what = c2.radio("Target", ["actual next token", "model's top guess"], key="attr_target")
    n_steps = c3.select_slider("IG steps, first try", [8, 16, 32, 64], 32, key="attr_steps")
    max_steps = c4.select_slider("at most", [8, 16, 32, 64, 128, 256, 512, 1024], 512, key="attr_max_steps",
                                 help="Steps are doubled until the completeness error is below 5% or this cap.")
    top_guess = int(run.trace["predictions.top_ids"][0, pos, 0])
    beyond = pos + 1 >= run.T
    target = top_guess if (beyond or not what.startswith("actual")) else run.ids[pos + 1]
    st.caption(f"Target: logit of **{ckpt.tokenizer.decode([target])}** after “… "
               f"{' '.join(run.tokens[max(0, pos - 10):pos + 1])}”"
               + (" (the model's top guess: the text ends here)" if beyond and what.startswith("actual") else "")
               + (" — the answer token" if pos == answer - 1 and has_answer else ""))
    try:
        if EMBED_SITE not in ckpt.sites:
            raise NotApplicable(
                f"Token attribution integrates over the token embeddings at the `{EMBED_SITE}` hook site; this "
                f"model's hook sites have none (it has {len(ckpt.sites)} others: "
                f"{', '.join(sorted({s.kind for s in ckpt.sites.values()}))}), so there is no attribution over "
                "tokens to show.")
        with st.spinner(f"Integrated gradients over {pos + 1} tokens ({n_steps} steps, doubled until they add up, "
                        f"at most {max(int(n_steps), int(max_steps))})…", show_time=True):
            res = _token_ig(ckpt.model, str(ckpt.path), ckpt.key, ids, pos, int(target), int(n_steps),
                            max(int(n_steps), int(max_steps)))
        attr, err, used = res["attr"], res["error"], res["steps"]
        lo = max(0, pos + 1 - state.DEFAULT_WINDOW)
        if lo > 0:
            st.caption(f"Showing the last {pos + 1 - lo} tokens before the target (of {pos + 1}).")
        left, right = st.columns([5, 1])
        with left:
            state.plot(charts.token_attribution_bars(range(lo, pos + 1), run.tokens[lo:pos + 1], attr[lo:],
                                                     target_pos=pos), key="attr_tokens")
        with right:
            st.metric("Completeness error", f"{100 * err:.1f}%",
                      help="|sum of attributions − (F(text) − F(baseline))| / |F(text) − F(baseline)|")
            st.metric("IG steps used", f"{used}")
            if err >= MAX_ERROR:
                st.markdown(f":red[**{100 * err:.1f}% ≥ {100 * MAX_ERROR:.0f}%: not a valid split**]")
            else:
                st.markdown(f":green[within {100 * MAX_ERROR:.0f}%]")
        tries = ", ".join(f"{k}: {100 * v:.1f}%" for k, v in res["errors"].items())
        st.caption(f"Score change F(text) − F(padding) = {res['f_input'] - res['f_baseline']:+.3f}; "
                   f"completeness error by steps — {tries}.")
        if err >= MAX_ERROR:
            st.warning(
                f"Completeness error {100 * err:.1f}% after {used} steps (tried {tries}): the attributions do not "
                "add up to the score change, so the bars are not a faithful split of it. On PULSE models with "
                "key-value memory this is expected: the memory's top-k softmax read is nearly an argmax, so the "
                "score jumps where the best-matching entry changes along the integration path. Raise the cap, or "
                "compare with the memory switched off on the Interventions page.")
    except NotApplicable as e:
        st.info(str(e))
    except Exception as e:  # noqa: BLE001
        state.show_error(e, "Token attribution failed")
    layers = ckpt.bank_layers()
    if layers:
        st.subheader("Over slots")
        layer = st.selectbox("State-bank layer", layers, key="attr_layer")
        try:
            sattr, serr = state.slot_ig(str(ckpt.path), ckpt.key, ids, int(layer), pos, int(target),
                                        int(n_steps))
            lo = max(0, pos + 1 - state.DEFAULT_WINDOW)
            state.plot(charts.per_slot_bars(sattr.sum(0), title=f"Layer {layer}: total attribution per slot"),
                       key="attr_slot_bars")
            state.plot(charts.slot_attribution(sattr[lo:], range(lo, pos + 1), run.tokens[lo:pos + 1],
                                               title=f"Layer {layer}: attribution to slot reads (position × slot)"),
                       key="attr_slot_heatmap")
            if serr >= MAX_ERROR:
                st.markdown(f":red[**Completeness error {100 * serr:.1f}% of F(reads) − F(no reads)**] "
                            f"(≥ {100 * MAX_ERROR:.0f}%: not a valid split)")
            else:
                st.caption(f"Completeness error {100 * serr:.1f}% of F(reads) − F(no reads).")
        except Exception as e:  # noqa: BLE001
            state.show_error(e, "Slot attribution failed")
