"""Attribution of a target logit to the state-bank slots (Captum).

The bank's read is ``read_t = sum_s r[t, s] * importance_s * b_s``: the read weights
``blocks.{i}.states.hook_read_weights`` ``[B, T, S]`` are where each slot enters the token
stream. Two methods on that hook site:

* ``method='ig'``: integrated gradients (:class:`captum.attr.IntegratedGradients`) from the
  baseline ``r = 0`` (no slot read) to the actual read weights; attributions over
  ``(pos, slot)`` sum to ``F(r) - F(0)`` (completeness; ``relative_error`` reports it).
* ``method='grad_x_act'``: :class:`captum.attr.LayerGradientXActivation` on the HookPoint
  module (gradient x read weight, one backward pass; no completeness guarantee).

Returns a tidy frame (pos, slot, attribution) and per-slot totals.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from captum.attr import IntegratedGradients, LayerGradientXActivation
from torch import nn

from probes.attribution._common import make_forward, record, target_value
from pulse.hooks import hook_sites


@dataclass
class SlotAttribution:
    layer: int
    attributions: torch.Tensor  # [T, S]
    f_input: float
    f_baseline: float
    method: str

    @property
    def per_slot(self) -> torch.Tensor:
        return self.attributions.sum(0)

    @property
    def delta(self) -> float:
        return float(self.attributions.sum()) - (self.f_input - self.f_baseline)

    @property
    def relative_error(self) -> float:
        denom = abs(self.f_input - self.f_baseline)
        return abs(self.delta) / denom if denom > 0 else abs(self.delta)

    def frame(self) -> pd.DataFrame:
        T, S = self.attributions.shape
        return pd.DataFrame({"layer": self.layer, "pos": torch.arange(T).repeat_interleave(S).numpy(),
                             "slot": torch.arange(S).repeat(T).numpy(),
                             "attribution": self.attributions.reshape(-1).numpy()})


def slot_attributions(
    model: nn.Module,
    input_ids: torch.Tensor,
    layer: int,
    position: int,
    target: int,
    method: str = "ig",
    n_steps: int = 64,
    output: str = "logit",
    attention_mask: torch.Tensor | None = None,
) -> SlotAttribution:
    """Attribution of ``F`` (target logit at ``position``) to the read weights of block ``layer``."""
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.shape[0] != 1:
        raise ValueError(f"input_ids: one sequence at a time, got batch {input_ids.shape[0]}")
    name = f"blocks.{layer}.states.hook_read_weights"
    sites = hook_sites(model)
    if name not in sites:
        raise ValueError(f"layer: block {layer} has no state bank hook {name}")
    T = input_ids.shape[1]
    position = position % T
    was_training = model.training
    model.eval()
    try:
        r = record(model, name, input_ids, attention_mask)  # [1, T, S]
        fwd = make_forward(model, name, input_ids, attention_mask, position, target, output)
        with torch.no_grad():
            f_x, f_b = float(fwd(r)[0]), float(fwd(torch.zeros_like(r))[0])
        if method == "ig":
            attr = IntegratedGradients(fwd).attribute(r, baselines=torch.zeros_like(r), n_steps=n_steps,
                                                      method="gausslegendre")
        elif method == "grad_x_act":
            def plain(ids: torch.Tensor) -> torch.Tensor:
                return target_value(model(ids, attention_mask=attention_mask)["logits"], position, target, output)

            attr = LayerGradientXActivation(plain, sites[name].point).attribute(input_ids)
        else:
            raise ValueError(f"method: expected 'ig' or 'grad_x_act', got {method!r}")
    finally:
        model.train(was_training)
    return SlotAttribution(layer=layer, attributions=attr.detach()[0], f_input=f_x, f_baseline=f_b, method=method)
