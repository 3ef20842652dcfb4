"""Shared helpers: a forward whose value at one hook site is given from outside."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from pulse.hooks import hook_sites, installed_hooks


def _check_site(model: nn.Module, name: str) -> None:
    if name not in hook_sites(model):
        raise ValueError(f"name: {name!r} is not a hook site of this model")


@contextlib.contextmanager
def replaced_hook(model: nn.Module, name: str, holder: dict) -> Iterator[None]:
    """While active, hook ``name`` returns ``holder["value"]`` (when set) instead of its value."""
    _check_site(model, name)
    with installed_hooks(model, {name: lambda value, _name: holder.get("value")}):
        yield


def target_value(logits: torch.Tensor, position: int, target: int, output: str) -> torch.Tensor:
    """[B] scalar per row from logits [B, T, V]: logit, log-probability or probability of
    ``target`` at ``position``."""
    row = logits[:, position].float()
    if output == "logit":
        return row[:, target]
    if output == "logprob":
        return row.log_softmax(-1)[:, target]
    if output == "prob":
        return row.softmax(-1)[:, target]
    raise ValueError(f"output: expected 'logit', 'logprob' or 'prob', got {output!r}")


def make_forward(model: nn.Module, name: str, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 position: int, target: int, output: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(value [n*B, ...]) -> [n*B]: the model run on ``input_ids`` (repeated to the batch of
    ``value``) with hook ``name`` replaced by ``value``."""
    B = input_ids.shape[0]

    def forward(value: torch.Tensor) -> torch.Tensor:
        reps = value.shape[0] // B
        ids = input_ids.repeat(reps, 1)
        mask = None if attention_mask is None else attention_mask.repeat(reps, 1)
        holder = {"value": value}
        with replaced_hook(model, name, holder):
            logits = model(ids, attention_mask=mask)["logits"]
        return target_value(logits, position, target, output)

    return forward


def record(model: nn.Module, name: str, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The value at hook ``name`` on this input (with gradient graph cut)."""
    box = {}
    _check_site(model, name)
    keep = {name: lambda value, _name: box.__setitem__("v", value.detach().clone())}
    with torch.no_grad(), installed_hooks(model, keep):
        model(input_ids, attention_mask=attention_mask)
    return box["v"]
