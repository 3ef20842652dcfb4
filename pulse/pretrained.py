"""save_pretrained / from_pretrained: a folder with config.json and model.safetensors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pulse.io import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, load_weights, read_json_object, save_weights

MODEL_REGISTRY: dict[str, type["PretrainedMixin"]] = {}


def register_model(cls):
    """Class decorator: make ``cls`` loadable by :func:`load_pretrained` via its model_type."""
    MODEL_REGISTRY[cls.config_class.model_type] = cls
    return cls


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
