"""Tidy long-form tables from a :class:`~probes.trace.Trace`: ``tr.frame(kind, **options)``.

(This module sits below :mod:`probes.trace` and :mod:`probes.parquet`, which import it:
``Trace`` in the annotations names that class without importing it.)

Every table is a pandas DataFrame with one row per observation. ``pos`` is the absolute
token position (streamed pieces keep counting), ``sample`` the batch row, ``layer`` the
block index. Padding positions (``tr.attention_mask == 0``) are left out of per-token kinds.

=================  ==========================================================================
kind               columns (what it reads: declared hook kind and layout, see pulse.hooks)
=================  ==========================================================================
routing            sample, layer, pos, slot, weight            (routing [batch, pos, slot])
read_weights       sample, layer, pos, slot, weight            (memory_read [batch, pos, slot])
gates              sample, layer, update, pos, slot, gate, value (gate [batch, update, slot,
                   d_state], mean over the state dims; ``per_dim=True`` adds ``dim`` and gives
                   one row per dim; ``gate`` is the site's name, ``hook_<gate>_gate``); rows of
                   updates that did not happen (positions of the same module: -1) are left out
importance         layer, slot, importance, alive              (importance / alive [slot])
pruning_events     layer, event, step, kind, slot, importance  (state-bank events at trace time)
memory_reads       sample, layer, pos, rank, slot, score, weight (memory_read [batch, pos, rank]:
                   ``hook_read_slots`` and its scores and weights; entries actually read)
decay              layer, head, gamma, half_life               (decay [head])
decay_attention    sample, layer, head, t, s, weight           (``layer=``, ``head=``,
                   ``window=(t0, t1)``, ``s_start=``, ``sample=``; see probes.attention)
token_loss         sample, pos, token_id, token, loss          (loss.per_token)
predictions        sample, pos, rank, token_id, token, prob    (predictions.*)
recurrent          sample, layer, pos, input_gate_mean, state_norm, state_mean
                                                               (state [batch, pos, d_model])
fusion_gate        sample, layer, pos, gate                    (hook_fusion_gate, mean over
                                                               hidden dims)
=================  ==========================================================================

The frame registry
------------------
Each table is registered once, where its builder is defined::

    @register_frame("routing", needs=[Need("routing", ("batch", "pos", "slot"))], per_piece=True,
                    columns=("sample", "layer", "pos", "slot", "weight"))
    def routing(tr): ...

``needs`` says what the trace must hold: :class:`Need` records that match recorded entries
by their declared kind (and layout), by a name glob where one kind has several roles, or a
metadata key. A need with ``optional=True`` is a *sibling*: read when it is recorded in the
same module as a required one, never required. ``per_piece`` says whether the table is
written for every piece of a streamed trace (it has a step axis) or once, from the
per-parameter values (``per_piece=False``); ``stored=False`` keeps it out of Parquet
(``decay_attention``: one window of one head, on request). Everything else derives from the
registry: :data:`FRAME_KINDS`, :func:`available_kinds`, :func:`frame`, the Parquet piece and
parameter kinds (:func:`stored_kinds`), and :func:`frame_hooks`, the names filter of the hook
sites the frames read (the workbench's trace list). :func:`frame_specs` lists the registered
:class:`FrameSpec` records.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pulse.hooks import HookSite, check_layout, layer_of

__all__ = [
    "FRAME_KINDS", "FrameHooks", "FrameSpec", "Need", "available_kinds", "frame", "frame_hooks", "frame_spec",
    "frame_specs", "register_frame", "stored_kinds",
]


# ------------------------------------------------------------------ the registry
@dataclass(frozen=True)
class Need:
    """One thing a frame reads.

    ``Need(kind, layout)`` matches recorded entries whose declared kind (and layout, when
    given) are these; ``name`` (an fnmatch glob on the canonical name) narrows it where one
    kind and layout carry several roles; ``Need(metadata=key)`` is a trace metadata entry
    (holds when ``tr.metadata[key]`` is truthy). ``optional=True``: a sibling, read when it is
    recorded in the same module as a required entry of the frame, never required."""

    kind: str | None = None
    layout: tuple[str, ...] | None = None
    name: str | None = None
    metadata: str | None = None
    optional: bool = False

    def __post_init__(self) -> None:
        if self.layout is not None:
            object.__setattr__(self, "layout", check_layout(self.layout))
        if self.metadata is not None:
            if self.kind is not None or self.layout is not None or self.name is not None:
                raise ValueError("Need: a metadata need names only the metadata key")
        elif self.kind is None and self.name is None:
            raise ValueError("Need: give a kind (with an optional layout and name) or a name glob, or metadata=")

    def matches(self, name: str, kind: str | None, layout: Sequence[str] | None) -> bool:
        """Whether an entry with this canonical ``name``, declared ``kind`` and ``layout`` fits."""
        if self.metadata is not None:
            return False
        if self.kind is not None and kind != self.kind:
            return False
        if self.layout is not None and (layout is None or tuple(layout) != self.layout):
            return False
        return self.name is None or fnmatch.fnmatchcase(name, self.name)

    def matches_site(self, site: HookSite) -> bool:
        return self.matches(site.name, site.kind, site.layout)

    def found(self, tr: Trace) -> list[str]:
        """Recorded names of ``tr`` that fit, in the trace's order."""
        if self.metadata is not None:
            return []
        return [n for n in tr.names if self.matches(n, tr.kind(n), tr.layout(n))]

    def holds(self, tr: Trace) -> bool:
        if self.metadata is not None:
            return bool(tr.metadata.get(self.metadata))
        return bool(self.found(tr))

    def describe(self) -> str:
        if self.metadata is not None:
            return f"metadata[{self.metadata!r}]"
        parts = [self.kind or "any kind"]
        if self.layout is not None:
            parts.append("[" + ", ".join(self.layout) + "]")
        if self.name is not None:
            parts.append(f"named {self.name}")
        return " ".join(parts) + (" (optional)" if self.optional else "")


