"""AdamW with decay on matrices only, a cosine schedule with linear warmup, and a
pickle-free optimizer state: tensors for safetensors, everything else as JSON."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["build_optimizer", "CosineSchedule", "flatten_optimizer_state", "unflatten_optimizer_state"]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                    eps: float) -> torch.optim.AdamW:
    """AdamW; weight decay on parameters with 2+ dimensions except the state bank's slot
    initial values (norm gains, biases, decays, importance logits are not decayed)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and not name.endswith("slot_values") else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, eps=eps)


class CosineSchedule:
    """lr(step) for 0-based ``step``: linear warmup from lr/warmup to lr over ``warmup``
    steps, then cosine decay to ``min_lr_ratio * lr`` at ``total`` steps. Stateless: the
    schedule is a pure function of the step, so resuming needs only the step number."""

    def __init__(self, base_lr: float, warmup: int, total: int, min_lr_ratio: float = 0.1) -> None:
        self.base_lr, self.warmup, self.total, self.min_lr_ratio = float(base_lr), int(warmup), int(total), float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.base_lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self(step)
        for group in optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):  # a captured (CUDA-graph) optimizer reads it in place
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"type": "cosine_with_warmup", "base_lr": self.base_lr, "warmup": self.warmup,
                "total": self.total, "min_lr_ratio": self.min_lr_ratio}


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:  # a captured optimizer's device lr
        return float(value)
    if isinstance(value, tuple):
        return {"__tuple__": [_jsonable(v) for v in value]}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"optimizer state: cannot store a {type(value).__name__} as JSON")


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_from_json(v) for v in value["__tuple__"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def flatten_optimizer_state(optimizer: torch.optim.Optimizer, param_names: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` -> (tensors ``{"state.<param name>.<key>": tensor}``,
    JSON ``{"param_groups": [...], "param_names": [...], "scalars": {...}}``).

    ``param_names[i]`` names the parameter with optimizer index ``i``; storing by name makes
    a mismatch between the model and the checkpoint an error instead of silent garbage."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        name = param_names[int(idx)]
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{name}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(name, {})[key] = _jsonable(value)
    meta = {"param_groups": _jsonable(sd["param_groups"]), "param_names": list(param_names), "scalars": scalars}
    return tensors, meta


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], param_names: list[str]) -> dict[str, Any]:
    """The inverse of :func:`flatten_optimizer_state`: a dict for ``optimizer.load_state_dict``."""
    saved_names = meta.get("param_names")
    if saved_names != list(param_names):
        missing = sorted(set(param_names) - set(saved_names or []))
        extra = sorted(set(saved_names or []) - set(param_names))
        raise ValueError(f"optimizer state: parameters do not match the model (missing {missing[:5]}, "
                         f"unexpected {extra[:5]})")
    index = {name: i for i, name in enumerate(param_names)}
    state: dict[int, dict[str, Any]] = {}
    for full, tensor in tensors.items():
        if not full.startswith("state."):
            raise ValueError(f"optimizer state: unexpected tensor {full!r}")
        name, key = full[len("state."):].rsplit(".", 1)
        if name not in index:
            raise ValueError(f"optimizer state: tensor {full!r} names no parameter of the model")
        state.setdefault(index[name], {})[key] = tensor
    for name, values in meta.get("scalars", {}).items():
        for key, value in values.items():
            state.setdefault(index[name], {})[key] = _from_json(value)
    return {"state": state, "param_groups": _from_json(meta["param_groups"])}
