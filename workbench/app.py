"""PULSE Workbench: ``streamlit run workbench/app.py``.

Opens on the shipped story-world checkpoint (``checkpoints/``, or the folder named by
``$PULSE_WORKBENCH_CHECKPOINT_DIR``) with an example story already traced. The sidebar picks
the model and the input; each page (``workbench/pages/*.py``) shows one view of the run.
"""

import os
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402
import torch  # noqa: E402

# one intra-op thread by default: the models are small, and several sessions (or other
# processes) competing for cores with many threads each is far slower; override with
# PULSE_WORKBENCH_THREADS.
torch.set_num_threads(max(1, int(os.environ.get("PULSE_WORKBENCH_THREADS", "1") or 1)))

from workbench import state  # noqa: E402

PAGES = [
    ("pages/overview.py", "Overview", ":material/home:"),
    ("pages/routing.py", "Token → state routing", ":material/alt_route:"),
    ("pages/gates.py", "Gates over time", ":material/timeline:"),
    ("pages/importance.py", "State importance & pruning", ":material/content_cut:"),
    ("pages/attention.py", "Decay-weighted attention", ":material/grid_on:"),
    ("pages/memory.py", "Memory reads", ":material/memory:"),
    ("pages/attribution.py", "Attribution", ":material/insights:"),
    ("pages/interventions.py", "Interventions", ":material/science:"),
    ("pages/compare.py", "Compare runs", ":material/compare:"),
    ("pages/claims.py", "Claims", ":material/fact_check:"),
    ("pages/export.py", "Export", ":material/download:"),
]

st.set_page_config(page_title="PULSE Workbench", page_icon=":material/monitor_heart:", layout="wide")
nav = st.navigation([st.Page(path, title=title, icon=icon, default=(i == 0))
                     for i, (path, title, icon) in enumerate(PAGES)])
st.sidebar.title("PULSE Workbench")
ctx = state.sidebar()
st.session_state["_wb_ctx"] = ctx
if ctx is None:
    st.title(nav.title)
    state.mark_done()
    st.stop()
nav.run()
state.mark_done()
