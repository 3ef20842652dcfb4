"""Adapters: other families' models with PULSE's hook kinds and exact implicit attention.

    from probes.adapters import adapt, load_pretrained
    model = load_pretrained("path/to/save_pretrained_folder")   # by config.json; local files only
    adapter = adapt(model)                 # (load_pretrained already adapted it: same adapter)
    pulse.hooks.hook_sites(model)          # blocks.{i}.mixer.hook_decay, ... with layouts and kinds
    adapter.implicit_attention(ids)        # per layer: matrix, reconstruction, residual

One file per family (``mamba.py``, ``mamba2.py``, ``rwkv.py``), one registration line each
below. The families come from Hugging Face ``transformers`` (the optional extra
``pulse-workbench[adapters]``); importing this package does not import it, adapting or loading
such a model does.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable

from torch import nn

from pulse.io import CONFIG_NAME, CheckpointError, read_json_object

AdapterFactory = Callable[..., Any]

_ADAPTERS: dict[str, AdapterFactory] = {}


def register_adapter(model_type: str, factory: AdapterFactory) -> None:
    """Make ``adapt`` and ``load_pretrained`` handle models whose ``config.model_type`` is
    ``model_type``: ``factory(model, **options)`` returns the installed adapter."""
    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"model_type: expected a non-empty string, got {model_type!r}")
    if not callable(factory):
        raise TypeError(f"factory: not callable ({factory!r})")
    _ADAPTERS[model_type] = factory


def _lazy(module: str, cls: str) -> AdapterFactory:
    def factory(model, **options):
        return getattr(importlib.import_module(f"probes.adapters.{module}"), cls)(model, **options)

    factory.__qualname__ = f"{module}.{cls}"
    return factory


register_adapter("mamba", _lazy("mamba", "MambaAdapter"))
register_adapter("mamba2", _lazy("mamba2", "Mamba2Adapter"))
register_adapter("rwkv", _lazy("rwkv", "RwkvAdapter"))


def registered_adapters() -> list[str]:
    return sorted(_ADAPTERS)


def _pulse_types() -> list[str]:
    import pulse  # noqa: F401  (registers the PULSE model types)
    from pulse.pretrained import MODEL_REGISTRY

    return sorted(MODEL_REGISTRY)


def adapt(model: nn.Module, **options):
    """The adapter of ``model`` (installed on first call, the same object after), chosen by its
    ``config.model_type``. ``options`` (e.g. ``full_state=True``) apply on installation."""
    existing = getattr(model, "_pulse_adapter", None)
    if existing is not None:
        if options and any(getattr(existing, k, v) != v for k, v in options.items()):
            raise ValueError(f"adapt: the model is adapted already with other options than {options}; "
                             "call adapter.remove() first")
        return existing
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type is None:
        raise ValueError(f"adapt: {type(model).__name__} has no config.model_type")
    if model_type not in _ADAPTERS:
        if model_type in _pulse_types():
            raise ValueError(f"adapt: model_type {model_type!r} is a PULSE model; its hook sites are built in "
                             "(pulse.hooks.hook_sites(model)), no adapter needed")
        raise ValueError(f"adapt: no adapter for model_type {model_type!r}; registered: {registered_adapters()}")
    return _ADAPTERS[model_type](model, **options)


def load_pretrained(folder: str | os.PathLike, *, device: str = "cpu", hooked: bool = True, **options) -> nn.Module:
    """Open a ``save_pretrained`` folder by its ``config.json``: a registered family through
    ``transformers.AutoModelForCausalLM`` (local files only, eval mode, adapted unless
    ``hooked=False``), a PULSE model through :func:`pulse.pretrained.load_pretrained`. A
    missing folder or config, a config that is not a JSON object or names no known
    ``model_type``, or weights that do not load raise :class:`pulse.io.CheckpointError`
    naming the file and the problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder")
    path = folder / CONFIG_NAME
    cfg = read_json_object(path, f"{folder}: no {CONFIG_NAME} (is this a save_pretrained folder?)")
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise CheckpointError(f"{path}: no 'model_type' (got {model_type!r}); cannot tell which family to load")
    if model_type not in _ADAPTERS:
        pulse_types = _pulse_types()
        if model_type in pulse_types:
            from pulse.pretrained import load_pretrained as load_pulse

            return load_pulse(folder, device=device)
        raise CheckpointError(f"{path}: model_type {model_type!r} is not one of "
                              f"{sorted(set(registered_adapters()) | set(pulse_types))}")
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as e:  # pragma: no cover - the extra is missing
        raise ImportError(f"{path}: model_type {model_type!r} needs transformers "
                          "(pip install 'pulse-workbench[adapters]')") from e
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{folder}: could not load the {model_type!r} model: {e}") from e
    model = model.to(device).eval()
    if hooked:
        adapt(model, **options)
    return model


def adapter_of(model: nn.Module):
    """The installed adapter of ``model`` (None for a model with built-in hook sites or none)."""
    return getattr(model, "_pulse_adapter", None)


def has_implicit_attention(model: nn.Module) -> bool:
    """Whether ``model``'s adapter computes the exact implicit attention of its mixer cores."""
    return callable(getattr(adapter_of(model), "implicit_attention", None))


def implicit_attention(model: nn.Module, input_ids, layer: int, channel: int, attention_mask=None):
    """The exact implicit attention of ``layer``'s mixer core for channel (or head) ``channel``
    on ``input_ids`` (one fresh forward): the adapter's :class:`~probes.adapters.base.ImplicitAttention`
    with ``matrix`` [batch, 1, pos, src] and the reconstruction residual of that channel
    against the core's own output. Raises ``ValueError`` for a model without it."""
    if not has_implicit_attention(model):
        raise ValueError(f"implicit_attention: {type(model).__name__} has no adapter with implicit attention")
    return adapter_of(model).implicit_attention(input_ids, attention_mask=attention_mask, layers=[int(layer)],
                                                channels=[int(channel)])[0]


__all__ = ["adapt", "adapter_of", "has_implicit_attention", "implicit_attention", "load_pretrained",
           "register_adapter", "registered_adapters"]
