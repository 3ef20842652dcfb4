"""PULSE Workbench (placeholder until the workbench pages land)."""

import streamlit as st

st.set_page_config(page_title="PULSE Workbench", layout="wide")
st.title("PULSE Workbench")
st.write("The model library is installed; the workbench pages are being built.")
