"""The training stream as a pure function of (seed, step, rank).

``train_batch(task, step, rank, world_size, batch_size, seq_len, seed)`` returns the batch
that process ``rank`` trains on at (0-based) ``step``. Nothing is carried between calls, so
a resumed run continues with exactly the batches the uninterrupted run would have seen,
and every rank gets its own shard:

* story world: story ``i`` of the batch is generated from ``random.Random`` seeded by
  ``(task seed, seed, rank, step, i)``;
* algorithmic tasks: one ``numpy`` generator seeded by ``[task seed, 1000, seed, rank, step]``
  (the eval/test splits use ``[task seed, 1|2]``, so they never share a stream);
* text: the training blocks are read in epochs, each epoch a ``torch.randperm`` seeded by
  ``(seed, epoch)``; global batch ``g = step * world_size + rank`` takes rows
  ``g*B .. g*B+B-1`` of the concatenated epoch orders.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from pulse.data.story_world import generate_story
from pulse.data.tasks import AlgorithmicTask, StoryWorldTask, Task, TextTask

__all__ = ["train_batch"]


@lru_cache(maxsize=8)
def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1_000_003 * int(seed) + int(epoch))
    return torch.randperm(n, generator=gen)


def train_batch(task: Task, step: int, rank: int = 0, world_size: int = 1, batch_size: int = 32,
                seq_len: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """The training batch of ``rank`` at ``step`` (see the module docstring)."""
    if isinstance(task, StoryWorldTask):
        stream = f"story-world:{task.config.seed}:train:{seed}:{rank}:{step}"
        stories = [generate_story(random.Random(f"{stream}:{i}"), task.config) for i in range(batch_size)]
        return task.encode_stories(stories, seq_len)
    if isinstance(task, AlgorithmicTask):
        rng = np.random.default_rng([task.config.seed, 1000, seed, rank, step])
        return task._batch(task._cfg(seq_len), batch_size, rng)
    if isinstance(task, TextTask):
        data = task.make_split("train", seq_len=seq_len)
        n = int(data["input_ids"].shape[0])
        if n == 0:
            raise ValueError("data: the training text is too short for one block of "
                             f"seq_len={seq_len or task.seq_len} tokens")
        g = step * world_size + rank
        rows = torch.arange(g * batch_size, (g + 1) * batch_size)
        epochs, pos = rows // n, rows % n
        idx = torch.stack([_epoch_order(n, seed, int(e))[int(p)] for e, p in zip(epochs, pos)])
        return {k: v[idx] for k, v in data.items()}
    # any other registered task: fall back to its own iterator, re-created per step
    it: Any = task.train_batches(batch_size, seq_len=seq_len, seed=hash((seed, rank, step)) & 0x7FFFFFFF)
    return next(iter(it))
