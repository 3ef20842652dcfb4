"""Streamlit glue shared by every page: cached model loading and tracing, the sidebar (model
picker and input), position windows, and error display. Pages stay thin:

    ctx = state.context()          # None (with the reason on screen) when nothing can be shown
    t0, t1 = state.window(ctx.run.T, key="routing")

Caching: models with ``st.cache_resource`` keyed by folder path + file mtimes/sizes
(:func:`workbench.core.folder_key`); traces, examples and generations with ``st.cache_data``
keyed by that model key and the text.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from workbench import core
from workbench.core import Checkpoint, Example, Run, WorkbenchError

OTHER_FOLDER = "Other folder…"
SOURCES = ("Example story", "Free text", "Generated text")
DEFAULT_WINDOW = 160
MAX_WINDOW = 400


@st.cache_resource(show_spinner="Loading the model…", max_entries=6)
def _checkpoint(path: str, key: str) -> Checkpoint:
    return core.load_checkpoint(path)


def load(path: str | Path) -> Checkpoint:
    """The cached checkpoint in ``path`` (reloaded when its files change)."""
    p = Path(str(path).strip()).expanduser()
    if not str(path).strip():
        raise WorkbenchError("No checkpoint folder given: enter the path of a save_pretrained folder.")
    return _checkpoint(str(p), core.folder_key(p))


@st.cache_data(show_spinner=False, max_entries=16)
def _examples(path: str, key: str) -> list[Example]:
    return core.examples(_checkpoint(path, key))


def examples(ckpt: Checkpoint) -> list[Example]:
    return _examples(str(ckpt.path), ckpt.key)


@st.cache_data(show_spinner="Tracing the text…", max_entries=24)
def _run(path: str, key: str, text: str, categories: tuple[str, ...] | None) -> tuple[Run, list[str]]:
    return core.trace_text(_checkpoint(path, key), text, list(categories) if categories else None)


def trace(ckpt: Checkpoint, text: str, categories: list[str] | None = None) -> tuple[Run, list[str]]:
    """Cached trace of ``text`` under ``ckpt`` (raises WorkbenchError for bad text)."""
    return _run(str(ckpt.path), ckpt.key, text, tuple(categories) if categories else None)


@st.cache_data(show_spinner="Generating…", max_entries=24)
def _generate(path: str, key: str, prompt: str, n: int, temperature: float, seed: int) -> str:
    return core.generate_text(_checkpoint(path, key), prompt, n, temperature, seed)


def working_copy(ckpt: Checkpoint):
    """A private deep copy of the model for interventions (the cached one is shared)."""
    return copy.deepcopy(ckpt.model).eval()


@dataclass
class Context:
    ckpt: Checkpoint
    run: Run
    warnings: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def tokens(self) -> list[str]:
        return self.run.tokens


# ------------------------------------------------------------------ sidebar
def _model_picker() -> Checkpoint | None:
    found = core.discover_checkpoints()
    options = list(found) + [OTHER_FOLDER]
    st.sidebar.header("Model")
    choice = st.sidebar.selectbox("Checkpoint", options, key="wb_model",
                                  help="Shipped checkpoints, or any save_pretrained folder (safetensors only).")
    if choice == OTHER_FOLDER:
        path = st.sidebar.text_input("Folder path", key="wb_model_path",
                                     placeholder="/path/to/save_pretrained/folder")
        if not path.strip():
            if not found:
                st.warning(f"No checkpoints found in {core.checkpoint_root()}. Enter the path of a "
                           "save_pretrained folder (config.json + model.safetensors + tokenizer.json) "
                           "in the sidebar.")
            else:
                st.info("Enter the path of a save_pretrained folder in the sidebar.")
            return None
    else:
        path = str(found[choice])
    try:
        return load(path)
    except WorkbenchError as e:
        st.error(str(e))
    except Exception as e:  # noqa: BLE001 - never a traceback on screen
        st.error(f"Could not load {path}: {type(e).__name__}: {e}")
    return None


def _input_picker(ckpt: Checkpoint) -> tuple[str, list[str] | None, str] | None:
    st.sidebar.header("Input")
    try:
        exs = examples(ckpt)
    except WorkbenchError as e:  # the task exists but cannot make its split: say so, offer free text
        st.error(str(e))
        exs = []
    sources = list(SOURCES) if exs else list(SOURCES[1:])
    source = st.sidebar.radio("Text from", sources, key="wb_source")
    if source == "Example story":
        idx = st.sidebar.selectbox("Example", list(range(len(exs))), key="wb_example",
                                   format_func=lambda i: exs[i].title or f"example {i}")
        ex = exs[int(idx)]
        with st.sidebar.expander("Example text", expanded=False):
            st.write(ex.text)
        return ex.text, ex.categories, source
    if source == "Free text":
        default = exs[0].text if exs else ""
        if "wb_text" not in st.session_state:
            st.session_state["wb_text"] = default
        text = st.sidebar.text_area("Text", key="wb_text", height=160,
                                    help=f"At most {core.MAX_TOKENS:,} tokens.")
        return text, None, source
    default_prompt = " ".join(exs[0].text.split()[:8]) if exs else ""
    if "wb_prompt" not in st.session_state:
        st.session_state["wb_prompt"] = default_prompt
    prompt = st.sidebar.text_input("Prompt", key="wb_prompt")
    n = st.sidebar.number_input("New tokens", 1, 400, 40, key="wb_new_tokens")
    temp = st.sidebar.slider("Temperature (1.0 = greedy)", 0.2, 2.0, 1.0, 0.1, key="wb_temperature")
    seed = st.sidebar.number_input("Sampling seed", 0, 10_000, 0, key="wb_seed")
    try:
        text = _generate(str(ckpt.path), ckpt.key, prompt, int(n), float(temp), int(seed))
    except WorkbenchError as e:
        st.error(f"Cannot generate: {e}")
        return None
    with st.sidebar.expander("Generated text", expanded=True):
        st.write(text)
    return text, None, source


def sidebar() -> Context | None:
    """Model picker and input in the sidebar; the traced context, or None after showing why."""
    ckpt = _model_picker()
    if ckpt is None:
        return None
    if ckpt.task_problem:
        st.warning(ckpt.task_problem)
    picked = _input_picker(ckpt)
    if picked is None:
        return None
    text, cats, source = picked
    try:
        run, warnings = trace(ckpt, text, cats)
    except WorkbenchError as e:
        st.error(str(e))
        return None
    except Exception as e:  # noqa: BLE001
        st.error(f"Tracing failed: {type(e).__name__}: {e}")
        return None
    for w in warnings:
        st.warning(w)
    st.sidebar.caption(f"{ckpt.name} · {run.T} tokens · mean {run.loss_label()}: {core.fmt_loss(run.mean_loss())}")
    return Context(ckpt, run, warnings, source)


def context() -> Context | None:
    """The context the app set up for this script run (or a fresh sidebar when a page runs alone)."""
    if "_wb_ctx" in st.session_state:  # app.py overwrites it on every run, before the page runs
        return st.session_state["_wb_ctx"]
    return sidebar()


# ------------------------------------------------------------------ widgets
def mark_done() -> None:
    """An invisible element numbered by the session's run: tests (and anything driving the app)
    know a page has finished when the number they see exceeds the one seen before they acted."""
    n = st.session_state.get("_wb_run", 0) + 1
    st.session_state["_wb_run"] = n
    st.markdown(f'<span class="wb-run-done" data-run="{n}"></span>', unsafe_allow_html=True)


def explain(text: str) -> None:
    """The short plain-language explanation at the top of a page."""
    st.markdown(f"<div style='color:#555;font-size:0.95rem;border-left:3px solid #9ab;padding-left:10px;"
                f"margin-bottom:8px'>{text}</div>", unsafe_allow_html=True)


def window(T: int, key: str, default_width: int = DEFAULT_WINDOW, max_width: int = MAX_WINDOW) -> tuple[int, int]:
    """A position window [t0, t1): a slider when the text is longer than ``default_width``, with a
    note saying that the charts show a window."""
    if T <= default_width:
        return 0, T
    c1, c2 = st.columns([3, 1])
    width = c2.number_input("Window width", 16, min(max_width, T), min(default_width, T), step=16,
                            key=f"{key}_width")
    start = c1.slider("Window start (token position)", 0, max(0, T - int(width)), 0, key=f"{key}_start")
    t0, t1 = core.window_bounds(T, int(start), int(width))
    st.caption(f"Long text: the charts show positions {t0}–{t1 - 1} of {T} (a window keeps them responsive; "
               "move the slider to look elsewhere). Numbers are computed on the whole text.")
    return t0, t1


def plot(fig, key: str) -> None:
    st.plotly_chart(fig, width="stretch", key=key)


def require(condition: bool, message: str) -> bool:
    """Show ``message`` as an info box and return False when ``condition`` fails."""
    if not condition:
        st.info(message)
    return condition


def show_error(e: Exception, what: str) -> None:
    if isinstance(e, (WorkbenchError, ValueError, KeyError)):
        st.error(f"{what}: {e}")
    else:
        st.error(f"{what}: {type(e).__name__}: {e}")


# ------------------------------------------------------------------ cached analyses
@st.cache_data(show_spinner="Integrated gradients over the slots…", max_entries=32)
def slot_ig(path: str, key: str, ids: tuple[int, ...], layer: int, position: int, target: int, n_steps: int):
    """(attributions [T', S], relative error) of the target logit to the slot read weights."""
    import torch

    from probes.attribution import slot_attributions

    prefix = torch.tensor([ids[: position + 1]], dtype=torch.long)
    res = slot_attributions(_checkpoint(path, key).model, prefix, layer=layer, position=position, target=target,
                            n_steps=n_steps)
    return res.attributions.numpy(), float(res.relative_error)


USAGE_N = int(os.environ.get("PULSE_WORKBENCH_USAGE_N", "256"))  # held-out examples of the usage table


@st.cache_data(show_spinner="Measuring what this model relies on (its held-out split, each mechanism off)…",
               max_entries=8)
def _usage(path: str, key: str, n: int) -> dict:
    from probes.usage import checkpoint_usage

    ckpt = _checkpoint(path, key)  # usage.json is used when it was measured for these weights and n
    return checkpoint_usage(path, n=n, model=working_copy(ckpt), write=False).to_dict()


def usage(ckpt: Checkpoint, n: int | None = None):
    """(UsageReport, None), or (None, why) when the task cannot be rebuilt: the
    :mod:`probes.usage` table of ``ckpt``, cached per checkpoint."""
    from probes.usage import UsageReport

    try:
        return UsageReport.from_dict(_usage(str(ckpt.path), ckpt.key, int(n or USAGE_N))), None
    except Exception as e:  # noqa: BLE001 - the page says why instead of a traceback
        return None, f"{type(e).__name__}: {e}"


def usage_line(ckpt: Checkpoint, *mechanisms: str) -> None:
    """One line per page: how much the page's mechanism matters on this model (see Overview)."""
    report, why = usage(ckpt)
    if report is None:
        st.caption(f"How much this model uses it is unknown: {why}")
        return
    st.markdown("**How much this model uses it.** " + " ".join(report.sentence(m) for m in mechanisms))


@st.cache_data(show_spinner="Writing Parquet…", max_entries=8)
def parquet_zip(path: str, key: str, text: str, categories: tuple[str, ...] | None) -> tuple[bytes, list[str]]:
    """The trace as a zip of its ``to_parquet`` folder: (bytes, file names)."""
    import io
    import tempfile
    import zipfile

    run, _ = _run(path, key, text, categories)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "trace"
        run.trace.to_parquet(folder)
        buf = io.BytesIO()
        names = []
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    arc = str(Path("trace") / f.relative_to(folder))
                    zf.write(f, arc)
                    names.append(arc)
    return buf.getvalue(), names
