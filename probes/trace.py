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
``tr[name]`` merges the records along the hook's *step axis*:

* token tensors (``[B, T, ...]`` or per-head ``[B, H, T, ...]``) along the position axis;
* per-update state-bank tensors (``hook_slots``, gates, ``hook_slot_attention``,
  ``hook_update_positions``: ``[B, U, ...]``) along the update axis; update positions are
  stored *absolute* (position in the whole traced stream, -1 = none);
* per-parameter tensors (``hook_decay`` ``[H]``, ``hook_importance`` ``[S]``, ...) have no
  step axis: ``tr[name]`` is the value of the *last* call; all calls stay in
  ``tr.records(name)``.

``tr.tokens`` holds the input ids of every call concatenated along the position axis, and
``tr.attention_mask`` the attention masks (ones where a call had none).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from pulse.hooks import HookPoint, hook_points

SCHEMA_VERSION = 1

# hooks whose tensors are laid out per head: [B, H, T, ...]
_PER_HEAD = re.compile(r"(^|\.)attn\.hook_(q_features|k_features|v|normalizer|out)$")
# state-bank hooks with an update axis: [B, U, ...]
_PER_UPDATE = re.compile(
    r"(^|\.)states\.hook_(slots|update_positions|slot_attention|reset_gate|update_gate|"
    r"input_gate|forget_gate|output_gate)$"
)
# per-parameter hooks: no batch axis
_PER_PARAM = re.compile(r"(^|\.)(hook_decay|hook_importance|hook_alive)$")
_LAYER = re.compile(r"(?:^|\.)blocks\.(\d+)\.")

NameFilter = None | str | Iterable[str] | Callable[[str], bool]


def canonical_name(raw: str) -> str:
    """``model.blocks.0.attn.hook_decay`` -> ``blocks.0.attn.hook_decay``."""
    return raw[len("model."):] if raw.startswith("model.") else raw


def layer_of(name: str) -> int | None:
    """Block index in a hook name (``blocks.3.…`` -> 3), or None."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def step_axis(name: str, ndim: int | None = None) -> int | None:
    """The axis along which records of several calls are concatenated (see module doc)."""
    if _PER_PARAM.search(name):
        return None
    if _PER_HEAD.search(name):
        return 2
    if ndim is not None and ndim < 2:
        return None
    return 1


def is_per_update(name: str) -> bool:
    return bool(_PER_UPDATE.search(name))


def hook_sites(model: nn.Module) -> dict[str, HookPoint]:
    """Canonical hook name -> HookPoint, in module order."""
    return {canonical_name(raw): hp for raw, hp in hook_points(model)}


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


def select_hooks(model: nn.Module, names: NameFilter = None, strict: bool = True) -> dict[str, HookPoint]:
    """The hook sites whose names pass ``names`` (None = all, a name or glob, a list of them,
    or a predicate on the canonical name). With ``strict`` an explicit filter that matches
    nothing raises ``ValueError`` listing a few available names."""
    match = _make_filter(names)
    chosen = {canonical_name(raw): hp for raw, hp in hook_points(model) if match(canonical_name(raw), raw)}
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
    held: non-zero for the pieces of a streamed trace.
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

    def _merge(self, name: str, recs: list[torch.Tensor]) -> torch.Tensor:
        if len(recs) == 1:
            return recs[0]
        axis = step_axis(name, recs[0].dim())
        if axis is None:
            return recs[-1]
        try:
            return torch.cat(recs, dim=axis)
        except RuntimeError as e:
            raise ValueError(f"{name}: the {len(recs)} recorded calls cannot be concatenated along "
                             f"axis {axis} ({e}); use tr.records({name!r})") from e

    # ---------------------------------------------------------------- writing
    def add(self, name: str, value: torch.Tensor, step_start: int = 0) -> None:
        """Add (or append another call of) an entry, e.g. ``loss.per_token``."""
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"value: expected a tensor for {name!r}, got {type(value).__name__}")
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
            axis = step_axis(name, recs[0].dim()) if recs else None
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
        from probes.frames import frame

        return frame(self, kind, **kwargs)

    def available_frames(self) -> list[str]:
        from probes.frames import available_kinds

        return available_kinds(self)

    def to_parquet(self, directory, **kwargs: Any):
        from probes.parquet import write_trace

        return write_trace(self, directory, **kwargs)

    @classmethod
    def from_parquet(cls, directory) -> "Trace":
        from probes.parquet import read_trace

        return read_trace(directory)

    def layers(self, suffix: str) -> dict[int, str]:
        """{layer index: name} of the recorded names ending with ``suffix``."""
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

    ``names``: None (all sites), a name or fnmatch glob, a list of them, or a predicate on the
    canonical name. The forward's ``input_ids`` / ``attention_mask`` (positional or keyword)
    are recorded as ``tr.tokens`` / ``tr.attention_mask``. Every hook is removed on exit,
    also when the block or the forward raises.
    """
    sites = select_hooks(model, names)
    tr = trace_obj if trace_obj is not None else Trace()
    if trace_obj is None:
        tr.metadata.update(model_metadata(model))
        tr.metadata["prompt"] = prompt
        tr.metadata["names_filter"] = names if isinstance(names, (str, list, tuple, type(None))) else repr(names)
        if isinstance(tr.metadata["names_filter"], tuple):
            tr.metadata["names_filter"] = list(tr.metadata["names_filter"])
    handles = []

    def pre_hook(module, args, kwargs):
        ids = args[0] if args else kwargs.get("input_ids")
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        if isinstance(ids, torch.Tensor):
            tr._record_call(ids, mask if isinstance(mask, torch.Tensor) else None)

    def make_hook(name: str):
        per_update_pos = name.endswith("states.hook_update_positions")

        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                return None
            value = _copy(output)
            if per_update_pos and tr._token_calls:
                off = tr._call_offset()
                value = torch.where(value >= 0, value + off, value)
            tr.add(name, value)
            return None

        return hook

    try:
        handles.append(model.register_forward_pre_hook(pre_hook, with_kwargs=True))
        for name, hp in sites.items():
            handles.append(hp.register_forward_hook(make_hook(name)))
        yield tr
    finally:
        for h in handles:
            h.remove()
        if tokenizer is not None and tr.tokens is not None:
            tr.token_strings = _decode_tokens(tokenizer, tr.tokens)


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
    tr.add("loss.per_token", loss, step_start)
    tr.add("predictions.top_ids", top.indices, step_start)
    tr.add("predictions.top_probs", top.values, step_start)


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
