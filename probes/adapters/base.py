"""What every family adapter shares: hook sites on a Hugging Face model, one way to call them,
parameter substitution for interventions, and the implicit-attention result.

An adapter leaves the Hugging Face model's weights and its own code path alone. It

* adds a container ``model.blocks`` (a ``ModuleList`` with no parameters, so
  ``state_dict`` and ``save_pretrained`` are unchanged) whose ``blocks.{i}.mixer`` holds the
  :class:`~pulse.hooks.HookPoint` sites of layer ``i``: the names read like PULSE's
  (``blocks.0.mixer.hook_decay``) whatever the family calls its modules;
* replaces the ``forward`` of each mixer *instance* by a wrapper that calls the original
  ``forward`` (the reference PyTorch path on CPU) and, while it runs, reads the core's inputs
  and outputs with forward hooks on the mixer's own submodules (projections, norms).

Reading changes no value: a hooked forward equals an unhooked one bit for bit. A site is
*writable* when the value a hook returns is fed back into the Hugging Face computation
(through the submodule's output, its input, or a substituted parameter); a hook that returns
a new value at a *read-only* site raises :class:`ReadOnlySiteError` rather than being
ignored. Derived values (the state over time, per-step decays) are computed only when a hook
is registered on their site, so an adapted model with nothing hooked costs a few Python calls
per layer.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from pulse import hooks as _hooks
from pulse.hooks import HookPoint

# axes the adapters need beyond PULSE's own (pulse.hooks.AXES); added once, never overwritten
EXTRA_AXES = {
    "channel": "a channel of a per-channel recurrence (Mamba's inner channels [intermediate_size], "
               "RWKV's attention channels [attention_hidden_size])",
}
if hasattr(_hooks, "AXES"):
    for _axis, _doc in EXTRA_AXES.items():
        _hooks.AXES.setdefault(_axis, _doc)


class ReadOnlySiteError(RuntimeError):
    """A hook returned a new value at a site whose value the adapter cannot feed back."""


def make_hook_point(layout: Sequence[str], kind: str) -> HookPoint:
    """A HookPoint declaring ``layout`` and ``kind`` (also with an older ``pulse.hooks`` whose
    HookPoint takes no arguments: then they are set as attributes)."""
    try:
        return HookPoint(layout=tuple(layout), kind=kind)
    except TypeError:
        hp = HookPoint()
        hp.layout, hp.kind = tuple(layout), kind
        return hp


@dataclass(frozen=True)
class SiteSpec:
    """One hook site of an adapter's mixer: ``name`` (``hook_…``), ``layout``, ``kind``, whether
    a replaced value flows on (``writable``), whether it exists only with ``full_state=True``
    (``full``), and what the value is (``doc``)."""

    name: str
    layout: tuple[str, ...]
    kind: str
    writable: bool
    doc: str
    full: bool = False


class MixerHooks(nn.Module):
    """The hook sites of one layer's mixer (``blocks.{i}.mixer``)."""

    def __init__(self, specs: Sequence[SiteSpec], full_state: bool) -> None:
        super().__init__()
        self.specs = {s.name: s for s in specs if full_state or not s.full}
        for s in self.specs.values():
            self.add_module(s.name, make_hook_point(s.layout, s.kind))


class _Block(nn.Module):
    def __init__(self, mixer: MixerHooks) -> None:
        super().__init__()
        self.mixer = mixer


def _any_global_hooks() -> bool:
    m = nn.modules.module
    return bool(getattr(m, "_global_forward_hooks", None) or getattr(m, "_global_forward_pre_hooks", None))


def active(hp: HookPoint | None) -> bool:
    """Whether anything would see a value passed through ``hp`` (a hook on it, or a global hook)."""
    if hp is None:
        return False
    return bool(hp._forward_hooks or hp._forward_pre_hooks) or _any_global_hooks()


@dataclass
class ImplicitAttention:
    """The exact implicit attention of one layer's mixer core for one forward.

    ``matrix``: float64, laid out ``layout`` (``("batch", "channel", "pos", "src")`` for Mamba
    and RWKV, ``("batch", "head", "pos", "src")`` for Mamba-2); zero where ``src > pos``.
    ``values``: what it mixes (Mamba's x, RWKV's v) as the core receives them.
    ``reconstruction``: the core output rebuilt from ``matrix`` and ``values`` (times ``gate``
    where the core's observable output is gated), in the layout of ``actual``.
    ``actual``: the Hugging Face module's own value of that output (fp32, from a forward hook).
    ``residual``: ``||reconstruction - actual|| / ||actual||`` (Frobenius, float64);
    ``max_abs_error``: the largest entry of ``|reconstruction - actual|``.
    """

    layer: int
    matrix: torch.Tensor
    layout: tuple[str, ...]
    values: torch.Tensor
    gate: torch.Tensor | None
    reconstruction: torch.Tensor
    actual: torch.Tensor
    residual: float
    max_abs_error: float
    channels: torch.Tensor | None = None  # the channel (or head) indices kept, None = all
    notes: str = ""


