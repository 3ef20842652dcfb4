"""save_pretrained / from_pretrained: a folder with config.json and model.safetensors; and the
model registry: ``model_type`` -> class, read by :func:`load_pretrained` and by ``pulse.train``
(``model.type`` in a run's YAML)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pulse.io import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, load_weights, read_json_object, save_weights

MODEL_REGISTRY: dict[str, type["PretrainedMixin"]] = {}


def register_model(cls):
    """Class decorator: make ``cls`` loadable by :func:`load_pretrained` and trainable by
    ``pulse.train`` (``model.type: <model_type>``) via ``cls.config_class.model_type``.

    What both expect of ``cls`` (every :class:`pulse.causal_lm.CausalLM` has it): a
    ``config_class`` (a config dataclass with ``model_type``, ``to_dict`` and
    ``from_json_file``, like :class:`pulse.config.ConfigBase`), ``cls(config)``,
    ``save_pretrained`` / ``from_pretrained``, and ``forward(input_ids, attention_mask=...,
    labels=...)`` returning a dict with ``"logits"``, and with labels ``"loss"`` and
    ``"lm_loss"`` (``"aux_loss"`` optional)."""
    model_type = getattr(getattr(cls, "config_class", None), "model_type", None)
    if not isinstance(model_type, str) or not model_type:
        raise TypeError(f"register_model: {cls.__name__}.config_class has no model_type")
    MODEL_REGISTRY[model_type] = cls
    return cls


def registered_models() -> list[str]:
    """The registered model types, sorted (``pulse``, ``legacy_pulse``, ``transformer``, ...)."""
    return sorted(MODEL_REGISTRY)


def model_class(model_type: str) -> type:
    """The class registered for ``model_type``; KeyError naming the registered types."""
    if model_type not in MODEL_REGISTRY:
        raise KeyError(f"model type {model_type!r} is not registered; registered: {registered_models()}")
    return MODEL_REGISTRY[model_type]


class PretrainedMixin:
    """Adds ``save_pretrained`` and ``from_pretrained`` to an ``nn.Module`` with a ``config``."""

    config_class: Any = None

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # weights first: a folder is only complete (and loadable) once its config exists
        save_weights(self, directory / WEIGHTS_NAME)
        self.config.to_json_file(directory / CONFIG_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu"):
        config = read_config(directory, cls.config_class)
        model = cls(config)
        load_weights(model, Path(directory) / WEIGHTS_NAME)
        return model.to(device).eval()


def read_config(directory: str | os.PathLike, config_class):
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a folder")
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_NAME} (is this a save_pretrained folder?)")
    return config_class.from_json_file(path)


def load_pretrained(directory: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Load any of the project's causal LMs from a save_pretrained folder (dispatch on model_type)."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    model_type = read_json_object(
        path, f"{directory}: no {CONFIG_NAME} (is this a save_pretrained folder?)").get("model_type")
    if model_type not in MODEL_REGISTRY:
        raise CheckpointError(
            f"{path}: model_type {model_type!r} is not one of {sorted(MODEL_REGISTRY)}"
        )
    return MODEL_REGISTRY[model_type].from_pretrained(directory, device=device)
