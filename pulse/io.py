"""Files: atomic writes and strict safetensors weights. Nothing here unpickles."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class CheckpointError(ValueError):
    """A checkpoint folder or weights file is missing, damaged or does not fit the model."""


def read_json_object(path: str | os.PathLike, missing: str) -> dict:
    """The JSON object stored in ``path``. A missing file raises CheckpointError(``missing``);
    a file that is not JSON, or holds something other than an object, one naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(missing)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; a checkpoint is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Save ``model.state_dict()`` (parameters and persistent buffers) as safetensors."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata={"format": "pt"}))


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load safetensors weights into ``model``, refusing missing, extra or misshapen tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        tensors = load(path.read_bytes())
    except (SafetensorError, Exception) as e:  # noqa: BLE001 - any parse failure is a bad file
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise CheckpointError(f"{path}: missing tensor(s): {', '.join(missing[:10])}")
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensor(s): {', '.join(unexpected[:10])}")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{path}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"the model expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict(tensors, strict=True)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_hash(model: nn.Module) -> str:
    """A short content hash of a model's weights, stable across save/load."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