@dataclass(frozen=True)
class FrameSpec:
    """A registered tidy table: ``kind``, its builder ``build(tr, **options)``, ``needs``
    (:class:`Need`), ``per_piece`` (written per streamed piece, else once from per-parameter
    values), ``stored`` (written to Parquet at all), ``columns`` (with default options) and
    ``doc`` (the builder's first docstring line)."""

    kind: str
    build: Callable[..., pd.DataFrame]
    needs: tuple[Need, ...]
    per_piece: bool
    stored: bool = True
    columns: tuple[str, ...] = ()
    doc: str = ""

    @property
    def required(self) -> tuple[Need, ...]:
        return tuple(n for n in self.needs if not n.optional)

    def missing(self, tr: Trace) -> list[Need]:
        """The required needs ``tr`` does not hold (empty: the frame applies)."""
        return [n for n in self.required if not n.holds(tr)]

    def applies(self, tr: Trace) -> bool:
        return not self.missing(tr)


_REGISTRY: dict[str, FrameSpec] = {}


def register_frame(kind: str, *, needs: Iterable[Need], per_piece: bool, stored: bool = True,
                   columns: Iterable[str] = (), replace: bool = False) -> Callable[[Callable], Callable]:
    """Decorator registering ``build(tr, **options) -> DataFrame`` as the frame ``kind`` (see the
    module doc). A kind registered twice raises ``ValueError`` unless ``replace=True``. The
    builder is returned unchanged."""
    needs = tuple(needs)
    if not isinstance(kind, str) or not kind.isidentifier():
        raise ValueError(f"kind: expected an identifier, got {kind!r}")
    if not needs or not all(isinstance(n, Need) for n in needs):
        raise TypeError(f"needs: expected one or more Need records for frame {kind!r}")
    if all(n.optional for n in needs):
        raise ValueError(f"needs: frame {kind!r} needs at least one required (not optional) entry")

    def decorate(build: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
        if kind in _REGISTRY and not replace:
            raise ValueError(f"kind: frame {kind!r} is registered already (pass replace=True)")
        doc = (build.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[kind] = FrameSpec(kind, build, needs, bool(per_piece), bool(stored), tuple(columns), doc)
        return build

    return decorate


def frame_specs() -> list[FrameSpec]:
    """The registered frames, in registration order."""
    return list(_REGISTRY.values())


def frame_spec(kind: str) -> FrameSpec:
    if kind not in _REGISTRY:
        raise ValueError(f"kind: {kind!r} is not a frame kind; known kinds: {list(FRAME_KINDS)}")
    return _REGISTRY[kind]


class _Kinds(Sequence[str]):
    """A live, read-only tuple-like view of the registered kinds that pass ``keep``."""

    def __init__(self, keep: Callable[[FrameSpec], bool], label: str) -> None:
        self._keep, self._label = keep, label

    def _items(self) -> tuple[str, ...]:
        return tuple(k for k, s in _REGISTRY.items() if self._keep(s))

    def __getitem__(self, i):  # type: ignore[override]
        return self._items()[i]

    def __len__(self) -> int:
        return len(self._items())

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __contains__(self, kind: object) -> bool:
        return kind in self._items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Kinds):
            return self._items() == other._items()
        return isinstance(other, (tuple, list)) and self._items() == tuple(other)

    def __hash__(self) -> int:
        return hash(self._items())

    def __repr__(self) -> str:
        return f"{self._label}{self._items()!r}"


#: every registered frame kind, in registration order (a live view of the registry)
FRAME_KINDS: Sequence[str] = _Kinds(lambda s: True, "FRAME_KINDS")


def stored_kinds(per_piece: bool) -> Sequence[str]:
    """Live view of the kinds written to Parquet: per streamed piece (``per_piece=True``) or
    once, from the per-parameter values (``False``)."""
    flag = bool(per_piece)
    return _Kinds(lambda s: s.stored and s.per_piece == flag, "PIECE_KINDS" if flag else "PARAM_KINDS")


def available_kinds(tr: Trace) -> list[str]:
    """Frame kinds this trace holds what they need for."""
    return [k for k, s in _REGISTRY.items() if s.applies(tr)]


def frame(tr: Trace, kind: str, **kwargs: Any) -> pd.DataFrame:
    """``tr.frame(kind)``; an unknown kind raises ``ValueError``, one whose needs the trace
    does not hold raises ``KeyError`` naming them; both list the kinds available."""
    if kind not in _REGISTRY:
        raise ValueError(f"kind: {kind!r} is not a frame kind; known kinds: {list(FRAME_KINDS)}; "
                         f"available in this trace: {available_kinds(tr)}")
    spec = _REGISTRY[kind]
    missing = spec.missing(tr)
    if missing:
        raise KeyError(f"kind: {kind!r} does not apply: it needs {'; '.join(n.describe() for n in missing)}, "
                       f"which this trace did not record; available in this trace: {available_kinds(tr)}")
    return spec.build(tr, **kwargs)


class FrameHooks:
    """A names filter for :func:`probes.trace.trace` / ``run_with_trace``: the hook sites that
    the frames ``kinds`` (default: all registered, looked up when the filter is used) read,
    chosen by their declared kinds and layouts (required needs anywhere in the model, optional
    ones in the modules of the required). A model none of whose sites a frame reads gives an
    empty selection, not an error."""

    def __init__(self, kinds: Iterable[str] | None = None) -> None:
        self.kinds = None if kinds is None else tuple(kinds)
        for k in self.kinds or ():
            frame_spec(k)

    def specs(self) -> list[FrameSpec]:
        return frame_specs() if self.kinds is None else [frame_spec(k) for k in self.kinds]

    def select(self, sites: Mapping[str, HookSite]) -> list[str]:
        """Canonical names of ``sites`` (``pulse.hooks.hook_sites(model)``) the frames read, in model order."""
        chosen: set[str] = set()
        for spec in self.specs():
            primary = {n for n, s in sites.items() if any(need.matches_site(s) for need in spec.required)}
            modules = {_module(n) for n in primary}
            chosen |= primary
            for need in spec.needs:
                if need.optional:
                    chosen |= {n for n, s in sites.items() if _module(n) in modules and need.matches_site(s)}
        return [n for n in sites if n in chosen]

    def __repr__(self) -> str:
        return "frame_hooks()" if self.kinds is None else f"frame_hooks({list(self.kinds)!r})"


def frame_hooks(kinds: Iterable[str] | None = None) -> FrameHooks:
    """The names filter of the hook sites the frames ``kinds`` (default all) read (see :class:`FrameHooks`)."""
    return FrameHooks(kinds)


# ------------------------------------------------------------------ selecting entries
def _module(name: str) -> str:
    """``blocks.0.states.hook_routing`` -> ``blocks.0.states`` (the module holding the site)."""
    return name.rpartition(".")[0]


def _layers(tr: Trace, need: Need) -> dict[int, str]:
    """{layer: name} of the recorded entries fitting ``need`` (the last one of a layer)."""
    out = {}
    for n in need.found(tr):
        i = layer_of(n)
        if i is not None:
            out[i] = n
    return dict(sorted(out.items()))


def _sibling(tr: Trace, name: str, need: Need) -> str | None:
    """The first recorded entry in ``name``'s module that fits ``need``, or None."""
    mod = _module(name)
    for n in need.found(tr):
        if n != name and _module(n) == mod:
            return n
    return None


def _first(tr: Trace, need: Need) -> str | None:
    found = need.found(tr)
    return found[0] if found else None


# ------------------------------------------------------------------ helpers
def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    return [a.astype(np.int64) for a in np.unravel_index(np.arange(int(np.prod(shape)), dtype=np.int64), shape)] \
        if len(shape) else []


def _real(tr: Trace, B: int, T: int) -> np.ndarray | None:
    """[B, T] bool of real tokens held in this trace, or None when unknown/all real."""
    m = tr.attention_mask
    if m is None or tuple(m.shape) != (B, T):
        return None
    m = _np(m) > 0.5
    return None if m.all() else m


def _token_table(tr: Trace, name: str, value_cols: dict[str, np.ndarray], extra_dims: list[str]) -> pd.DataFrame:
    """Long form of [B, T, *extra] arrays (all with the same shape) of one hook."""
    arr0 = next(iter(value_cols.values()))
    shape = arr0.shape
    idx = _grid(shape)
    cols: dict[str, Any] = {"sample": idx[0], "pos": idx[1] + tr.step_start(name)}
    for d, a in zip(extra_dims, idx[2:]):
        cols[d] = a
    for k, v in value_cols.items():
        cols[k] = v.reshape(-1)
    df = pd.DataFrame(cols)
    real = _real(tr, shape[0], shape[1])
    if real is not None:
        df = df[real[idx[0], idx[1]]]
    return df


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in columns})


