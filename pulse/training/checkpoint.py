"""Resumable training checkpoints, with nothing pickled.

A checkpoint is a folder ``<out>/checkpoints/step-NNNNNNN/`` holding

* ``model.safetensors`` + ``config.json`` (``save_pretrained``; loadable on its own),
  ``tokenizer.json``, ``task.json`` and ``training.json`` (so ``pulse.evaluate`` works on it);
* ``optimizer.safetensors``: the AdamW moment tensors and step counts, by parameter name;
* ``rng.safetensors``: the torch CPU (and CUDA) generator states as uint8 tensors;
* ``trainer_state.json``: step, the optimizer's param groups and scalars, the schedule, the
  Python and NumPy RNG states, the state-bank event logs, eval history and world size.

The folder is written under a temporary name and renamed, so a crash never leaves a half
checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pulse.io import CheckpointError, atomic_write_bytes, atomic_write_text

from .optim import flatten_optimizer_state, unflatten_optimizer_state

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "capture_rng", "restore_rng",
           "CHECKPOINT_DIR", "TRAINER_STATE"]

CHECKPOINT_DIR = "checkpoints"
TRAINER_STATE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
_STEP_RE = re.compile(r"^step-(\d+)$")


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"name": np_state[0], "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted((k for k in tensors if k.startswith("torch_cuda_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n["name"], tensors["numpy_keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                                  metadata={"format": "pt"}))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a complete training checkpoint)")
    try:
        return load(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - any parse failure is a damaged file
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def save_checkpoint(directory: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    param_names: list[str], state: dict[str, Any], extra_files: dict[str, str]) -> Path:
    """Write a complete checkpoint to ``directory`` (atomically, via a temporary folder).

    ``state`` is the JSON-able trainer state (step etc.); ``extra_files`` maps file names to
    text written beside the weights (tokenizer.json, task.json, training.json, ...)."""
    directory = Path(directory)
    tmp = directory.parent / f".{directory.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    for name, text in extra_files.items():
        atomic_write_text(tmp / name, text)
    opt_tensors, opt_meta = flatten_optimizer_state(optimizer, param_names)
    _save_tensors(tmp / OPTIMIZER_FILE, opt_tensors)
    rng_tensors, rng_meta = capture_rng()
    _save_tensors(tmp / RNG_FILE, rng_tensors)
    full = {**state, "optimizer": opt_meta, "rng": rng_meta}
    atomic_write_text(tmp / TRAINER_STATE, json.dumps(full, indent=1, sort_keys=True) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


def load_checkpoint(directory: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    param_names: list[str], restore_rng_state: bool = True) -> dict[str, Any]:
    """Load weights, optimizer and RNG states from ``directory`` into ``model`` and
    ``optimizer``; returns the trainer state (``step``, ...)."""
    from pulse.io import WEIGHTS_NAME, load_weights, read_json_object

    directory = Path(directory)
    state = read_json_object(directory / TRAINER_STATE, f"{directory}: no {TRAINER_STATE} (not a training checkpoint)")
    load_weights(model, directory / WEIGHTS_NAME)
    opt_sd = unflatten_optimizer_state(_load_tensors(directory / OPTIMIZER_FILE), state["optimizer"], param_names)
    optimizer.load_state_dict(opt_sd)
    if restore_rng_state:
        restore_rng(_load_tensors(directory / RNG_FILE), state["rng"])
    return state


def list_checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    root = Path(out_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and (p / TRAINER_STATE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR / f"step-{step:07d}"


def prune_old_checkpoints(out_dir: str | os.PathLike, keep: int) -> None:
    found = list_checkpoints(out_dir)
    for _, p in found[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
