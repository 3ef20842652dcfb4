"""Tracing: record the values that pass through a model's hook sites.

    from probes import trace, run_with_trace
    with trace(model, names="blocks.*.states.*") as tr:
        model(input_ids)
    tr["blocks.0.states.hook_routing"]          # [B, T, S], detached CPU copy
    tr.frame("routing")                          # tidy pandas DataFrame
    outputs, tr = run_with_trace(model, input_ids, labels=input_ids)   # + loss and top-k

Names
-----
A hook's *name* is its module path from ``model.named_modules()`` with the wrapper prefix
``model.`` of :class:`~pulse.PulseForCausalLM` removed, so the same names work for the
causal LM and for the bare backbone: ``blocks.3.attn.hook_decay``, ``hook_embed``,
``blocks.0.states.hook_routing`` (the names in DESIGN.md). A names filter matches the
canonical name or the raw module path.

Several calls in one trace
--------------------------
A hook site that fires several times inside one ``trace`` (token-by-token generation,
streaming a long text in chunks with the carried state) appends one record per call.
``tr[name]`` merges the records along the hook's *step axis*, read from the layout the
site declares (``HookPoint(layout=..., kind=...)``, see :mod:`pulse.hooks`):

* token tensors (an axis ``pos``: ``[B, T, ...]``, per-head ``[B, H, T, ...]``) along it;
* per-update state-bank tensors (an axis ``update``: ``hook_slots``, gates,
  ``hook_slot_attention``, ``hook_update_positions``) along it; values of kind
  ``positions`` (update positions) are stored *absolute* (position in the whole traced
  stream, -1 = none);
* per-parameter tensors (neither axis: ``hook_decay`` ``[H]``, ``hook_importance`` ``[S]``,
  ...) have no step axis: ``tr[name]`` is the value of the *last* call; all calls stay in
  ``tr.records(name)``.

``tr.metadata["hook_sites"]`` holds ``{name: {"layout": [...], "kind": ...}}`` of every
traced site and of the trace's own entries (``loss.per_token``, ``predictions.*``);
``tr.layout(name)``, ``tr.kind(name)`` and ``tr.step_axis(name)`` read it. An entry added
with :meth:`Trace.add` and no layout is taken to have its step axis at 1 (``[B, T, ...]``)
when it has two or more axes, none otherwise.

``tr.tokens`` holds the input ids of every call concatenated along the position axis, and
``tr.attention_mask`` the attention masks (ones where a call had none).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from probes.frames import FrameHooks, available_kinds, frame
from probes.parquet import SCHEMA_VERSION, read_folder, write_trace
from pulse.hooks import HookSite, canonical_name, hook_points, hook_sites, installed_hooks, layer_of
from pulse.hooks import step_axis as layout_step_axis

__all__ = [
    "SCHEMA_VERSION", "NameFilter", "Trace", "trace", "run_with_trace", "read_trace", "hook_sites", "select_hooks",
    "canonical_name", "layer_of", "per_token_loss", "add_predictions", "model_metadata", "state_bank_events",
    "ENTRY_LAYOUTS",
]

NameFilter = None | str | Iterable[str] | Callable[[str], bool] | FrameHooks

# layouts and kinds of the entries a trace adds itself (not hook sites)
ENTRY_LAYOUTS: dict[str, tuple[tuple[str, ...], str]] = {
    "loss.per_token": (("batch", "pos"), "loss"),
    "predictions.top_ids": (("batch", "pos", "rank"), "prediction"),
    "predictions.top_probs": (("batch", "pos", "rank"), "prediction"),
}


def _make_filter(names: NameFilter) -> Callable[[str, str], bool]:
    if names is None:
        return lambda canon, raw: True
    if callable(names):
        return lambda canon, raw: bool(names(canon))
    patterns = [names] if isinstance(names, str) else list(names)
    for p in patterns:
        if not isinstance(p, str):
            raise TypeError(f"names: expected str patterns, got {type(p).__name__}")
    return lambda canon, raw: any(fnmatch.fnmatchcase(canon, p) or fnmatch.fnmatchcase(raw, p) for p in patterns)


def select_hooks(model: nn.Module, names: NameFilter = None, strict: bool = True) -> dict[str, HookSite]:
    """The hook sites (:class:`~pulse.hooks.HookSite` by canonical name) whose names pass
    ``names`` (None = all, a name or glob, a list of them, or a predicate on the canonical
    name), or that the frames read (a :class:`probes.frames.FrameHooks`,
    ``probes.frames.frame_hooks()``: chosen by declared kind and layout; choosing none is no
    error, a model may have nothing those frames read). With ``strict`` an explicit name
    filter that matches nothing raises ``ValueError`` listing a few available names."""
    sites = hook_sites(model)
    if isinstance(names, FrameHooks):
        return {n: sites[n] for n in names.select(sites)}
    match = _make_filter(names)
    chosen = {canonical_name(raw): sites[canonical_name(raw)] for raw, _ in hook_points(model)
              if match(canonical_name(raw), raw)}
    if strict and not chosen and names is not None:
        avail = [canonical_name(r) for r, _ in hook_points(model)]
        raise ValueError(f"names: {names!r} matches no hook site; available e.g. {avail[:8]} "
                         f"({len(avail)} in total)")
    return chosen


def _copy(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return t.clone() if t.device.type == "cpu" else t.to("cpu")


def model_metadata(model: nn.Module) -> dict[str, Any]:
    """Config dict, weights hash, class name and current state-bank events of ``model``."""
    meta: dict[str, Any] = {"model_class": type(model).__name__}
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        meta["config"] = cfg.to_dict()
    try:
        from pulse.io import weights_hash

        meta["weights_hash"] = weights_hash(model)
    except Exception:  # noqa: BLE001 - a model without a state dict hash is still traceable
        meta["weights_hash"] = None
    meta["state_bank_events"] = state_bank_events(model)
    return meta


def state_bank_events(model: nn.Module) -> dict[str, list[dict]]:
    """{layer index as str: list of prune/allocate events} of every state bank."""
    events: dict[str, list[dict]] = {}
    banks = getattr(model, "state_banks", None)
    if callable(banks):
        for i, bank in banks():
            events[str(i)] = json.loads(json.dumps([dict(e) for e in getattr(bank, "events", [])]))
    return events


class Trace(Mapping[str, torch.Tensor]):
    """Recorded hook values by canonical hook name (a read-only mapping), plus tokens and metadata.

    ``tr[name]`` merged tensor (see module doc), ``tr.names``, ``name in tr``, ``len(tr)``,
    ``tr.records(name)`` (one tensor per call), ``tr.tokens`` ([B, T] long ids),
    ``tr.token_strings`` (list of lists, when a tokenizer was given), ``tr.attention_mask``
    ([B, T] float or None), ``tr.metadata`` (dict), ``tr.frame(kind)``, ``tr.to_parquet(dir)``.
    ``tr.step_start(name)`` is the absolute index (position or update) of the first record
    held: non-zero for the pieces of a streamed trace. ``tr.layout(name)`` / ``tr.kind(name)``:
    the declared layout and kind (``metadata["hook_sites"]``), ``tr.step_axis(name)`` the
    axis records are joined along.
    """

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        self._records: dict[str, list[torch.Tensor]] = {}
        self._merged: dict[str, torch.Tensor] = {}
        self._step_start: dict[str, int] = {}
        self._token_calls: list[torch.Tensor] = []
        self._mask_calls: list[torch.Tensor] = []
        self._pos_start = 0  # absolute position of the first token held
        self._tokens_override: torch.Tensor | None = None
        self._mask_override: torch.Tensor | None = None
        self.token_strings: list[list[str]] | None = None
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.metadata.setdefault("schema_version", SCHEMA_VERSION)
        self.metadata.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        self.metadata.setdefault("hook_sites", {})

    # ---------------------------------------------------------------- mapping
    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._records:
            alt = canonical_name(name)
            if alt not in self._records:
                raise KeyError(f"{name!r} is not in this trace; recorded: {self.names[:10]}"
                               f"{' ...' if len(self.names) > 10 else ''}")
            name = alt
        if name not in self._merged:
            self._merged[name] = self._merge(name, self._records[name])
        return self._merged[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._records or canonical_name(name) in self._records)

    def __repr__(self) -> str:
        return f"Trace({len(self)} hook sites, tokens={tuple(self.tokens.shape) if self.tokens is not None else None})"

    @property
    def names(self) -> list[str]:
        return list(self._records)

    def records(self, name: str) -> list[torch.Tensor]:
        return list(self._records[canonical_name(name) if name not in self._records else name])

    def step_start(self, name: str) -> int:
        return self._step_start.get(name, 0)

    @property
    def pos_start(self) -> int:
        return self._pos_start

    # ---------------------------------------------------------------- layouts
    def layout(self, name: str) -> tuple[str, ...] | None:
        """Declared layout of ``name`` (axis names), or None when it was added without one."""
        rec = self.metadata["hook_sites"].get(canonical_name(name) if name not in self._records else name)
        return tuple(rec["layout"]) if rec and rec.get("layout") is not None else None

    def kind(self, name: str) -> str | None:
        rec = self.metadata["hook_sites"].get(canonical_name(name) if name not in self._records else name)
        return rec.get("kind") if rec else None

    def step_axis(self, name: str) -> int | None:
        """The axis along which records of several calls are joined (see the module doc)."""
        layout = self.layout(name)
        if layout is not None:
            return layout_step_axis(layout)
        recs = self._records.get(name) or self._records.get(canonical_name(name))
        return 1 if recs and recs[0].dim() >= 2 else None

    def set_layout(self, name: str, layout: Iterable[str] | None, kind: str | None = None) -> None:
        """Record the layout and kind of entry ``name`` (see the module doc)."""
        self.metadata["hook_sites"][name] = {"layout": None if layout is None else list(layout), "kind": kind}

    def _merge(self, name: str, recs: list[torch.Tensor]) -> torch.Tensor:
        if len(recs) == 1:
            return recs[0]
        axis = self.step_axis(name)
        if axis is None:
            return recs[-1]
        try:
            return torch.cat(recs, dim=axis)
        except RuntimeError as e:
            raise ValueError(f"{name}: the {len(recs)} recorded calls cannot be concatenated along "
                             f"axis {axis} ({e}); use tr.records({name!r})") from e

    # ---------------------------------------------------------------- writing
    def add(self, name: str, value: torch.Tensor, step_start: int = 0, layout: Iterable[str] | None = None,
            kind: str | None = None) -> None:
        """Add (or append another call of) an entry, e.g. ``loss.per_token``; ``layout``
        (axis names) and ``kind``, when given, are recorded with it."""
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"value: expected a tensor for {name!r}, got {type(value).__name__}")
        if layout is not None:
            layout = tuple(layout)
            if len(layout) != value.dim():
                raise ValueError(f"layout: {layout} has {len(layout)} axes, {name!r} has {value.dim()}")
            self.set_layout(name, layout, kind)
        if name not in self._records:
            self._records[name] = []
            self._step_start.setdefault(name, step_start)
        self._records[name].append(_copy(value))
        self._merged.pop(name, None)

    def _record_call(self, input_ids: torch.Tensor, mask: torch.Tensor | None) -> None:
        self._token_calls.append(_copy(input_ids))
        m = torch.ones(input_ids.shape, dtype=torch.float32) if mask is None else _copy(mask).float()
        self._mask_calls.append(m)

    def _call_offset(self) -> int:
        """Absolute position where the call being recorded started."""
        return self._pos_start + sum(t.shape[1] for t in self._token_calls[:-1])

    @property
    def tokens(self) -> torch.Tensor | None:
        if self._tokens_override is not None:
            return self._tokens_override
        if not self._token_calls:
            return None
        try:
            return torch.cat(self._token_calls, dim=1)
        except RuntimeError as e:
            raise ValueError(f"tokens: calls with different batch sizes ({e})") from e

    @property
    def attention_mask(self) -> torch.Tensor | None:
        if self._mask_override is not None:
            return self._mask_override
        if not self._mask_calls:
            return None
        return torch.cat(self._mask_calls, dim=1)

    def set_tokens(self, ids: torch.Tensor | None, mask: torch.Tensor | None = None) -> None:
        self._tokens_override = None if ids is None else _copy(ids)
        self._mask_override = None if mask is None else _copy(mask).float()

    def drain(self) -> "Trace":
        """Move everything recorded so far into a new Trace (with its absolute offsets) and
        clear this one, which keeps counting positions and steps: the streaming primitive."""
        out = Trace(dict(self.metadata))
        out.token_strings = self.token_strings
        for name, recs in self._records.items():
            out._records[name] = recs
            out._step_start[name] = self.step_start(name)
            axis = self.step_axis(name) if recs else None
            if axis is not None:
                self._step_start[name] = self.step_start(name) + sum(r.shape[axis] for r in recs)
        out._token_calls, out._mask_calls = self._token_calls, self._mask_calls
        out._pos_start = self._pos_start
        out.metadata["pos_start"] = self._pos_start
        self._pos_start += sum(t.shape[1] for t in self._token_calls)
        self._records, self._merged = {}, {}
        self._token_calls, self._mask_calls = [], []
        return out

    # ---------------------------------------------------------------- views
    def frame(self, kind: str, **kwargs: Any):
        """Tidy long-form DataFrame of one kind (see :mod:`probes.frames`)."""
        return frame(self, kind, **kwargs)

    def available_frames(self) -> list[str]:
        return available_kinds(self)

    def to_parquet(self, directory, **kwargs: Any):
        """Write this trace to a folder (see :mod:`probes.parquet`)."""
        return write_trace(self, directory, **kwargs)

    @classmethod
    def from_parquet(cls, directory) -> "Trace":
        """Read a folder written by :meth:`to_parquet` or ``trace_to_parquet_streaming``."""
        return read_folder(directory, cls)

    def layers(self, suffix: str) -> dict[int, str]:
        """{layer index: name} of the recorded names ending with ``suffix`` (by name; the frames
        of :mod:`probes.frames` pick their entries by declared kind and layout)."""
        out = {}
        for n in self._records:
            if n.endswith(suffix):
                i = layer_of(n)
                if i is not None:
                    out[i] = n
        return dict(sorted(out.items()))


def _decode_tokens(tokenizer: Any, ids: torch.Tensor) -> list[list[str]]:
    def one(i: int) -> str:
        for attr in ("id_to_token", "convert_ids_to_tokens"):
            fn = getattr(tokenizer, attr, None)
            if callable(fn):
                return str(fn(int(i)))
        return str(tokenizer.decode([int(i)]))

    return [[one(i) for i in row.tolist()] for row in ids]


@contextlib.contextmanager
def trace(
    model: nn.Module,
    names: NameFilter = None,
    tokenizer: Any = None,
    prompt: str | None = None,
    trace_obj: Trace | None = None,
) -> Iterator[Trace]:
    """Record detached CPU copies of hook values while the ``with`` block runs.

    ``names``: None (all sites), a name or fnmatch glob, a list of them, a predicate on the
    canonical name, or ``probes.frames.frame_hooks(kinds)`` (the sites those frames read).
    The forward's ``input_ids`` / ``attention_mask`` (positional or keyword) are recorded as
    ``tr.tokens`` / ``tr.attention_mask``, the traced sites' layouts and kinds as
    ``tr.metadata["hook_sites"]``. Hooks are installed with
    :func:`pulse.hooks.installed_hooks`: every hook is removed on exit, also when the block
    or the forward raises.
    """
    sites = select_hooks(model, names)
    tr = trace_obj if trace_obj is not None else Trace()
    if trace_obj is None:
        tr.metadata.update(model_metadata(model))
        tr.metadata["prompt"] = prompt
        tr.metadata["names_filter"] = names if isinstance(names, (str, list, tuple, type(None))) else repr(names)
        if isinstance(tr.metadata["names_filter"], tuple):
            tr.metadata["names_filter"] = list(tr.metadata["names_filter"])
    for name, site in sites.items():
        tr.set_layout(name, site.layout, site.kind)

    def pre_forward(args: tuple, kwargs: dict) -> None:
        ids = args[0] if args else kwargs.get("input_ids")
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        if isinstance(ids, torch.Tensor):
            tr._record_call(ids, mask if isinstance(mask, torch.Tensor) else None)

    def make_hook(site: HookSite) -> Callable[[torch.Tensor, str], None]:
        positions = site.kind == "positions"  # call-relative positions: stored absolute

        def hook(value: torch.Tensor, name: str) -> None:
            if not isinstance(value, torch.Tensor):
                return None
            if value.dim() != len(site.layout):
                raise ValueError(f"{name}: the site declares layout {site.layout}, its value has shape "
                                 f"{tuple(value.shape)}")
            value = _copy(value)
            if positions and tr._token_calls:
                off = tr._call_offset()
                value = torch.where(value >= 0, value + off, value)
            tr.add(name, value)
            return None

        return hook

    try:
        with installed_hooks(model, {name: make_hook(site) for name, site in sites.items()}, pre_forward):
            yield tr
    finally:
        if tokenizer is not None and tr.tokens is not None:
            tr.token_strings = _decode_tokens(tokenizer, tr.tokens)


def read_trace(directory) -> Trace:
    """Read a trace folder written by :meth:`Trace.to_parquet` or
    :func:`probes.trace_stream.trace_to_parquet_streaming` (see :mod:`probes.parquet`)."""
    return Trace.from_parquet(directory)


def per_token_loss(logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T] loss of token t given the tokens before it: ``CE(logits[:, t-1], labels[:, t])``;
    NaN at t = 0, at ignored labels (-100) and at padding."""
    B, T, V = logits.shape
    out = torch.full((B, T), float("nan"), dtype=torch.float32, device=logits.device)
    if T < 2:
        return out
    lab = labels.clone()
    if attention_mask is not None:
        lab = lab.masked_fill(~attention_mask.bool(), -100)
    target = lab[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, V), target.clamp_min(0).reshape(-1),
                         reduction="none").view(B, T - 1)
    out[:, 1:] = torch.where(target == -100, torch.full_like(ce, float("nan")), ce)
    return out


