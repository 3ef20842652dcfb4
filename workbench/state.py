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


@st.cache_data(show_spinner="Tracing the text…", show_time=True, max_entries=24)
def _run(path: str, key: str, text: str, categories: tuple[str, ...] | None) -> tuple[Run, list[str]]:
    return core.trace_text(_checkpoint(path, key), text, list(categories) if categories else None)


def trace(ckpt: Checkpoint, text: str, categories: list[str] | None = None) -> tuple[Run, list[str]]:
    """Cached trace of ``text`` under ``ckpt`` (raises WorkbenchError for bad text)."""
    return _run(str(ckpt.path), ckpt.key, text, tuple(categories) if categories else None)


@st.cache_data(show_spinner="Generating…", max_entries=24)
def _generate(path: str, key: str, prompt: str, n: int, temperature: float, seed: int, top_k: int = 0,
              top_p: float = 1.0) -> str:
    return core.generate_text(_checkpoint(path, key), prompt, n, temperature, seed, top_k=top_k or None,
                              top_p=top_p if top_p < 1 else None)


def has_implicit_attention(ckpt: Checkpoint) -> bool:
    """Whether the checkpoint's model computes its mixers' exact implicit attention (an adapter capability)."""
    from probes.adapters import has_implicit_attention as has

    return has(ckpt.model)


@st.cache_data(show_spinner="Implicit attention…", max_entries=32)
def _implicit(path: str, key: str, ids: tuple[int, ...], layer: int, channel: int) -> dict[str, Any]:
    import torch

    from probes.adapters import implicit_attention as implicit

    ia = implicit(_checkpoint(path, key).model, torch.tensor([ids], dtype=torch.long), layer, channel)
    return {"matrix": ia.matrix[0, 0].numpy(), "residual": float(ia.residual), "max_abs_error": float(ia.max_abs_error),
            "unit": ia.layout[1], "notes": ia.notes}


def implicit_attention(ckpt: Checkpoint, run: Run, layer: int, channel: int) -> dict[str, Any]:
    """Cached exact implicit attention of ``layer``'s mixer core, channel (or head) ``channel``, on the
    run's tokens: ``matrix`` [T, T] (float64), ``residual`` (||A @ V - core output|| / ||core output||),
    ``max_abs_error``, ``unit`` (the axis: channel or head) and the adapter's ``notes``."""
    return _implicit(str(ckpt.path), ckpt.key, tuple(run.ids), int(layer), int(channel))


@st.cache_data(show_spinner=False, max_entries=64)
def _tokenizer_signature(path: str, key: str) -> str:
    return core.tokenizer_signature(path)


def same_tokenizer(a: str | Path, b: str | Path) -> bool:
    """Whether the checkpoint folders ``a`` and ``b`` have tokenizers with the same vocabulary
    (so one text is the same tokens to both)."""
    sigs = []
    for p in (a, b):
        p = Path(str(p).strip()).expanduser()
        sigs.append(_tokenizer_signature(str(p), core.folder_key(p)) if str(p).strip() else "")
    return bool(sigs[0]) and sigs[0] == sigs[1]


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
        if str(text).strip():
            st.session_state["_wb_had_text"] = True
        return text, None, source
    if "wb_prompt" not in st.session_state:
        st.session_state["wb_prompt"] = _default_prompt(ckpt, exs)
    st.sidebar.caption(core.trained_to_produce(ckpt))
    prompt = st.sidebar.text_input("Prompt", key="wb_prompt")
    n = st.sidebar.number_input("New tokens", 1, 400, 40, key="wb_new_tokens")
    temp = st.sidebar.slider("Temperature (0 = greedy)", 0.0, 2.0, 0.0, 0.1, key="wb_temperature",
                             help="0: always the most likely token (greedy; the same text every time, and a "
                                  "small model often repeats itself). Above 0: tokens are drawn at random from the "
                                  "model's probabilities, flattened by higher temperatures.")
    greedy = float(temp) == 0.0
    c1, c2 = st.sidebar.columns(2)
    top_k = c1.number_input("Top-k (0 = all)", 0, int(ckpt.tokenizer.vocab_size), 0, key="wb_top_k", disabled=greedy,
                            help="Sample only among the k most likely tokens.")
    top_p = c2.slider("Top-p", 0.05, 1.0, 1.0, 0.05, key="wb_top_p", disabled=greedy,
                      help="Sample only among the most likely tokens whose probabilities add up to p (1 = all).")
    seed = st.sidebar.number_input("Sampling seed", 0, 10_000, 0, key="wb_seed", disabled=greedy)
    try:
        text = _generate(str(ckpt.path), ckpt.key, prompt, int(n), float(temp), int(seed),
                         0 if greedy else int(top_k), 1.0 if greedy else float(top_p))
    except WorkbenchError as e:
        st.error(f"Cannot generate: {e}")
        return None
    with st.sidebar.expander("Generated text", expanded=True):
        st.write(text)
        if greedy:
            st.caption("Greedy decoding: a repeated word means the model's best guess did not change; raise the "
                       "temperature to sample instead.")
    return text, None, source


