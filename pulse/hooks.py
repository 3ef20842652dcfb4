"""The whole hook mechanism: one identity module.

Every quantity the workbench shows passes through a :class:`HookPoint`
(``value = self.hook_decay(value)``). A HookPoint returns its input unchanged,
so with no hook registered it costs one Python call. PyTorch's own forward
hooks attach to it: a hook that returns a tensor replaces the value that flows
on, which is how interventions work. Hook names are the module paths from
``model.named_modules()``, e.g. ``blocks.3.attn.hook_decay``.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn


class HookPoint(nn.Module):
    """Identity module marking a named site where values can be read or replaced."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def hook_points(model: nn.Module) -> Iterator[tuple[str, HookPoint]]:
    """Yield ``(name, hook_point)`` for every hook site in ``model``, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, HookPoint):
            yield name, module