def add_predictions(tr: Trace, logits: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor | None,
                    attention_mask: torch.Tensor | None, top_k: int, step_start: int = 0,
                    prev_logits: torch.Tensor | None = None) -> None:
    """Add ``loss.per_token`` [B, T] and ``predictions.top_ids`` / ``predictions.top_probs``
    [B, T, k] (the next-token distribution after reading token t) to ``tr``.
    ``prev_logits`` [B, V]: logits of the token before this piece (streaming) to score token 0."""
    labels = input_ids if labels is None else labels
    logits = logits.detach()
    if prev_logits is not None:
        full = torch.cat([prev_logits[:, None].to(logits), logits], dim=1)
        lab = torch.cat([labels[:, :1], labels], dim=1)
        mask = None if attention_mask is None else torch.cat([attention_mask[:, :1], attention_mask], 1)
        loss = per_token_loss(full, lab, mask)[:, 1:]
    else:
        loss = per_token_loss(logits, labels, attention_mask)
    probs = logits.float().softmax(-1)
    k = min(top_k, probs.shape[-1])
    top = probs.topk(k, dim=-1)
    for name, value in (("loss.per_token", loss), ("predictions.top_ids", top.indices),
                        ("predictions.top_probs", top.values)):
        layout, kind = ENTRY_LAYOUTS[name]
        tr.add(name, value, step_start, layout=layout, kind=kind)


@torch.no_grad()
def run_with_trace(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    names: NameFilter = None,
    tokenizer: Any = None,
    labels: torch.Tensor | None = None,
    top_k: int = 5,
    prompt: str | None = None,
    **forward_kwargs: Any,
) -> tuple[dict[str, Any], Trace]:
    """Run ``model(input_ids, attention_mask=...)`` under :func:`trace` and add the per-token
    loss (``loss.per_token`` [B, T]; labels default to the inputs) and the top-``k``
    next-token predictions (``predictions.top_ids`` / ``predictions.top_probs`` [B, T, k])."""
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    with trace(model, names=names, tokenizer=tokenizer, prompt=prompt) as tr:
        outputs = model(input_ids, attention_mask=attention_mask, **forward_kwargs)
    add_predictions(tr, outputs["logits"], input_ids, labels, attention_mask, top_k)
    if tokenizer is not None and prompt is None:
        try:
            tr.metadata["prompt"] = tokenizer.decode(input_ids[0].tolist())
        except Exception:  # noqa: BLE001
            pass
    return outputs, tr