def _default_prompt(ckpt: Checkpoint, exs: list[Example]) -> str:
    """The first example up to its first question (what an answers-only story model completes),
    else its first eight words."""
    if not exs:
        return ""
    words = exs[0].text.split()
    if core.trained_on(ckpt) == "answers" and "?" in words:
        return " ".join(words[: words.index("?") + 1])
    return " ".join(words[:8])


def _vocabulary(ckpt: Checkpoint) -> None:
    """The model's vocabulary in the sidebar, and how text is normalised before it is looked up."""
    tok = ckpt.tokenizer
    vocab = getattr(tok, "vocab", None)
    if vocab is None:
        with st.sidebar.expander(f"Vocabulary ({tok.vocab_size:,} tokens)", expanded=False):
            st.caption("A byte-level BPE tokenizer: any text can be encoded, split into sub-word pieces.")
        return
    words = [w for w in vocab if w not in getattr(tok, "special_tokens", ())]
    with st.sidebar.expander(f"Vocabulary ({len(words)} words)", expanded=False):
        how = getattr(tok, "normalization", "")
        st.caption(("Text is read as the model was trained: " + how + ". " if how else
                    "Text is split at spaces and looked up as typed (case matters). ")
                   + "Any other word is read as <unk>.")
        st.markdown(" ".join(f"`{w}`" for w in words))


def sidebar() -> Context | None:
    """Model picker and input in the sidebar; the traced context, or None after showing why."""
    ckpt = _model_picker()
    if ckpt is None:
        return None
    if ckpt.task_problem:
        st.warning(ckpt.task_problem)
    _vocabulary(ckpt)
    picked = _input_picker(ckpt)
    if picked is None:
        return None
    text, cats, source = picked
    if source == "Free text" and not str(text).strip() and not st.session_state.get("_wb_had_text"):
        # nothing typed yet (no example to start from): ask for text; a text emptied later is an error
        st.info("Type a text in the sidebar (Input → Text) to trace it.")
        return None
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
    normalized = core.normalize_text(ckpt.tokenizer, text)
    if source != "Example story" and normalized != " ".join(text.split()):
        st.sidebar.caption(f"Read as: {normalized[:300]}{' …' if len(normalized) > 300 else ''}")
    st.sidebar.caption(f"{ckpt.name} · {run.T} tokens · mean {run.loss_label()}: {core.fmt_loss(run.mean_loss())}")
    return Context(ckpt, run, warnings, source)


def context() -> Context | None:
    """The context the app set up for this script run (or a fresh sidebar when a page runs alone)."""
    if "_wb_ctx" in st.session_state:  # app.py overwrites it on every run, before the page runs
        return st.session_state["_wb_ctx"]
    return sidebar()


# ------------------------------------------------------------------ widgets
def progress_bar(label: str):
    """A progress bar for long work, made INSIDE the cached function that does the work (so that
    Streamlit can replay it on a cache hit, where it is closed at once). Returns
    ``(update(done, total, message=""), close())``."""
    bar = st.progress(0.0, text=label)

    def update(done: int, total: int, message: str = "") -> None:
        bar.progress(min(1.0, max(0.0, done / max(total, 1))), text=f"{label}: {message}" if message else label)

    return update, bar.empty


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
    note saying that the charts show a window. The start is kept (clamped) when the width
    changes: the slider's range changes with the width, which would reset it."""
    if T <= default_width:
        return 0, T
    c1, c2 = st.columns([3, 1])
    top_width = max(1, min(max_width, T))
    width = int(c2.number_input("Window width", min(16, top_width), top_width, min(default_width, top_width),
                                step=16, key=f"{key}_width"))
    kept = f"_{key}_start_kept"
    last = int(st.session_state.get(kept, 0))
    if T - width > 0:
        start = int(c1.slider("Window start (token position)", 0, T - width, min(last, T - width),
                              key=f"{key}_start"))
        st.session_state[kept] = start
    else:
        start = 0
        c1.caption("The window covers the whole text.")
    t0, t1 = core.window_bounds(T, int(start), int(width))
    st.caption(f"Long text: the charts show positions {t0}–{t1 - 1} of {T} (a window keeps them responsive; "
               "move the slider to look elsewhere). Numbers are computed on the whole text.")
    return t0, t1