def relative_residual(reconstruction: torch.Tensor, actual: torch.Tensor) -> tuple[float, float]:
    """(``||rec - act|| / ||act||``, ``max |rec - act|``) in float64."""
    rec, act = reconstruction.double(), actual.double()
    diff = rec - act
    denom = act.norm().item()
    rel = diff.norm().item() / denom if denom > 0 else diff.norm().item()
    return rel, (diff.abs().max().item() if diff.numel() else 0.0)


def half_life(decay: torch.Tensor, steps: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Tokens for a value to halve under a decay ``decay`` per unit step, taking ``steps``
    units per token: ``ln 2 / (steps * -ln decay)`` (inf where decay is 1)."""
    d = decay.double()
    return math.log(2.0) / (-torch.log(d) * (steps if not torch.is_tensor(steps) else steps.double()))


@contextlib.contextmanager
def substituted_parameters(module: nn.Module, values: dict[str, torch.Tensor]) -> Iterator[None]:
    """Let ``module`` see the tensors ``values`` in place of its parameters of those names for the
    ``with`` block (autograd flows through them); the parameters are put back in ``finally``."""
    saved = {}
    try:
        for name, value in values.items():
            saved[name] = module._parameters[name]
            module._parameters[name] = value
        yield
    finally:
        for name, p in saved.items():
            module._parameters[name] = p


def run_mixer(original, args: tuple, kwargs: dict, mixer: nn.Module, substitute: dict[str, torch.Tensor],
              forward_hooks: list = (), pre_hooks: list = ()):
    """The mixer's original forward with ``substitute`` in place of its parameters and temporary
    hooks on its own submodules (``[(submodule, fn), ...]``, forward and pre-forward), all removed
    in ``finally``: how every adapter reads and replaces the values inside a Hugging Face mixer."""
    handles = ([m.register_forward_hook(fn) for m, fn in forward_hooks]
               + [m.register_forward_pre_hook(fn) for m, fn in pre_hooks])
    try:
        with substituted_parameters(mixer, substitute):
            return original(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()


def changed_entries(new: torch.Tensor, old: torch.Tensor, new_raw: torch.Tensor, old_raw: torch.Tensor) -> torch.Tensor:
    """``old_raw`` with the entries where ``new`` differs from ``old`` replaced by ``new_raw``:
    the parameter to substitute after an intervention on a derived value, exact where the
    intervention left the value alone (no round trip through the inverse map)."""
    same = new.to(old.dtype) == old
    return torch.where(same, old_raw, new_raw.to(old_raw.dtype))


class FamilyAdapter:
    """Base of the family adapters. Subclasses set ``model_type``, ``family``, ``SITES``,
    implement ``_mixers()`` (the HF mixer modules, in layer order) and ``_forward(layer,
    original, args, kwargs)`` and ``_implicit(layer, record, channels)``.

    Use :func:`probes.adapters.adapt` (or ``Adapter(model)``) to install, :meth:`remove` to undo.
    """

    model_type: str = ""
    family: str = ""
    SITES: tuple[SiteSpec, ...] = ()
    implicit_layout: tuple[str, ...] = ("batch", "channel", "pos", "src")

    def __init__(self, model: nn.Module, *, full_state: bool = False) -> None:
        if getattr(model, "_pulse_adapter", None) is not None:
            raise ValueError("model: already adapted (use probes.adapters.adapt(model) to get its adapter, "
                             "or adapter.remove() first)")
        if hasattr(model, "blocks"):
            raise ValueError(f"model: has an attribute 'blocks' already ({type(model).__name__}); "
                             "the adapter puts its hook sites there")
        got = getattr(getattr(model, "config", None), "model_type", None)
        if self.model_type and got != self.model_type:
            raise ValueError(f"model: config.model_type is {got!r}, this adapter is for {self.model_type!r}")
        self.model = model
        self.full_state = full_state
        self.mixers: list[nn.Module] = list(self._mixers())
        self.hooks = [MixerHooks(self.SITES, full_state) for _ in self.mixers]
        self._recording: dict[int, dict[str, torch.Tensor]] | None = None
        self._warned: set[str] = set()
        model.add_module("blocks", nn.ModuleList([_Block(h) for h in self.hooks]))
        for layer, mixer in enumerate(self.mixers):
            if "forward" in mixer.__dict__:
                raise ValueError(f"layer {layer}: its mixer's forward is already replaced on the instance")
            original = mixer.forward
            sig = _signature(original)

            def wrapped(*args, _layer=layer, _original=original, _sig=sig, **kwargs):
                return self._forward(_layer, _original, _bind(_sig, args, kwargs), args, kwargs)

            mixer.forward = wrapped
        model._pulse_adapter = self

    # -- to implement -------------------------------------------------------------------------
    def _mixers(self) -> Iterator[nn.Module]:
        raise NotImplementedError

    def _forward(self, layer: int, original: Callable, bound: dict, args: tuple, kwargs: dict):
        raise NotImplementedError

    def _implicit(self, layer: int, record: dict[str, torch.Tensor], channels) -> ImplicitAttention:
        raise NotImplementedError

    def decay_table(self) -> list[dict[str, torch.Tensor]]:
        """Per layer: the decays of the mixer's parameters and their half-lives (see subclasses)."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.mixers)

    def site_names(self) -> list[str]:
        return [f"blocks.{i}.mixer.{n}" for i, h in enumerate(self.hooks) for n in h.specs]

    def point(self, layer: int, name: str) -> HookPoint | None:
        h = self.hooks[layer]
        return getattr(h, name) if name in h.specs else None

    def is_active(self, layer: int, name: str) -> bool:
        return active(self.point(layer, name))

    def emit(self, layer: int, name: str, value: torch.Tensor) -> torch.Tensor:
        """Pass ``value`` through site ``name`` of ``layer``; returns what flows on. A new value
        at a read-only site raises :class:`ReadOnlySiteError`."""
        hp = self.point(layer, name)
        if hp is None:
            return value
        out = hp(value)
        if out is not value and not self.hooks[layer].specs[name].writable:
            writable = [s.name for s in self.hooks[layer].specs.values() if s.writable]
            raise ReadOnlySiteError(
                f"blocks.{layer}.mixer.{name}: read-only in the {self.family} adapter (the Hugging Face "
                f"module computes this value inside its forward, so a replacement could not flow on); "
                f"writable sites: {writable}")
        if out is not value and (not torch.is_tensor(out) or out.shape != value.shape):
            raise ValueError(f"blocks.{layer}.mixer.{name}: a hook returned "
                             f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}, "
                             f"expected a tensor of shape {tuple(value.shape)}")
        return out

    def emit_lazy(self, layer: int, name: str, make: Callable[[], torch.Tensor]) -> None:
        """Pass ``make()`` through a read-only site, computing it only when the site is hooked."""
        if self.is_active(layer, name):
            self.emit(layer, name, make())

    def record(self, layer: int, **tensors: torch.Tensor) -> None:
        if self._recording is not None:
            self._recording.setdefault(layer, {}).update({k: v.detach() for k, v in tensors.items()})

    @property
    def recording(self) -> bool:
        return self._recording is not None

    @contextlib.contextmanager
    def capture(self) -> Iterator[dict[int, dict[str, torch.Tensor]]]:
        """Keep the mixer cores' inputs and outputs of the forwards run inside the ``with`` block
        (the last call per layer): ``{layer: {name: tensor}}``."""
        if self._recording is not None:
            raise RuntimeError("capture: already capturing")
        self._recording = {}
        try:
            yield self._recording
        finally:
            self._recording = None

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            import warnings

            warnings.warn(message, stacklevel=3)

    def implicit_attention(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        layers: Sequence[int] | None = None,
        channels: Sequence[int] | torch.Tensor | None = None,
    ) -> list[ImplicitAttention]:
        """Run one fresh forward (no cache, no carried state) and return, per layer in
        ``layers`` (default all), the exact implicit attention of its mixer core with the
        reconstruction residual against the module's own output. ``channels`` (heads for
        Mamba-2) restricts the matrix to those indices (the matrix is ``[B, C, T, T]``)."""
        layers = list(range(self.num_layers)) if layers is None else list(layers)
        for layer in layers:
            if not 0 <= layer < self.num_layers:
                raise ValueError(f"layers: {layer} is not a layer (0..{self.num_layers - 1})")
        kwargs: dict[str, Any] = {"use_cache": False}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        idx = None if channels is None else torch.as_tensor(channels, dtype=torch.long)
        with torch.no_grad(), self.capture() as recs:
            self.model(input_ids=input_ids, **kwargs)
        return [self._implicit(layer, recs[layer], idx) for layer in layers]

    def remove(self) -> None:
        """Undo :func:`adapt`: the mixers' own forwards and no ``model.blocks``."""
        for mixer in self.mixers:
            mixer.__dict__.pop("forward", None)
        if "blocks" in self.model._modules:
            del self.model._modules["blocks"]
        self.model._pulse_adapter = None


def _signature(fn: Callable) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _bind(sig: inspect.Signature | None, args: tuple, kwargs: dict) -> dict:
    """The call's arguments by name (positional ones named from the signature)."""
    if sig is not None:
        try:
            b = sig.bind_partial(*args, **kwargs)
            out = dict(b.arguments)
            extra = out.pop("kwargs", None)
            if isinstance(extra, dict):
                out.update(extra)
            return out
        except TypeError:
            pass
    return dict(kwargs)


def first_arg(bound: dict, args: tuple, *names: str):
    for n in names:
        if n in bound:
            return bound[n]
    return args[0] if args else None


__all__ = [
    "EXTRA_AXES", "FamilyAdapter", "ImplicitAttention", "MixerHooks", "ReadOnlySiteError", "SiteSpec", "active",
    "changed_entries", "half_life", "make_hook_point", "relative_residual", "substituted_parameters",
]
