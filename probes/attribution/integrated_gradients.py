"""Integrated gradients over the input token embeddings (Captum).

    res = token_attributions(model, ids, position=10, target=ids[0, 11].item())
    res.attributions      # [T] per-token attribution (summed over the embedding dims)
    res.relative_error    # completeness: |sum(attr) - (F(x) - F(baseline))| / |F(x) - F(baseline)|

``F`` is the target's logit (or log-probability / probability, ``output=``) at ``position``
for the first sample. The embeddings are those at the ``hook_embed`` site (before the
padding mask), integrated along the straight path from the baseline: ``baseline='pad'``
(every token replaced by ``config.pad_token_id``'s embedding; recommended) or ``'zeros'``.
The zero path starts at RMSNorm's singular point (x / rms(x) with rms -> 0), where the
integrand is very steep, so completeness with ``'zeros'`` needs far more steps; check
``relative_error``. A model with key-value memory (``use_memory``) reads the top-k entries, a
selection that jumps along the integration path; the integrand is then discontinuous and
completeness fails however many steps are taken (about 27% error on the shipped story model,
against < 0.1% with :func:`probes.memory_off`): attribute such a model with its memory switched
off, or read the error as the share the top-k jumps account for. Captum's
:class:`captum.attr.IntegratedGradients` does the integration on a forward whose
``hook_embed`` value is supplied from outside.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from captum.attr import IntegratedGradients
from torch import nn

from probes.attribution._common import make_forward, record


@dataclass
class TokenAttribution:
    attributions: torch.Tensor  # [T] summed over embedding dims
    attributions_full: torch.Tensor  # [T, D]
    f_input: float
    f_baseline: float
    delta: float  # sum(attributions) - (f_input - f_baseline)
    position: int
    target: int
    input_ids: torch.Tensor

    @property
    def relative_error(self) -> float:
        denom = abs(self.f_input - self.f_baseline)
        return abs(self.delta) / denom if denom > 0 else abs(self.delta)

    def frame(self, tokenizer=None) -> pd.DataFrame:
        ids = self.input_ids.tolist()
        toks = [tokenizer.decode([i]) for i in ids] if tokenizer is not None else [None] * len(ids)
        return pd.DataFrame({"pos": range(len(ids)), "token_id": ids, "token": toks,
                             "attribution": self.attributions.tolist()})


def token_attributions(
    model: nn.Module,
    input_ids: torch.Tensor,
    position: int,
    target: int,
    baseline: str = "pad",
    n_steps: int = 64,
    method: str = "gausslegendre",
    output: str = "logit",
    attention_mask: torch.Tensor | None = None,
    internal_batch_size: int | None = None,
) -> TokenAttribution:
    """IG attributions of ``F`` to each input token (see module doc). ``input_ids`` [T] or [1, T]."""
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.shape[0] != 1:
        raise ValueError(f"input_ids: one sequence at a time, got batch {input_ids.shape[0]}")
    T = input_ids.shape[1]
    if not -T <= position < T:
        raise ValueError(f"position: must be in [0, {T}), got {position}")
    position = position % T
    was_training = model.training
    model.eval()
    try:
        emb = record(model, "hook_embed", input_ids, attention_mask)  # [1, T, D]
        if baseline == "pad":
            pad = getattr(getattr(model, "config", None), "pad_token_id", 0) or 0
            base = record(model, "hook_embed", torch.full_like(input_ids, pad), attention_mask)
        elif baseline == "zeros":
            base = torch.zeros_like(emb)
        else:
            raise ValueError(f"baseline: expected 'pad' or 'zeros', got {baseline!r}")
        fwd = make_forward(model, "hook_embed", input_ids, attention_mask, position, target, output)
        ig = IntegratedGradients(fwd)
        attr, delta = ig.attribute(emb, baselines=base, n_steps=n_steps, method=method,
                                   internal_batch_size=internal_batch_size, return_convergence_delta=True)
        with torch.no_grad():
            f_x = float(fwd(emb)[0])
            f_b = float(fwd(base)[0])
    finally:
        model.train(was_training)
    attr = attr.detach()[0]
    return TokenAttribution(attributions=attr.sum(-1), attributions_full=attr, f_input=f_x, f_baseline=f_b,
                            delta=float(attr.sum()) - (f_x - f_b), position=position, target=int(target),
                            input_ids=input_ids[0].cpu())