def position(label: str, lo: int, hi: int, value: int, key: str, help: str | None = None) -> int:
    """A token position in [lo, hi]: a slider, or a caption naming the only position when
    ``lo == hi`` (a slider needs two values)."""
    lo, hi = int(lo), int(max(lo, hi))
    if hi == lo:
        st.caption(f"{label}: {lo} (the only one)")
        return lo
    return int(st.slider(label, lo, hi, int(min(max(value, lo), hi)), key=key, help=help))


def position_range(label: str, lo: int, hi: int, value: tuple[int, int], key: str) -> tuple[int, int]:
    """A range of token positions within [lo, hi]; a caption when there is only one position."""
    lo, hi = int(lo), int(max(lo, hi))
    if hi == lo:
        st.caption(f"{label}: {lo} (the only one)")
        return lo, lo
    a, b = (int(min(max(v, lo), hi)) for v in value)
    a, b = st.slider(label, lo, hi, (min(a, b), max(a, b)), key=key)
    return int(a), int(b)


def plot(fig, key: str) -> None:
    st.plotly_chart(fig, width="stretch", key=key)


def lacks(what: str, kind: str, why: str = "", tr=None) -> str:
    """ "This model has no <what> (its trace has no …)…": what the frame ``kind`` needs and
    ``tr`` lacks (:meth:`probes.frames.FrameSpec.missing`), naming the checkpoints that have it."""
    from probes.frames import frame_spec

    spec = frame_spec(kind)
    missing = spec.missing(tr) if tr is not None else list(spec.required)
    needs = "; ".join(n.describe() for n in missing) or "entries it needs"
    have = core.checkpoints_with(kind)
    where = (f" These checkpoints have it: {', '.join(have)} (pick one in the sidebar)." if have else "")
    return (f"This model has no {what} (its trace has no {needs}), so there is nothing to show on this page."
            f"{' ' + why if why else ''}{where}")


def needs(tr, kind: str, what: str, why: str = "") -> bool:
    """Whether the trace ``tr`` has the frame ``kind``; if not, an info box saying which
    mechanism is missing, what the trace lacks, and which checkpoints have it."""
    from probes.frames import frame_spec

    return require(frame_spec(kind).applies(tr), "" if frame_spec(kind).applies(tr) else lacks(what, kind, why, tr))


def layers_of(tr, kind: str) -> dict[int, str]:
    """{layer: recorded name} of the entries the frame ``kind`` reads first (its first required
    need) in ``tr``: where a page can look, and which tensor to read there."""
    from probes.frames import frame_spec
    from pulse.hooks import layer_of

    need = next(n for n in frame_spec(kind).required if n.metadata is None)
    return {layer_of(n): n for n in need.found(tr) if layer_of(n) is not None}


def entry(tr, kind: str, layer: int, name: str) -> str:
    """The recorded name, in ``layer``, of the entry of frame ``kind`` whose need is named
    ``name`` (a glob such as ``*.hook_read_weights``) or, without a glob, the first need."""
    import fnmatch

    from probes.frames import frame_spec
    from pulse.hooks import layer_of

    for need in frame_spec(kind).needs:
        if need.metadata is None:
            for n in need.found(tr):
                if layer_of(n) == layer and fnmatch.fnmatchcase(n, name):
                    return n
    raise KeyError(f"no {name} entry of {kind} in layer {layer}")


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
@st.cache_data(show_spinner="Integrated gradients over the state-bank slots…", show_time=True, max_entries=32)
def slot_ig(path: str, key: str, ids: tuple[int, ...], layer: int, position: int, target: int, n_steps: int):
    """(attributions [T', S], relative error) of the target logit to the slot read weights."""
    import torch

    from probes.attribution import slot_attributions

    prefix = torch.tensor([ids[: position + 1]], dtype=torch.long)
    res = slot_attributions(_checkpoint(path, key).model, prefix, layer=layer, position=position, target=target,
                            n_steps=n_steps)
    return res.attributions.numpy(), float(res.relative_error)


USAGE_N = int(os.environ.get("PULSE_WORKBENCH_USAGE_N", "256"))  # held-out examples of the usage table


@st.cache_data(show_spinner="Measuring what this model relies on (its held-out split, each mechanism off; "
                            "up to a minute, once per checkpoint)…", show_time=True, max_entries=8)
def _usage(path: str, key: str, n: int) -> dict:
    from probes.usage import checkpoint_usage

    ckpt = _checkpoint(path, key)  # usage.json is used when it was measured for these weights and n
    update, close = progress_bar(f"Measuring what this model uses ({n} held-out examples, each mechanism off)")
    try:
        return checkpoint_usage(path, n=n, model=working_copy(ckpt), write=False,
                                progress=lambda done, total: update(done, total, f"{done}/{total} forward passes")
                                ).to_dict()
    finally:
        close()


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


@st.cache_data(show_spinner="Writing Parquet…", show_time=True, max_entries=8)
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
