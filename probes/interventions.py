"""Interventions: forward hooks that return a modified value, and what they change.

    with intervene(model, ablate_slot(0, 2), set_decay(1, 0, 0.5)):
        logits = model(ids)["logits"]
    result = compare(model, ids, [memory_off()], labels=task.labels_for(ids),
                     loss_name=task.loss_name)          # InterventionResult
    result.summary(); result.frame()

Which tokens are scored: ``labels`` (``-100`` = not scored), by default the inputs (every
token: the all-token loss). A model trained on answers only must be scored on its task's
labels (``pulse.data`` ``Task.labels_for``), or the loss averages over tokens it was never
trained to predict. ``summary()`` reports the loss, KL, top-1 changes and accuracy on the
scored tokens only, with their count (``n_label_tokens``) and what they are (``loss``).

An :class:`Intervention` names hook sites (a glob over canonical hook names, see
probes.trace) and a function ``fn(value, name) -> new value``; the HookPoint's returned
value is what flows on. Some also change model state for the duration (``prune_slots``
uses the bank's real pruning and restores ``alive`` and ``events`` on exit).

Exact effects
-------------
* ``ablate_slot(layer, slot, mode)``: the slot's column of ``states.hook_read_weights``
  ``[B, T, S]`` is set to 0 (``'zero'``: the slot contributes nothing to any read; the
  other weights are *not* renormalised) or to its mean over the real tokens of the batch
  (``'mean'``). Writes (routing) and bank updates are untouched.
* ``prune_slots(layer, slots)``: ``bank.prune_states(slots)`` for the duration; the slot is
  dead: never routed to, never read, never updated, and the softmaxes renormalise.
* ``clamp_gate(name_glob, value)``: every matching hook's value replaced by ``value``
  (e.g. ``"blocks.0.states.hook_update_gate"`` at 0 freezes the bank).
* ``memory_off(layer=None)``: ``memory.hook_read`` set to zero (the memory adds nothing).
* ``set_decay(layer, head, gamma)``: ``attn.hook_decay[head] = gamma``.
* ``patch_activation(name, source, positions)``: the value at the given positions (step
  axis of the hook) replaced by the value recorded on another input.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from probes.trace import Trace, hook_sites, per_token_loss, trace
from pulse.hooks import installed_hooks

HookFn = Callable[[torch.Tensor, str], torch.Tensor]


@dataclass
class Intervention:
    """Hook sites matching ``names`` (glob or list of globs) get ``fn(value, name)``.
    ``setup(model)`` / ``teardown(model)`` run around the hooks' lifetime."""

    names: str | Sequence[str]
    fn: HookFn | None = None
    description: str = ""
    setup: Callable[[nn.Module], None] | None = None
    teardown: Callable[[nn.Module], None] | None = None
    strict: bool = True

    def matches(self, name: str) -> bool:
        pats = [self.names] if isinstance(self.names, str) else list(self.names)
        return any(fnmatch.fnmatchcase(name, p) for p in pats)

    def __repr__(self) -> str:
        return f"Intervention({self.description or self.names!r})"


def _bank(model: nn.Module, layer: int) -> nn.Module:
    blocks = getattr(model, "blocks", None)
    if blocks is None or not 0 <= layer < len(blocks):
        raise ValueError(f"layer: no block {layer}")
    bank = getattr(blocks[layer], "states", None)
    if bank is None:
        raise ValueError(f"layer: block {layer} has no state bank (config num_states = 0)")
    return bank


