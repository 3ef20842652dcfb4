"""Small helpers shared by the tasks: right-padding and seeded mini-batch iteration."""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import torch

__all__ = ["IGNORE_INDEX", "pad_sequences", "iterate_batches", "answer_accuracy"]

IGNORE_INDEX = -100


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int = 0, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to ``length`` (default: the longest).

    Returns ``(ids LongTensor[N, T], attention_mask FloatTensor[N, T])`` (1.0 = real token).
    Raises ``ValueError`` if a sequence is longer than ``length``.
    """
    longest = max((len(s) for s in seqs), default=0)
    T = longest if length is None else int(length)
    if longest > T:
        raise ValueError(f"length ({T}) is shorter than the longest sequence ({longest})")
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.float32)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, : len(s)] = 1.0
    return ids, mask


def iterate_batches(
    data: Mapping[str, torch.Tensor],
    batch_size: int,
    seed: int | None = 0,
    shuffle: bool = True,
    drop_last: bool = False,
    epochs: int | None = 1,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield dicts of row-slices of the ``[N, ...]`` tensors in ``data``.

    The order is a ``torch.randperm`` from ``torch.Generator().manual_seed(seed)``, drawn
    afresh each epoch (so reproducible for a seed, different across epochs);
    ``shuffle=False`` keeps the order. ``epochs=None`` loops forever.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not data:
        raise ValueError("data must hold at least one tensor")
    sizes = {k: v.shape[0] for k, v in data.items()}
    n = next(iter(sizes.values()))
    if any(s != n for s in sizes.values()):
        raise ValueError(f"data tensors must share their first dimension, got {sizes}")
    if n == 0 or (drop_last and n < batch_size):
        raise ValueError(f"data has {n} rows, too few for one batch of {batch_size}")
    gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
    epoch = 0
    while epochs is None or epoch < epochs:
        order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield {k: v[idx] for k, v in data.items()}
        epoch += 1


def answer_accuracy(predictions: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> dict[str, float | int]:
    """Accuracy on the scored positions of ``batch["answer_mask"]``.

    ``predictions``: logits ``[N, T, V]`` or predicted ids ``[N, T]``, from the model run on
    ``batch["input_ids"]``; position ``t-1`` predicts token ``t`` (the model-shift
    convention), so the prediction for answer position ``t`` is read at ``t-1``.
    Returns ``{"accuracy", "correct", "total", "sequence_accuracy"}`` where
    ``sequence_accuracy`` counts sequences with all their answers right.
    """
    ids = batch["input_ids"]
    mask = batch["answer_mask"].bool()
    if predictions.dim() == 3:
        predictions = predictions.argmax(-1)
    if predictions.shape != ids.shape:
        raise ValueError(f"predictions must be [N, T] or [N, T, V] matching input_ids {tuple(ids.shape)}, "
                         f"got {tuple(predictions.shape)}")
    if mask[:, 0].any():
        raise ValueError("answer_mask marks position 0, which no prediction covers")
    hit = (predictions[:, :-1] == ids[:, 1:]) & mask[:, 1:]
    m = mask[:, 1:]
    total = int(m.sum())
    correct = int(hit.sum())
    has = m.any(1)
    seq_ok = ((hit == m).all(1) & has).sum()
    return {
        "accuracy": correct / total if total else float("nan"),
        "correct": correct,
        "total": total,
        "sequence_accuracy": float(seq_ok) / int(has.sum()) if int(has.sum()) else float("nan"),
    }
