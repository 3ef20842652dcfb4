"""Integrated gradients over the input token embeddings (Captum), with their own error.

    res = token_attributions(model, ids, answer_mask=batch["answer_mask"][0])   # the answer token
    res = token_attributions(model, ids, position=10, target=ids[0, 11].item())  # any token
    res.attributions      # [T] per-token attribution (summed over the embedding dims)
    res.relative_error    # completeness: |sum(attr) - (F(x) - F(baseline))| / |F(x) - F(baseline)|
    res.n_steps           # the steps that gave it; res.errors: {steps: error} of every try
    res.converged         # relative_error < max_error (default 5%)

``F`` is the target's logit (or log-probability / probability, ``output=``) at ``position``
for the first sample. The embeddings are those at the ``hook_embed`` site (before the
padding mask), integrated along the straight path from the baseline: ``baseline='pad'``
(every token replaced by ``config.pad_token_id``'s embedding, the attention mask unchanged;
recommended) or ``'zeros'`` (starts at RMSNorm's singular point x / rms(x), rms -> 0, where
the integrand is very steep). ``f_baseline`` is ``F`` of exactly that baseline, through the
same forward the attributions integrate.

**The default target is the answer.** With no ``position``, the attributed token is
:func:`answer_index`: the last position marked in ``answer_mask`` (a story-world batch's
answers: the token after each ``?``), else the token after the last ``question_token_id``
(``?``) in the text, else the last token. ``position`` is the one before it, whose logits
predict it; when the answer lies beyond the text (it ends with ``?``) the target is the
model's top guess there.

**Steps are added until the attributions add up.** Captum's integration is run with
``n_steps`` (default 32), then twice as many, ... up to ``max_steps`` (default 512), until the
completeness error is below ``max_error``; every try's error is kept in ``errors``. Whether it
got there is ``converged``; when it did not, the attributions are not a decomposition of the
score change and must be shown with their error (the workbench draws it in red).

Why the error is large on the shipped story models (measured on
``checkpoints/story-world-pulse``, answer tokens of the test split): not a bug in the scored
function -- ``F`` at the ends is computed by the very forward Captum integrates, that forward
gives the same value in every row of its repeated batch, the model is in eval mode and fp32,
and its gradient along the path matches central finite differences (e.g. 3.272 vs 3.276 and
818.8 vs 832.3 at a cliff). The integrand is steep: the key-value memory
(``MemoryAugmentedLayer``) reads a softmax over its top-k scores ``q.k / sqrt(d)``, which the
trained model drives to 10-30, so the read is nearly an argmax. Along the straight path from
the pad baseline the best-scoring entry changes hands (e.g. slot 42 -> slot 15 of layer 0 for the
answer at position 48 of test story 1) within about 0.5% of the path, and ``F`` climbs 5.5 of
its 7.7 logits there (dF/dalpha ~ 800, against ~3 elsewhere). A 16-64 node Gauss-Legendre rule
either steps over that cliff or lands a node on it and weights it by ~1/n, hence errors of
100-350% that do not even fall monotonically with more steps (that example: 25% at 16 steps,
147% at 32, 134% at 64, 20% at 256, 9% at 1024). On top of that, the top-k selection itself
changes along the path (hundreds of membership changes over 2,000 points): true jumps of ``F``,
small here (a few hundredths of a logit in total) but never integrable by any number of steps.
With the memory read switched off (:func:`probes.memory_off`; a different function, so not a
fix, only a check of the cause) 10 of 12 of the same answers are complete to 0.1-3% at 64 steps
(two at 11% and 14%), and ``F`` has no cliff (its largest change over 1/2000 of the path is 0.04
logits, against 1.6 with the memory). The adaptive steps below get 19 of 20 test-split answers
under 5% (32-256 steps); the one left is at 15% after 512. A small completeness error is necessary
for attributions to be trusted, not sufficient: a coarse rule can hit the total by cancellation. The state bank's ``torch.where`` masks depend on positions only, not on the
values integrated, so they do not break the path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import pandas as pd
import torch
from captum.attr import IntegratedGradients
from torch import nn

from probes.attribution._common import make_forward, record

DEFAULT_N_STEPS = 32
DEFAULT_MAX_STEPS = 512
DEFAULT_MAX_ERROR = 0.05


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
    n_steps: int = 0  # the steps of the returned attributions
    errors: dict[int, float] = field(default_factory=dict)  # steps -> completeness error, every try
    max_error: float = DEFAULT_MAX_ERROR
    baseline: str = "pad"

    @property
    def relative_error(self) -> float:
        return completeness_error(float(self.attributions_full.sum()), self.f_input, self.f_baseline)

    @property
    def converged(self) -> bool:
        return self.relative_error < self.max_error

    def frame(self, tokenizer=None) -> pd.DataFrame:
        ids = self.input_ids.tolist()
        toks = [tokenizer.decode([i]) for i in ids] if tokenizer is not None else [None] * len(ids)
        return pd.DataFrame({"pos": range(len(ids)), "token_id": ids, "token": toks,
                             "attribution": self.attributions.tolist()})


def completeness_error(total: float, f_input: float, f_baseline: float) -> float:
    """|total - (F(x) - F(baseline))| / |F(x) - F(baseline)| (the absolute gap when F(x) = F(baseline))."""
    change = f_input - f_baseline
    gap = abs(total - change)
    return gap / abs(change) if change != 0 else gap


def answer_index(input_ids: torch.Tensor | Sequence[int], answer_mask: torch.Tensor | Sequence[bool] | None = None,
                 question_token_id: int | None = None) -> int:
    """Index (in ``1 .. T``) of the token to attribute by default: the last position marked in
    ``answer_mask`` [T] (position 0 is never a prediction), else the one after the last
    ``question_token_id`` (``T`` when the text ends with it: the token the model would say next),
    else the last token ``T - 1``."""
    ids = torch.as_tensor(input_ids).reshape(-1)
    T = ids.numel()
    if T < 2:
        raise ValueError(f"input_ids: need at least two tokens to attribute a prediction, got {T}")
    if answer_mask is not None:
        m = torch.as_tensor(answer_mask).reshape(-1).bool()
        if m.numel() != T:
            raise ValueError(f"answer_mask: {m.numel()} positions for {T} tokens")
        marked = m[1:].nonzero().flatten()
        if marked.numel():
            return int(marked[-1]) + 1
    if question_token_id is not None:
        q = (ids == question_token_id).nonzero().flatten()
        if q.numel():
            return int(q[-1]) + 1
    return T - 1


def _steps_schedule(n_steps: int, max_steps: int) -> list[int]:
    if n_steps < 1:
        raise ValueError(f"n_steps: must be >= 1, got {n_steps}")
    out = [n_steps]
    while out[-1] * 2 <= max_steps:
        out.append(out[-1] * 2)
    if out[-1] < max_steps:
        out.append(max_steps)
    return out


def token_attributions(
    model: nn.Module,
    input_ids: torch.Tensor,
    position: int | None = None,
    target: int | None = None,
    baseline: str = "pad",
    n_steps: int = DEFAULT_N_STEPS,
    method: str = "gausslegendre",
    output: str = "logit",
    attention_mask: torch.Tensor | None = None,
    internal_batch_size: int | None = None,
    max_steps: int | None = DEFAULT_MAX_STEPS,
    max_error: float = DEFAULT_MAX_ERROR,
    answer_mask: torch.Tensor | None = None,
    question_token_id: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> TokenAttribution:
    """IG attributions of ``F`` to each input token (see module doc). ``input_ids`` [T] or [1, T].

    ``position`` None: the answer (:func:`answer_index` of ``answer_mask`` / ``question_token_id``);
    ``target`` None: the token at ``position + 1``, or the model's top guess past the end.
    Steps ``n_steps, 2 n_steps, ...`` up to ``max_steps`` (None or <= n_steps: only ``n_steps``)
    until the completeness error is below ``max_error``. ``progress(done, total, message)`` is
    called after each try, ``done``/``total`` in integration steps of the whole schedule."""
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.shape[0] != 1:
        raise ValueError(f"input_ids: one sequence at a time, got batch {input_ids.shape[0]}")
    T = input_ids.shape[1]
    if position is None:
        position = answer_index(input_ids[0], answer_mask, question_token_id) - 1
    if not -T <= position < T:
        raise ValueError(f"position: must be in [0, {T}), got {position}")
    position = position % T
    schedule = _steps_schedule(int(n_steps), int(max_steps) if max_steps is not None else int(n_steps))
    was_training = model.training
    model.eval()
    try:
        if target is None:
            if position + 1 < T:
                target = int(input_ids[0, position + 1])
            else:
                with torch.no_grad():
                    target = int(model(input_ids, attention_mask=attention_mask)["logits"][0, position].argmax())
        emb = record(model, "hook_embed", input_ids, attention_mask)  # [1, T, D]
        if baseline == "pad":
            pad = getattr(getattr(model, "config", None), "pad_token_id", 0) or 0
            base = record(model, "hook_embed", torch.full_like(input_ids, pad), attention_mask)
        elif baseline == "zeros":
            base = torch.zeros_like(emb)
        else:
            raise ValueError(f"baseline: expected 'pad' or 'zeros', got {baseline!r}")
        fwd = make_forward(model, "hook_embed", input_ids, attention_mask, position, int(target), output)
        with torch.no_grad():  # F at both ends, through the very forward that is integrated
            f_x = float(fwd(emb)[0])
            f_b = float(fwd(base)[0])
        ig = IntegratedGradients(fwd)
        errors: dict[int, float] = {}
        best = None
        total, done = sum(schedule), 0
        for steps in schedule:
            attr = ig.attribute(emb, baselines=base, n_steps=steps, method=method,
                                internal_batch_size=internal_batch_size).detach()[0]
            err = completeness_error(float(attr.sum()), f_x, f_b)
            errors[steps] = err
            done += steps
            if progress is not None:
                progress(done if err >= max_error else total, total,
                         f"{steps} steps: completeness error {100 * err:.1f}%")
            if best is None or err <= best[1]:
                best = (attr, err, steps)
            if err < max_error:
                break
    finally:
        model.train(was_training)
    # the most complete try is returned (with Gauss-Legendre nodes the error need not fall
    # monotonically with the steps); `errors` keeps every try
    attr, _, steps = best
    return TokenAttribution(attributions=attr.sum(-1), attributions_full=attr, f_input=f_x, f_baseline=f_b,
                            delta=float(attr.sum()) - (f_x - f_b), position=position, target=int(target),
                            input_ids=input_ids[0].cpu(), n_steps=steps, errors=errors, max_error=max_error,
                            baseline=baseline)
