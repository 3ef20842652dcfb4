"""Held-out evaluation shared by ``pulse.train`` and ``pulse.evaluate``: token-weighted
next-token loss on the trained positions and answer accuracy on the scored positions."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from pulse.data.batching import IGNORE_INDEX

__all__ = ["evaluate_model", "autocast_context"]


def autocast_context(device: torch.device, amp: bool):
    """bf16 autocast on ``device`` when ``amp``, otherwise a no-op context."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def evaluate_model(model: nn.Module, data: Mapping[str, torch.Tensor], batch_size: int = 256,
                   device: torch.device | str = "cpu", amp: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` on a batch dict (``input_ids``, ``labels``, ``attention_mask``,
    ``answer_mask``), ``batch_size`` rows at a time.

    Returns ``{"loss": mean next-token cross entropy over the label positions,
    "perplexity", "accuracy", "sequence_accuracy", "correct", "total", "tokens", "n"}``,
    where ``accuracy`` is :func:`pulse.data.answer_accuracy` pooled over all batches.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    n = int(data["input_ids"].shape[0])
    loss_sum, tokens, correct, total, seq_ok, seq_total = 0.0, 0, 0, 0, 0, 0
    try:
        for start in range(0, n, batch_size):
            b = {k: v[start:start + batch_size].to(device) for k, v in data.items()}
            with autocast_context(device, amp):
                logits = model(b["input_ids"], attention_mask=b["attention_mask"])["logits"]
            logits = logits.float()
            labels = b["labels"].masked_fill(b["attention_mask"] == 0, IGNORE_INDEX)[:, 1:]
            flat = logits[:, :-1].reshape(-1, logits.shape[-1])
            loss_sum += float(F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"))
            tokens += int((labels != IGNORE_INDEX).sum())
            mask = b["answer_mask"].bool()[:, 1:]
            hit = (logits[:, :-1].argmax(-1) == b["input_ids"][:, 1:]) & mask
            correct += int(hit.sum())
            total += int(mask.sum())
            has = mask.any(1)
            seq_ok += int(((hit == mask).all(1) & has).sum())
            seq_total += int(has.sum())
    finally:
        model.train(was_training)
    loss = loss_sum / tokens if tokens else float("nan")
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if tokens and loss < 50 else float("nan"),
        "accuracy": correct / total if total else float("nan"),
        "sequence_accuracy": seq_ok / seq_total if seq_total else float("nan"),
        "correct": correct,
        "total": total,
        "tokens": tokens,
        "n": n,
    }
