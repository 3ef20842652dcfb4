"""Claims: the Neural State Machine claims, measured on the checkpoint's held-out set."""

import copy

import streamlit as st

from workbench import state
from workbench.charts import claim_checks as cc

SEEDS = (0, 1, 2)

st.title("Claims")
state.explain(
    "Pictures suggest stories; these checks measure them on the checkpoint's <b>held-out set</b> (its task's "
    "test split, not the text in the sidebar). Every loss is the loss on the tokens the model was trained to "
    "predict (the task's labels). Each claim gets an effect size, oriented so that positive is the claim's "
    "direction, with a 95% bootstrap interval for each of three seeds. The verdict is fixed in advance: "
    "<b>supported</b> when every seed's interval excludes zero on the claim's side; <b>not supported</b> when "
    "every interval lies below the claim's negligible effect size (the effect is absent, opposite or too small "
    "to matter); <b>inconclusive</b> otherwise, or when there is too little to measure.")

EXPLAIN = {
    "importance_predicts_ablation":
        "**Importance predicts ablation.** Each state-bank slot carries a learned importance score, and the "
        "pruning tools trust it: a slot with low importance is said to be safe to remove. If that is true, "
        "removing a slot's reads (ablating it) should hurt the answers more the higher its importance. The "
        "statistic is the Spearman correlation over slots between importance and ablation damage (the rise "
        "in answer-token loss), with an interval from resampling the held-out examples. When no slot's "
        "ablation changes the loss by 0.01 nats, there is nothing for importance to predict: not supported.",
    "pruning_beats_random":
        "**Pruning by importance beats random pruning.** The practical form of the same promise: pruning the "
        "least important half of every bank should cost less answer-token loss than pruning a random half of "
        "the same size. The effect is the mean loss increase of eight random halves per seed minus that of "
        "the lowest-importance half (positive: importance-guided pruning is the better choice), with an "
        "interval from resampling examples and random halves.",
    "slot_specialisation":
        "**Slots specialise.** Token-to-state routing is meant to send what a token is about to its own slot, "
        "as in an entity network: tokens naming the same character or object should go to the same slot. "
        "The statistic is the mutual information between a token's most-weighted slot and the entity it names "
        "(story-world ground truth), minus the same quantity with the entities shuffled, as a fraction of the "
        "entity's entropy (1: the slot names the entity; under 0.05: negligible); beside it, a linear "
        "probe from the routing weights to the entity against a shuffled-label probe, and the same excess "
        "information for the place a token names, the token's chunk index and its position: routing that "
        "follows where a token is rather than what it names is position-dependence, not specialisation.",
    "slower_decay_attends_further":
        "**Slower decay attends further.** Each linear-attention head has a learned decay and so a half-life; "
        "the claim is that heads with longer half-lives really use tokens further back. The statistic is the "
        "Spearman correlation over heads between half-life and the mean distance of the head's decay-weighted "
        "attention, measured on each held-out example and resampled over examples.",
}
AXES = {"importance_predicts_ablation": "Spearman rho (importance, ablation damage)",
        "pruning_beats_random": "random-half minus lowest-half loss increase (nats)",
        "slot_specialisation": "excess mutual information, fraction of the entity's entropy",
        "slower_decay_attends_further": "Spearman rho (half-life, mean distance)"}

for text in EXPLAIN.values():
    st.markdown(text)


@st.cache_data(show_spinner="Running the claim checks on the held-out set (many forward passes: a minute or more "
                            "on a CPU; once per checkpoint and size)…", show_time=True, max_entries=8)
def held_out_claims(path: str, key: str, n: int, seeds: tuple[int, ...]) -> list[dict]:
    """Every claim check that fits the checkpoint, on ``n`` held-out examples of its task."""
    from probes.claims import run_claim_checks
    from pulse.data import load_task

    ckpt = state.load(path)
    task, _ = load_task(path)
    update, close = state.progress_bar(f"Claim checks on {n} held-out examples, seeds {list(seeds)}")
    try:
        return run_claim_checks(copy.deepcopy(ckpt.model).eval(), task, n=n, seeds=seeds, progress=update)
    finally:
        close()


def base(claim: str) -> str:
    return claim.split(" (")[0]


ctx = state.context()
if ctx is not None and ctx.ckpt.task is None:
    st.info("The claim checks run on the checkpoint's held-out set, which is rebuilt from its task: "
            f"{ctx.ckpt.task_problem or 'this checkpoint has no task'}. Train with `python -m pulse.train` "
            "(it writes task.json) or add the task record to the folder.")
elif ctx is not None:
    ckpt = ctx.ckpt
    n = int(st.number_input("Held-out examples", 256, 2048, 256, step=64, key="claims_n",
                            help="Examples of the task's test split; at least 256."))
    if st.button("Run the claim checks", key="claims_run", type="primary"):
        st.session_state["claims_key"] = (ckpt.key, n)
    if st.session_state.get("claims_key") == (ckpt.key, n):
        try:
            results = held_out_claims(str(ckpt.path), ckpt.key, n, SEEDS)
        except Exception as e:  # noqa: BLE001 - a task that cannot be rebuilt says so
            state.show_error(e, "The claim checks failed")
            results = None
        if results == []:
            st.info("None of the Neural State Machine claims applies to this model: they are about "
                    "decay-weighted attention heads and state-bank slots, and its trace has neither.")
        if results:
            ex = results[0]["details"].get("held_out_examples")
            st.caption(f"{ex} held-out examples ({results[0]['details'].get('split')} split), seeds {list(SEEDS)}.")
            state.plot(cc.verdict_overview(results), key="claims_chart")
            st.dataframe([{"claim": r["claim"], "verdict": r["verdict"], "statistic": r["statistic"],
                           "value": round(r["value"], 4), "ci_low": r["details"]["ci_low"],
                           "ci_high": r["details"]["ci_high"], "why not measured": r["details"]["precondition_failed"]}
                          for r in results], hide_index=True)
            slots = [r for r in results if base(r["claim"]) == "slot_specialisation"]
            for i, r in enumerate(results):
                claim = base(r["claim"])
                st.subheader(r["claim"])
                state.plot(cc.effect_intervals(r, AXES.get(claim)), key=f"claims_effect_{i}")
                if claim == "importance_predicts_ablation":
                    state.plot(cc.ablation_scatter(r), key="claims_ablation")
                elif claim == "pruning_beats_random":
                    state.plot(cc.pruning_bars(r), key="claims_pruning")
                elif claim == "slower_decay_attends_further":
                    state.plot(cc.decay_scatter(r), key="claims_decay")
                elif claim == "slot_specialisation" and r is slots[-1]:
                    state.plot(cc.specialisation_bars(slots), key="claims_specialisation")
                    if any(s["details"].get("probe") for s in slots):
                        state.plot(cc.probe_bars(slots), key="claims_probe")
                with st.expander("Rule and numbers"):
                    st.caption(r["details"].get("rule", ""))
                    st.json({k: v for k, v in r["details"].items() if k not in ("points", "heads", "per_seed")},
                            expanded=False)
        elif results is not None:
            st.info("No claim applies to this model (no state bank and no linear attention).")
    else:
        st.caption("The checks run many forward passes over the held-out set; press the button to run them.")
