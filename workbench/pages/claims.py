"""Claims: the project's interpretability claims, checked on this model and text."""

import streamlit as st

from workbench import charts, state

st.title("Claims")
state.explain(
    "Pictures suggest stories; these checks test them. Each claim gets a number and a verdict: "
    "<b>supported</b>, <b>not supported</b> or <b>inconclusive</b> (too little evidence either way). "
    "The rules are fixed in advance (see each claim's details), so a verdict cannot be talked into existence.")
CLAIMS = {
    "slower_decay_attends_further": "Heads with longer half-lives really look further back.",
    "slot_specialisation": "Slots specialise: the slot a token is routed to says something about its kind.",
    "importance_predicts_ablation": "Slots with higher learned importance hurt more when removed.",
    "pruning_beats_random": "Pruning the least important half of the slots hurts less than a random half.",
}
ctx = state.context()
if ctx is not None:
    run, ckpt = ctx.run, ctx.ckpt
    for k, v in CLAIMS.items():
        st.markdown(f"- `{k}`: {v}")
    key = (ckpt.key, run.text)
    if st.button("Run the claim checks", key="claims_run", type="primary"):
        st.session_state["claims_key"] = key
    if st.session_state.get("claims_key") == key:
        try:
            results = state.claim_checks(str(ckpt.path), ckpt.key, run.text,
                                         tuple(run.categories) if run.categories else None)
            state.plot(charts.claim_verdicts(results), key="claims_chart")
            st.dataframe([{"claim": r["claim"], "verdict": r["verdict"], "statistic": r["statistic"],
                           "value": round(r["value"], 4), "p": r["details"].get("p_value")} for r in results],
                         hide_index=True)
            for r in results:
                with st.expander(f"{r['claim']}: {r['verdict']}"):
                    st.caption(r["details"].get("rule", ""))
                    st.json({k: v for k, v in r["details"].items() if k not in ("points", "heads")}, expanded=False)
        except Exception as e:  # noqa: BLE001
            state.show_error(e, "The claim checks failed")
    else:
        st.caption("The checks run many forward passes; press the button to run them on this text.")
