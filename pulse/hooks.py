"""The whole hook mechanism: one identity module, its declared metadata, one way to hook it.

Every quantity the workbench shows passes through a :class:`HookPoint`
(``value = self.hook_decay(value)``). A HookPoint returns its input unchanged,
so with no hook registered it costs one Python call. PyTorch's own forward
hooks attach to it: a hook that returns a tensor replaces the value that flows
on, which is how interventions work. Hook names are the module paths from
``model.named_modules()``, e.g. ``blocks.3.attn.hook_decay``; the *canonical*
name drops the causal-LM wrapper prefix ``model.`` (:func:`canonical_name`).

The contract
------------
Each site declares, where it is built, what flows through it::

    self.hook_q_features = HookPoint(layout=("batch", "head", "pos", "d_k"), kind="attention_input")

* ``layout``: the named axes of the tensor, outermost first (names from :data:`AXES`). The
  axis ``pos`` (token position) or ``update`` (state-bank update) is the *step axis* along
  which the records of several calls are joined; a layout with neither (``("head",)``: a
  per-parameter value) has none.
* ``kind``: what the value is (one of :data:`KINDS`): routing, gate, decay, state, ...

:func:`hook_sites` returns the declarations of a model as :class:`HookSite` records keyed
by canonical name; tools read layouts from there instead of guessing them from names.
:func:`installed_hooks` is the one way to hook sites: it installs ``{name: fn}`` for a
``with`` block and removes every hook in ``finally``.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

# axis names of a layout; sizes in brackets are those of the PULSE models
AXES: dict[str, str] = {
    "batch": "batch row [B]",
    "pos": "token position [T] (step axis)",
    "update": "state-bank update [U] (step axis)",
    "head": "attention head [num_heads]",
    "kv_head": "key/value head of grouped-query attention [num_kv_heads]",
    "state_head": "head of the slot-to-slot communication [state_num_heads]",
    "slot": "state slot [S]",
    "key_slot": "the attended slot of slot-to-slot attention [S]",
    "rank": "rank of a top-k read [k]",
    "d_model": "residual width [hidden_size]",
    "d_k": "query/key width of one head",
    "d_v": "value width of one head",
    "d_ff": "feed-forward width [intermediate_size]",
    "d_state": "state slot width [state_dim]",
    "channel": "inner channel of a state-space or linear-recurrent mixer (Mamba, RWKV)",
}

# the axes along which the records of several calls are joined, in order of preference
STEP_AXES = ("pos", "update")

KINDS: dict[str, str] = {
    "residual": "the residual stream (embeddings, block inputs and outputs, final hidden state)",
    "output": "a sublayer's output",
    "attention_input": "queries, keys or values (feature maps) of an attention",
    "normalizer": "the normaliser of a linear attention",
    "attention": "attention weights among slots",
    "decay": "decay factors in (0, 1] per head or channel",
    "gate": "a multiplicative gate",
    "candidate": "a candidate value of a gated update",
    "state": "a recurrent state over time",
    "routing": "write (routing) weights of tokens to state slots",
    "memory_read": "a read from a memory or state bank: scores, weights, entries, the value read",
    "memory_write": "what is written to a memory",
    "importance": "per-slot importance",
    "alive": "per-slot alive mask (> 0.5 alive)",
    "positions": "call-relative token positions (-1: none); traces store them absolute",
    "score": "a per-example score",
}

_LAYER = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_WRAPPER = "model."


def check_layout(layout: Sequence[str]) -> tuple[str, ...]:
    """``layout`` as a tuple, after checking its axis names (known, none twice)."""
    if isinstance(layout, str) or not isinstance(layout, Sequence):
        raise TypeError(f"layout: expected a sequence of axis names, got {layout!r}")
    out = tuple(layout)
    unknown = [a for a in out if a not in AXES]
    if unknown:
        raise ValueError(f"layout: unknown axis {unknown[0]!r} in {out}; known axes: {sorted(AXES)}")
    if len(set(out)) != len(out):
        raise ValueError(f"layout: an axis appears twice in {out}")
    return out


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not a hook kind; known kinds: {sorted(KINDS)}")
    return kind


def step_axis(layout: Sequence[str] | None) -> int | None:
    """Index of the step axis (``pos``, else ``update``) of ``layout``; None when it has none
    or the layout is unknown (None)."""
    if layout is None:
        return None
    for axis in STEP_AXES:
        if axis in layout:
            return list(layout).index(axis)
    return None


class HookPoint(nn.Module):
    """Identity module marking a named site where values can be read or replaced.

    ``HookPoint(layout=("batch", "pos", "slot"), kind="routing")``: the named axes of the
    value (see :data:`AXES`) and what it is (see :data:`KINDS`)."""

    def __init__(self, *, layout: Sequence[str], kind: str) -> None:
        super().__init__()
        self.layout = check_layout(layout)
        self.kind = check_kind(kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"layout={self.layout}, kind={self.kind!r}"


@dataclass(frozen=True)
class HookSite:
    """One hook site of a model: canonical ``name``, declared ``layout`` and ``kind``, and
    the :class:`HookPoint` module (``point``)."""

    name: str
    layout: tuple[str, ...]
    kind: str
    point: HookPoint = field(repr=False, compare=False)

    @property
    def step_axis(self) -> int | None:
        return step_axis(self.layout)

    def record(self) -> dict[str, Any]:
        """JSON-ready ``{"layout": [...], "kind": ...}``."""
        return {"layout": list(self.layout), "kind": self.kind}


def canonical_name(raw: str) -> str:
    """``model.blocks.0.attn.hook_decay`` -> ``blocks.0.attn.hook_decay``."""
    return raw[len(_WRAPPER):] if raw.startswith(_WRAPPER) else raw


def layer_of(name: str) -> int | None:
    """Block index in a hook name (``blocks.3.…`` -> 3), or None."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def hook_points(model: nn.Module) -> Iterator[tuple[str, HookPoint]]:
    """Yield ``(name, hook_point)`` for every hook site in ``model``, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, HookPoint):
            yield name, module


def hook_sites(model: nn.Module) -> dict[str, HookSite]:
    """Canonical name -> :class:`HookSite` (name, layout, kind, point), in module order."""
    out = {}
    for raw, hp in hook_points(model):
        name = canonical_name(raw)
        out[name] = HookSite(name, hp.layout, hp.kind, hp)
    return out


HookFn = Callable[[torch.Tensor, str], Any]


@contextlib.contextmanager
def installed_hooks(
    model: nn.Module,
    hooks: Mapping[str, HookFn] | Iterable[tuple[str, HookFn]],
    pre_forward: Callable[[tuple, dict], None] | None = None,
) -> Iterator[dict[str, HookSite]]:
    """Install forward hooks on named hook sites of ``model`` for the ``with`` block.

    ``hooks``: ``{name: fn}``, or ``(name, fn)`` pairs when a site gets several (they run in
    the given order, each seeing the value the one before returned). Names are canonical or
    raw module paths. ``fn(value, name)`` returns the value that flows on, or None to keep
    it. ``pre_forward(args, kwargs)``, when given, runs before each forward of ``model``
    itself (it sees the call's inputs). An unknown name raises ``ValueError`` before any hook
    is installed; every hook is removed on exit, also when the block or a forward raises.
    Yields the model's :func:`hook_sites`."""
    sites = hook_sites(model)
    pairs = list(hooks.items()) if isinstance(hooks, Mapping) else list(hooks)
    for name, fn in pairs:
        if canonical_name(name) not in sites:
            avail = list(sites)
            raise ValueError(f"hooks: {name!r} is not a hook site of this model; available e.g. {avail[:8]} "
                             f"({len(avail)} in total)")
        if not callable(fn):
            raise TypeError(f"hooks: the function for {name!r} is not callable")
    handles = []
    try:
        if pre_forward is not None:
            def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
                pre_forward(args, kwargs)

            handles.append(model.register_forward_pre_hook(pre_hook, with_kwargs=True))
        for name, fn in pairs:
            canon = canonical_name(name)
            handles.append(sites[canon].point.register_forward_hook(
                lambda module, inputs, output, _fn=fn, _name=canon: _fn(output, _name)))
        yield sites
    finally:
        for h in reversed(handles):
            h.remove()