def ablate_slot(layer: int, slot: int, mode: str = "zero") -> Intervention:
    """Remove slot ``slot``'s contribution to the reads of block ``layer`` (see module doc)."""
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode: expected 'zero' or 'mean', got {mode!r}")

    def fn(value: torch.Tensor, name: str) -> torch.Tensor:
        if not 0 <= slot < value.shape[-1]:
            raise ValueError(f"slot: must be in [0, {value.shape[-1]}), got {slot}")
        out = value.clone()
        if mode == "zero":
            out[..., slot] = 0
        else:
            real = value.sum(-1) > 0  # pads read nothing (all weights zero)
            col = value[..., slot][real]
            out[..., slot] = torch.where(real, col.mean() if col.numel() else value.new_zeros(()), value[..., slot])
        return out

    return Intervention(f"blocks.{layer}.states.hook_read_weights", fn, f"ablate_slot({layer}, {slot}, {mode!r})")


def prune_slots(layer: int, slots: Iterable[int]) -> Intervention:
    """The bank's real pruning (``prune_states``) for the duration; alive and events restored."""
    slots = [int(s) for s in slots]
    saved: dict[str, Any] = {}

    def setup(model: nn.Module) -> None:
        bank = _bank(model, layer)
        saved["alive"] = bank.alive.clone()
        saved["n_events"] = len(bank.events)
        bank.prune_states(slots)

    def teardown(model: nn.Module) -> None:
        bank = _bank(model, layer)
        if "alive" in saved:
            with torch.no_grad():
                bank.alive.copy_(saved["alive"])
            del bank.events[saved["n_events"]:]

    return Intervention([], None, f"prune_slots({layer}, {slots})", setup, teardown, strict=False)


def clamp_gate(name_glob: str, value: float) -> Intervention:
    """Replace the value of every matching hook by the constant ``value``."""
    return Intervention(name_glob, lambda v, n: torch.full_like(v, value), f"clamp_gate({name_glob!r}, {value})")


def memory_off(layer: int | None = None) -> Intervention:
    """Zero the memory read (``memory.hook_read``) of one block or all."""
    pat = "blocks.*.memory.hook_read" if layer is None else f"blocks.{layer}.memory.hook_read"
    return Intervention(pat, lambda v, n: torch.zeros_like(v), f"memory_off({layer})")


def set_decay(layer: int, head: int, gamma: float) -> Intervention:
    """Set gamma of one linear-attention head (``attn.hook_decay``)."""
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma: must be in (0, 1], got {gamma}")

    def fn(value: torch.Tensor, name: str) -> torch.Tensor:
        if not 0 <= head < value.shape[0]:
            raise ValueError(f"head: must be in [0, {value.shape[0]}), got {head}")
        out = value.clone()
        out[head] = gamma
        return out

    return Intervention(f"blocks.{layer}.attn.hook_decay", fn, f"set_decay({layer}, {head}, {gamma})")


def patch_activation(
    name: str,
    source: Trace | torch.Tensor,
    positions: Sequence[int] | slice | None = None,
    source_attention_mask: torch.Tensor | None = None,
) -> Intervention:
    """Activation patching: at ``positions`` (indices along the hook's step axis; None = all)
    replace hook ``name``'s value by its value on another input. ``source`` is a Trace that
    recorded ``name`` or input ids (then recorded when the intervention is applied)."""
    recorded: dict[str, Any] = {}

    def setup(model: nn.Module) -> None:
        recorded["axes"] = {n: site.step_axis for n, site in hook_sites(model).items()}
        if isinstance(source, Trace):
            recorded["v"] = source[name]
        else:
            ids = source if source.dim() == 2 else source[None]
            with torch.no_grad(), trace(model, names=[name]) as tr:
                model(ids, attention_mask=source_attention_mask)
            recorded["v"] = tr[name]

    def fn(value: torch.Tensor, hook_name: str) -> torch.Tensor:
        src = recorded["v"].to(value.device, value.dtype)
        axis = recorded["axes"][hook_name]  # the site's declared step axis (pos or update)
        if axis is None:
            return src.clone() if positions is None else _fail("positions: this hook has no position axis")
        if src.shape[0] == 1 and value.shape[0] > 1:
            src = src.expand(value.shape[0], *src.shape[1:])
        if positions is None:
            if src.shape != value.shape:
                raise ValueError(f"source: {name} has shape {tuple(src.shape)}, the run has {tuple(value.shape)}")
            return src.clone()
        idx = torch.arange(value.shape[axis])[positions] if isinstance(positions, slice) else \
            torch.as_tensor(list(positions), dtype=torch.long)
        out = value.clone()
        out.index_copy_(axis, idx.to(value.device), src.index_select(axis, idx.to(value.device)))
        return out

    return Intervention(name, fn, f"patch_activation({name!r})", setup=setup)