def _per_layer(tr: Trace, need: Need, build: Callable[[int, str], pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = []
    for layer, name in _layers(tr, need).items():
        df = build(layer, name)
        df.insert(0 if "sample" not in df.columns else 1, "layer", layer)
        frames.append(df)
    if not frames:
        return _empty(columns)
    return pd.concat(frames, ignore_index=True)[columns]


# ------------------------------------------------------------------ the needs
ROUTING = Need("routing", ("batch", "pos", "slot"))
SLOT_READ = Need("memory_read", ("batch", "pos", "slot"))  # a state bank's read weights over its slots
BANK_GATE = Need("gate", ("batch", "update", "slot", "d_state"))
UPDATE_POSITIONS = Need("positions", ("batch", "update"), optional=True)
IMPORTANCE = Need("importance", ("slot",))
ALIVE = Need("alive", ("slot",), optional=True)
BANK_EVENTS = Need(metadata="state_bank_events")
# memory_read [batch, pos, rank] has three roles in one module -- the slots read, their scores,
# their weights -- so these are picked by name
READ_SLOTS = Need("memory_read", ("batch", "pos", "rank"), name="*.hook_read_slots")
READ_SCORES = Need("memory_read", ("batch", "pos", "rank"), name="*.hook_read_scores", optional=True)
READ_WEIGHTS = Need("memory_read", ("batch", "pos", "rank"), name="*.hook_read_weights", optional=True)
HEAD_DECAY = Need("decay", ("head",))
# q and k features share kind and layout (and probes.attention reads the linear attention's
# sites by name): picked by name
Q_FEATURES = Need("attention_input", ("batch", "head", "pos", "d_k"), name="blocks.*.attn.hook_q_features")
K_FEATURES = Need("attention_input", ("batch", "head", "pos", "d_k"), name="blocks.*.attn.hook_k_features")
NORMALIZER = Need("normalizer", ("batch", "head", "pos"))
LOSS = Need("loss", ("batch", "pos"))  # the trace's own entry loss.per_token (probes.trace.ENTRY_LAYOUTS)
# the top-k ids and their probabilities are both of kind "prediction" with one layout: by name
TOP_IDS = Need("prediction", ("batch", "pos", "rank"), name="predictions.top_ids")
TOP_PROBS = Need("prediction", ("batch", "pos", "rank"), name="predictions.top_probs")
TOKEN_STATE = Need("state", ("batch", "pos", "d_model"))  # a recurrent state over tokens
STATE_INPUT_GATE = Need("gate", ("batch", "pos", "d_model"), optional=True)  # beside the state
# gate [batch, pos, d_model] is also the recurrent layer's input gate: the block's fusion gate by name
FUSION_GATE = Need("gate", ("batch", "pos", "d_model"), name="*.hook_fusion_gate")


# ------------------------------------------------------------------ the frames
def _slot_frame(tr: Trace, need: Need) -> pd.DataFrame:
    cols = ["sample", "layer", "pos", "slot", "weight"]
    return _per_layer(tr, need, lambda l, n: _token_table(tr, n, {"weight": _np(tr[n])}, ["slot"]), cols)


@register_frame("routing", needs=[ROUTING], per_piece=True, columns=("sample", "layer", "pos", "slot", "weight"))
def routing(tr: Trace) -> pd.DataFrame:
    """Write (routing) weights of every token to every state slot."""
    return _slot_frame(tr, ROUTING)


@register_frame("read_weights", needs=[SLOT_READ], per_piece=True,
                columns=("sample", "layer", "pos", "slot", "weight"))
def read_weights(tr: Trace) -> pd.DataFrame:
    """Read weights of every token over the state slots."""
    return _slot_frame(tr, SLOT_READ)


def _gate_label(name: str) -> str:
    """``blocks.0.states.hook_update_gate`` -> ``update``: the kind says it is a gate, the name which."""
    leaf = name.rpartition(".")[2]
    m = re.fullmatch(r"hook_(.+)_gate", leaf)
    return m.group(1) if m else leaf.removeprefix("hook_")


@register_frame("gates", needs=[BANK_GATE, UPDATE_POSITIONS], per_piece=True,
                columns=("sample", "layer", "update", "pos", "slot", "gate", "value"))
def gates(tr: Trace, per_dim: bool = False) -> pd.DataFrame:
    """State-bank gate values per update and slot (mean over the state dims, or per dim)."""
    names = [n for n in BANK_GATE.found(tr) if layer_of(n) is not None]
    # gate by gate in the order its module declares them, each layer by layer
    order: dict[str, list[str]] = {}
    for n in names:
        order.setdefault(_module(n), []).append(n)
    rank = {n: mod.index(n) for mod in order.values() for n in mod}
    names.sort(key=lambda n: (rank[n], layer_of(n)))
    frames = []
    for name in names:
        layer = layer_of(name)
        g = _np(tr[name])  # [B, U, S, Ds]
        pos_name = _sibling(tr, name, UPDATE_POSITIONS)
        B, U, S, Ds = g.shape
        if pos_name is not None:
            upd_pos = _np(tr[pos_name])
        else:
            upd_pos = np.zeros((B, U), dtype=np.int64)
        if not per_dim:
            g = g.mean(-1)
        idx = _grid(g.shape)
        cols = {"sample": idx[0], "layer": np.full(idx[0].shape, layer), "update": idx[1] + tr.step_start(name),
                "pos": upd_pos[idx[0], idx[1]], "slot": idx[2]}
        if per_dim:
            cols["dim"] = idx[3]
        cols["gate"] = np.full(idx[0].shape, _gate_label(name), dtype=object)
        cols["value"] = g.reshape(-1)
        df = pd.DataFrame(cols)
        frames.append(df[df["pos"] >= 0] if pos_name is not None else df)
    columns = ["sample", "layer", "update", "pos", "slot"] + (["dim"] if per_dim else []) + ["gate", "value"]
    if not frames:
        return _empty(columns)
    return pd.concat(frames, ignore_index=True)[columns]


@register_frame("importance", needs=[IMPORTANCE, ALIVE], per_piece=False,
                columns=("layer", "slot", "importance", "alive"))
def importance(tr: Trace) -> pd.DataFrame:
    """Per-slot importance and alive flag of every state bank."""
    rows = []
    for layer, name in _layers(tr, IMPORTANCE).items():
        imp = _np(tr[name])
        alive_name = _sibling(tr, name, ALIVE)
        alive = _np(tr[alive_name]) > 0.5 if alive_name is not None else np.ones_like(imp, dtype=bool)
        rows.append(pd.DataFrame({"layer": layer, "slot": np.arange(imp.shape[0]), "importance": imp, "alive": alive}))
    if not rows:
        return _empty(["layer", "slot", "importance", "alive"])
    return pd.concat(rows, ignore_index=True)


@register_frame("pruning_events", needs=[BANK_EVENTS], per_piece=False,
                columns=("layer", "event", "step", "kind", "slot", "importance"))
def pruning_events(tr: Trace) -> pd.DataFrame:
    """State-bank prune / allocate events at trace time, one row per slot."""
    rows = []
    for layer, events in (tr.metadata.get("state_bank_events") or {}).items():
        for e_i, e in enumerate(events):
            imps = e.get("importance") or [math.nan] * len(e.get("slots", []))
            for slot, imp in zip(e.get("slots", []), imps):
                rows.append({"layer": int(layer), "event": e_i, "step": e.get("step"), "kind": e.get("kind"),
                             "slot": int(slot), "importance": float(imp)})
    return pd.DataFrame(rows, columns=["layer", "event", "step", "kind", "slot", "importance"])


@register_frame("memory_reads", needs=[READ_SLOTS, READ_SCORES, READ_WEIGHTS], per_piece=True,
                columns=("sample", "layer", "pos", "rank", "slot", "score", "weight"))
def memory_reads(tr: Trace) -> pd.DataFrame:
    """The memory entries each token read (top-k rank, slot, score, weight)."""
    cols = ["sample", "layer", "pos", "rank", "slot", "score", "weight"]

    def build(layer: int, name: str) -> pd.DataFrame:
        vals = {"slot": _np(tr[name])}
        for col, need in (("score", READ_SCORES), ("weight", READ_WEIGHTS)):
            other = _sibling(tr, name, need)
            if other is not None:
                vals[col] = _np(tr[other])
            else:
                vals[col] = np.full(vals["slot"].shape, np.nan, dtype=np.float32)
        df = _token_table(tr, name, vals, ["rank"])
        return df[df["slot"] >= 0]

    return _per_layer(tr, READ_SLOTS, build, cols)


@register_frame("decay", needs=[HEAD_DECAY], per_piece=False, columns=("layer", "head", "gamma", "half_life"))
def decay(tr: Trace) -> pd.DataFrame:
    """Per-head decay factors and their half-lives."""
    rows = []
    for layer, name in _layers(tr, HEAD_DECAY).items():
        g = _np(tr[name]).astype(np.float64)
        with np.errstate(divide="ignore"):
            hl = np.log(0.5) / np.log(g)
        rows.append(pd.DataFrame({"layer": layer, "head": np.arange(g.shape[0]), "gamma": g, "half_life": hl}))
    if not rows:
        return _empty(["layer", "head", "gamma", "half_life"])
    return pd.concat(rows, ignore_index=True)


@register_frame("decay_attention", needs=[Q_FEATURES, K_FEATURES, NORMALIZER, HEAD_DECAY], per_piece=True,
                stored=False, columns=("sample", "layer", "head", "t", "s", "weight"))
def decay_attention(tr: Trace, layer: int = 0, head: int = 0, window: tuple[int, int] | None = None,
                    s_start: int | None = None, sample: int = 0) -> pd.DataFrame:
    """Decay-weighted attention of one linear-attention head over a window (probes.attention)."""
    from probes.attention import decay_attention_matrix

    A, ts, ss = decay_attention_matrix(tr, layer, head, window=window, s_start=s_start, sample=sample)
    tt, sg = np.meshgrid(ts, ss, indexing="ij")
    keep = sg <= tt
    a = A.numpy()
    return pd.DataFrame({"sample": sample, "layer": layer, "head": head, "t": tt[keep], "s": sg[keep],
                         "weight": a[keep]})


def _token_strings(tr: Trace, ids: np.ndarray, rows: np.ndarray, pos_local: np.ndarray) -> np.ndarray:
    if tr.token_strings is None:
        return np.array([None] * len(rows), dtype=object)
    lookup = tr.token_strings
    return np.array([lookup[r][p] if p < len(lookup[r]) else None for r, p in zip(rows, pos_local)], dtype=object)


@register_frame("token_loss", needs=[LOSS], per_piece=True, columns=("sample", "pos", "token_id", "token", "loss"))
def token_loss(tr: Trace) -> pd.DataFrame:
    """Per-token loss with the token's id and string."""
    cols = ["sample", "pos", "token_id", "token", "loss"]
    name = _first(tr, LOSS)
    if name is None:
        return _empty(cols)
    loss = _np(tr[name])
    df = _token_table(tr, name, {"loss": loss}, [])
    toks = tr.tokens
    local = df["pos"].to_numpy() - tr.step_start(name)
    if toks is not None and tuple(toks.shape) == loss.shape:
        df["token_id"] = _np(toks)[df["sample"].to_numpy(), local]
    else:
        df["token_id"] = -1
    df["token"] = _token_strings(tr, None, df["sample"].to_numpy(), local)
    return df[cols].reset_index(drop=True)


@register_frame("predictions", needs=[TOP_IDS, TOP_PROBS], per_piece=True,
                columns=("sample", "pos", "rank", "token_id", "token", "prob"))
def predictions(tr: Trace) -> pd.DataFrame:
    """Top-k next-token predictions after every token."""
    cols = ["sample", "pos", "rank", "token_id", "token", "prob"]
    name, probs = _first(tr, TOP_IDS), _first(tr, TOP_PROBS)
    if name is None or probs is None:
        return _empty(cols)
    df = _token_table(tr, name, {"token_id": _np(tr[name]), "prob": _np(tr[probs])}, ["rank"])
    df["token"] = None
    return df[cols].reset_index(drop=True)


@register_frame("recurrent", needs=[TOKEN_STATE, STATE_INPUT_GATE], per_piece=True,
                columns=("sample", "layer", "pos", "input_gate_mean", "state_norm", "state_mean"))
def recurrent(tr: Trace) -> pd.DataFrame:
    """Recurrent state norm and mean per token, with the mean input gate beside it."""
    cols = ["sample", "layer", "pos", "input_gate_mean", "state_norm", "state_mean"]

    def build(layer: int, name: str) -> pd.DataFrame:
        st = tr[name].float()
        vals = {"state_norm": _np(st.norm(dim=-1)), "state_mean": _np(st.mean(-1))}
        gname = _sibling(tr, name, STATE_INPUT_GATE)
        vals["input_gate_mean"] = _np(tr[gname].float().mean(-1)) if gname is not None else \
            np.full(st.shape[:2], np.nan)
        return _token_table(tr, name, vals, [])

    return _per_layer(tr, TOKEN_STATE, build, cols)


@register_frame("fusion_gate", needs=[FUSION_GATE], per_piece=True, columns=("sample", "layer", "pos", "gate"))
def fusion_gate(tr: Trace) -> pd.DataFrame:
    """The block's fusion gate per token (mean over hidden dims)."""
    cols = ["sample", "layer", "pos", "gate"]
    return _per_layer(tr, FUSION_GATE,
                      lambda l, n: _token_table(tr, n, {"gate": _np(tr[n].float().mean(-1))}, []), cols)


# ------------------------------------------------------------------ per-channel recurrences (probes.adapters)
# The family adapters (Mamba, RWKV, Mamba-2) declare their mixers' sites with a ``channel`` (or
# ``head``) axis: these frames read them by kind and layout, so a PULSE trace (whose decays,
# states and gates are laid out over heads, d_model or slots) never matches them.
MIXER_DECAY = Need("decay", name="blocks.*.mixer.hook_decay")  # [channel], [channel, d_k] or [head]
CHANNEL_STATE = Need("state", ("batch", "pos", "channel"))  # state norms / numerator and denominator
CHANNEL_GATE = Need("gate", ("batch", "pos", "channel"))


@register_frame("channel_decay", needs=[MIXER_DECAY], per_piece=False,
                columns=("layer", "unit", "state", "decay", "half_life"))
def channel_decay(tr: Trace) -> pd.DataFrame:
    """Per-channel (or per-head) decay of a recurrent mixer and its half-life per unit step."""
    cols = ["layer", "unit", "state", "decay", "half_life"]
    rows = []
    for layer, name in _layers(tr, MIXER_DECAY).items():
        g = _np(tr[name]).astype(np.float64)
        g = g.reshape(g.shape[0], -1) if g.ndim else g.reshape(1, 1)
        unit, sub = np.meshgrid(np.arange(g.shape[0]), np.arange(g.shape[1]), indexing="ij")
        with np.errstate(divide="ignore"):
            hl = np.log(0.5) / np.log(g)
        rows.append(pd.DataFrame({"layer": layer, "unit": unit.reshape(-1), "state": sub.reshape(-1),
                                  "decay": g.reshape(-1), "half_life": hl.reshape(-1)}))
    if not rows:
        return _empty(cols)
    return pd.concat(rows, ignore_index=True)[cols]


def _site_label(name: str) -> str:
    """``blocks.0.mixer.hook_state_norm`` -> ``state_norm``."""
    return name.rpartition(".")[2].removeprefix("hook_")


def _channel_series(tr: Trace, need: Need, reduce: Callable[[torch.Tensor], torch.Tensor], label: str,
                    value: str, per_channel: bool = False) -> pd.DataFrame:
    cols = ["sample", "layer", "pos"] + (["channel"] if per_channel else []) + [label, value]
    frames = []
    for name in need.found(tr):
        layer = layer_of(name)
        if layer is None:
            continue
        x = tr[name].float()
        vals = _np(x) if per_channel else _np(reduce(x))
        df = _token_table(tr, name, {value: vals}, ["channel"] if per_channel else [])
        df.insert(1, "layer", layer)
        df[label] = _site_label(name)
        frames.append(df)
    if not frames:
        return _empty(cols)
    return pd.concat(frames, ignore_index=True)[cols]


@register_frame("channel_state", needs=[CHANNEL_STATE], per_piece=True,
                columns=("sample", "layer", "pos", "state", "norm"))
def channel_state(tr: Trace) -> pd.DataFrame:
    """Norm over channels of each per-channel recurrent state (site) per token."""
    return _channel_series(tr, CHANNEL_STATE, lambda x: x.norm(dim=-1), "state", "norm")


@register_frame("channel_gates", needs=[CHANNEL_GATE], per_piece=True,
                columns=("sample", "layer", "pos", "gate", "value"))
def channel_gates(tr: Trace, per_channel: bool = False) -> pd.DataFrame:
    """Per-channel gates of a recurrent mixer per token (mean over channels, or per channel)."""
    return _channel_series(tr, CHANNEL_GATE, lambda x: x.mean(-1), "gate", "value", per_channel)
