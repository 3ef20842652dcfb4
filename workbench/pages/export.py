"""Export: the whole trace as Parquet files, zipped, for DuckDB / pandas / notebooks."""

import streamlit as st

from workbench import core, state

st.title("Export")
state.explain(
    "Everything the workbench shows comes from one <b>trace</b> of the run. Download it as Parquet (a zip "
    "of the folder written by <code>Trace.to_parquet</code>): tidy tables such as <code>routing.parquet</code> "
    "and <code>token_loss.parquet</code> for queries, and exact tensors under <code>tensors/</code>. "
    "<code>probes.Trace.from_parquet(folder)</code> reads it back.")
ctx = state.context()
if ctx is not None:
    run, ckpt = ctx.run, ctx.ckpt
    try:
        data, names = state.parquet_zip(str(ckpt.path), ckpt.key, run.text,
                                        tuple(run.categories) if run.categories else None)
        st.download_button("Download trace (Parquet, zip)", data, file_name=f"{ckpt.name}-trace.zip",
                           mime="application/zip", key="export_download", type="primary")
        st.caption(f"{len(data) / 1024:.0f} KiB, {len(names)} files, {run.T} tokens. The loss in "
                   f"token_loss.parquet is the {run.loss_label()}, on {core.loss_explanation(run.loss_name)}; "
                   "NaN on every other token (metadata.json records which under \"loss\").")
        st.dataframe({"file": names}, hide_index=True)
        st.code("import duckdb\nduckdb.sql(\"select layer, slot, avg(weight) from 'trace/routing.parquet' "
                "group by all order by all\")", language="python")
    except Exception as e:  # noqa: BLE001
        state.show_error(e, "Export failed")