def _fail(msg: str):
    raise ValueError(msg)


@contextlib.contextmanager
def intervene(model: nn.Module, *interventions: Intervention) -> Iterator[nn.Module]:
    """Apply interventions for the ``with`` block (hooks through
    :func:`pulse.hooks.installed_hooks`); hooks are removed and state restored on exit, also
    when anything raises."""
    sites = hook_sites(model)
    done_setup: list[Intervention] = []
    try:
        for iv in interventions:
            if not isinstance(iv, Intervention):
                raise TypeError(f"interventions: expected Intervention, got {type(iv).__name__}")
            if iv.setup is not None:
                iv.setup(model)
            done_setup.append(iv)
        hooks: list[tuple[str, Callable[[torch.Tensor, str], torch.Tensor]]] = []
        for iv in interventions:
            if iv.fn is None:
                continue
            matched = [n for n in sites if iv.matches(n)]
            if not matched and iv.strict:
                raise ValueError(f"{iv!r}: matches no hook site of this model")
            hooks.extend((n, iv.fn) for n in matched)
        with installed_hooks(model, hooks):
            yield model
    finally:
        for iv in reversed(done_setup):
            if iv.teardown is not None:
                iv.teardown(model)


@dataclass
class InterventionResult:
    """Before/after comparison of one input. Tensors are [B, T] unless noted."""

    interventions: list[str]
    input_ids: torch.Tensor
    loss_before: torch.Tensor
    loss_after: torch.Tensor
    logits_before: torch.Tensor  # [B, T, V]
    logits_after: torch.Tensor
    kl: torch.Tensor  # KL(before || after) of the next-token distributions
    max_abs_logit_change: torch.Tensor
    top1_before: torch.Tensor
    top1_after: torch.Tensor
    attention_mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None  # [B, T] scored targets (-100 = not scored); None = the inputs
    loss_name: str = "all-token loss"

    @property
    def delta_loss(self) -> torch.Tensor:
        return self.loss_after - self.loss_before

    @property
    def top1_changed(self) -> torch.Tensor:
        return self.top1_before != self.top1_after

    def _real(self) -> torch.Tensor:
        return torch.ones_like(self.kl, dtype=torch.bool) if self.attention_mask is None else self.attention_mask.bool()

    def scored(self) -> torch.Tensor:
        """[B, T] bool: the tokens the losses are on (a label, not padding, not position 0);
        the loss at ``t`` scores the prediction made after reading token ``t - 1``."""
        labels = self.input_ids if self.labels is None else self.labels
        out = (labels != -100) & self._real()
        out[:, 0] = False
        return out

    def summary(self) -> dict[str, Any]:
        """Loss before / after and their change on the scored tokens (:meth:`scored`), and the
        KL, largest logit change, top-1 changes and top-1 accuracy of the predictions of those
        tokens; ``n_label_tokens`` of them, ``loss`` says which (e.g. "answer-token loss").
        ``*_all_positions``: KL and top-1 changes over every real position, for reference."""
        real = self._real()
        scored = self.scored()
        pred = torch.zeros_like(scored)
        pred[:, :-1] = scored[:, 1:]  # the prediction of token t is made at t - 1
        n = int(scored.sum())
        target = (self.input_ids if self.labels is None else self.labels)[:, 1:][scored[:, 1:]]

        def mean(x: torch.Tensor) -> float:
            return float(x.float().mean()) if x.numel() else float("nan")

        return {
            "loss": self.loss_name,
            "n_label_tokens": n,
            "mean_loss_before": mean(self.loss_before[scored]),
            "mean_loss_after": mean(self.loss_after[scored]),
            "mean_delta_loss": mean(self.delta_loss[scored]),
            "accuracy_before": mean(self.top1_before[pred] == target),
            "accuracy_after": mean(self.top1_after[pred] == target),
            "max_abs_logit_change": float(self.max_abs_logit_change[pred].max()) if n else float("nan"),
            "mean_kl": mean(self.kl[pred]),
            "top1_changed_fraction": mean(self.top1_changed[pred]),
            "mean_kl_all_positions": mean(self.kl[real]),
            "top1_changed_fraction_all_positions": mean(self.top1_changed[real]),
        }

    def frame(self) -> pd.DataFrame:
        B, T = self.kl.shape
        s, p = np.unravel_index(np.arange(B * T), (B, T))
        df = pd.DataFrame({
            "sample": s, "pos": p, "token_id": self.input_ids.reshape(-1).numpy(),
            "loss_before": self.loss_before.reshape(-1).numpy(), "loss_after": self.loss_after.reshape(-1).numpy(),
            "delta_loss": self.delta_loss.reshape(-1).numpy(), "kl": self.kl.reshape(-1).numpy(),
            "max_abs_logit_change": self.max_abs_logit_change.reshape(-1).numpy(),
            "top1_before": self.top1_before.reshape(-1).numpy(), "top1_after": self.top1_after.reshape(-1).numpy(),
            "top1_changed": self.top1_changed.reshape(-1).numpy(),
            "scored": self.scored().reshape(-1).numpy(),
        })
        return df[self._real().reshape(-1).numpy()].reset_index(drop=True)


@torch.no_grad()
def compare(
    model: nn.Module,
    input_ids: torch.Tensor,
    interventions: Sequence[Intervention] | Intervention,
    labels: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    loss_name: str | None = None,
) -> InterventionResult:
    """Run ``input_ids`` without and with ``interventions``; per-token loss on ``labels``
    (``-100`` = not scored; default: the inputs, i.e. every token; see
    probes.trace.per_token_loss), KL and logit changes, top-1 changes. ``loss_name`` names
    the scored tokens in the summary (default "all-token loss" without labels, "label-token
    loss" with them; pass ``task.loss_name`` with ``task.labels_for(ids)``)."""
    if isinstance(interventions, Intervention):
        interventions = [interventions]
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    given = labels is not None
    if given:
        labels = labels[None] if labels.dim() == 1 else labels
        if labels.shape != input_ids.shape:
            raise ValueError(f"labels: shape {tuple(labels.shape)} differs from input_ids {tuple(input_ids.shape)}")
    labels = labels if given else input_ids
    if loss_name is None:
        loss_name = "label-token loss" if given else "all-token loss"
    before = model(input_ids, attention_mask=attention_mask)["logits"].float()
    with intervene(model, *interventions):
        after = model(input_ids, attention_mask=attention_mask)["logits"].float()
    lp_b, lp_a = before.log_softmax(-1), after.log_softmax(-1)
    kl = (lp_b.exp() * (lp_b - lp_a)).sum(-1)
    return InterventionResult(
        interventions=[repr(i) for i in interventions],
        input_ids=input_ids.cpu(),
        loss_before=per_token_loss(before, labels, attention_mask).cpu(),
        loss_after=per_token_loss(after, labels, attention_mask).cpu(),
        logits_before=before.cpu(), logits_after=after.cpu(),
        kl=kl.cpu(), max_abs_logit_change=(after - before).abs().amax(-1).cpu(),
        top1_before=before.argmax(-1).cpu(), top1_after=after.argmax(-1).cpu(),
        attention_mask=None if attention_mask is None else attention_mask.cpu(),
        labels=labels.cpu() if given else None, loss_name=loss_name,
    )
