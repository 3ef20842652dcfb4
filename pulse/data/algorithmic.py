"""Seeded synthetic algorithmic tasks: MQAR, selective copying, induction heads.

Every generator returns ``{"input_ids": LongTensor[N, T], "labels": LongTensor[N, T],
"attention_mask": FloatTensor[N, T]}``. ``labels`` is aligned with ``input_ids`` (the
model shifts: logits at ``t-1`` predict ``labels[t]``) and is ``-100`` everywhere except the
scored (answer) positions, where it equals ``input_ids``. ``attention_mask`` is 1.0 on real
tokens and 0.0 on right padding (only present when ``cfg.seq_len`` exceeds the natural
length).

Vocabulary layout (shared by all three tasks): ids 0-3 are the specials of
:class:`~pulse.data.tokenizers.WordTokenizer` (``<pad>``=0, ``<unk>``=1, ``<bos>``=2,
``<eos>``=3; only ``<pad>`` is used), task tokens follow from id 4. ``cfg.vocab()`` gives
the word list (index = id), so ``WordTokenizer.from_vocabulary(cfg.vocab())`` decodes.

* **MQAR** (multi-query associative recall). ``k v k v ... k v | q a q a ...``:
  ``num_pairs`` key-value pairs (distinct keys, values drawn with replacement), the
  separator ``|``, then ``num_queries`` queries, each a key from the pairs followed by its
  value (teacher forced). Scored: the value after each query key.
  Layout: 4 = ``|``; keys ``k0..`` at ``5 .. 5+num_keys-1``; values ``v0..`` after the keys.
  Natural length ``2*num_pairs + 1 + 2*num_queries``.
* **Selective copying**. ``context_len`` tokens that are noise except ``num_to_copy`` data
  tokens at random positions, then the marker ``copy``, then the data tokens in their
  order (teacher forced). Scored: the ``num_to_copy`` copied tokens.
  Layout: 4 = ``noise``, 5 = ``copy``, data ``d0..`` from 6. Length ``context_len + 1 + num_to_copy``.
* **Induction heads**. ``total_len`` tokens: a segment of ``segment_len`` distinct tokens
  placed at a random start, and repeated at the very end; all other tokens are noise drawn
  from the tokens *not* in the segment, so each repeated token has exactly one earlier
  occurrence. Scored: the second occurrence except its first token (which no rule can
  predict), i.e. ``segment_len - 1`` positions. Layout: tokens ``t0..`` from 4.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Union

import numpy as np
import torch

__all__ = [
    "NUM_SPECIAL",
    "IGNORE_INDEX",
    "MQARConfig",
    "SelectiveCopyConfig",
    "InductionConfig",
    "AlgorithmicConfig",
    "make_batch",
    "generate_dataset",
]

NUM_SPECIAL = 4
IGNORE_INDEX = -100
_SPECIAL_WORDS = ["<pad>", "<unk>", "<bos>", "<eos>"]


def _check_int(cls: str, name: str, v: Any, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{cls}.{name} must be an int, got {v!r}")
    if v < lo:
        raise ValueError(f"{cls}.{name} must be >= {lo}, got {v}")


class _Base:
    seq_len: int | None

    @property
    def natural_len(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def length(self) -> int:
        """Padded sequence length T (``seq_len`` if set, else the natural length)."""
        return self.natural_len if self.seq_len is None else self.seq_len

    def _check_seq_len(self) -> None:
        name = type(self).__name__
        if self.seq_len is not None:
            _check_int(name, "seq_len", self.seq_len, 1)
            if self.seq_len < self.natural_len:
                raise ValueError(
                    f"{name}.seq_len ({self.seq_len}) is shorter than the task's natural "
                    f"length ({self.natural_len})"
                )

    def vocab(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        return len(self.vocab())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass
class MQARConfig(_Base):
    """Multi-query associative recall; see the module docstring for the layout."""

    num_pairs: int = 8
    num_queries: int = 8
    num_keys: int = 32
    num_values: int = 32
    seq_len: int | None = None
    seed: int = 0

    SEP = 4

    def __post_init__(self) -> None:
        n = "MQARConfig"
        _check_int(n, "num_pairs", self.num_pairs, 1)
        _check_int(n, "num_queries", self.num_queries, 1)
        _check_int(n, "num_keys", self.num_keys, 1)
        _check_int(n, "num_values", self.num_values, 1)
        _check_int(n, "seed", self.seed, 0)
        if self.num_pairs > self.num_keys:
            raise ValueError(f"MQARConfig.num_pairs ({self.num_pairs}) must be <= num_keys ({self.num_keys})")
        self._check_seq_len()

    @property
    def key_offset(self) -> int:
        return 5

    @property
    def value_offset(self) -> int:
        return 5 + self.num_keys

    @property
    def natural_len(self) -> int:
        return 2 * self.num_pairs + 1 + 2 * self.num_queries

    def vocab(self) -> list[str]:
        return _SPECIAL_WORDS + ["|"] + [f"k{i}" for i in range(self.num_keys)] + [f"v{i}" for i in range(self.num_values)]


@dataclass
class SelectiveCopyConfig(_Base):
    """Selective copying; see the module docstring for the layout."""

    context_len: int = 32
    num_to_copy: int = 8
    num_data_tokens: int = 16
    seq_len: int | None = None
    seed: int = 0

    NOISE = 4
    MARKER = 5

    def __post_init__(self) -> None:
        n = "SelectiveCopyConfig"
        _check_int(n, "context_len", self.context_len, 1)
        _check_int(n, "num_to_copy", self.num_to_copy, 1)
        _check_int(n, "num_data_tokens", self.num_data_tokens, 1)
        _check_int(n, "seed", self.seed, 0)
        if self.num_to_copy > self.context_len:
            raise ValueError(
                f"SelectiveCopyConfig.num_to_copy ({self.num_to_copy}) must be <= context_len ({self.context_len})"
            )
        self._check_seq_len()

    @property
    def data_offset(self) -> int:
        return 6

    @property
    def natural_len(self) -> int:
        return self.context_len + 1 + self.num_to_copy

    def vocab(self) -> list[str]:
        return _SPECIAL_WORDS + ["noise", "copy"] + [f"d{i}" for i in range(self.num_data_tokens)]


@dataclass
class InductionConfig(_Base):
    """Induction heads; see the module docstring for the layout."""

    total_len: int = 64
    segment_len: int = 8
    num_tokens: int = 32
    seq_len: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        n = "InductionConfig"
        _check_int(n, "segment_len", self.segment_len, 2)
        _check_int(n, "total_len", self.total_len, 2 * self.segment_len)
        _check_int(n, "num_tokens", self.num_tokens, self.segment_len + 1)
        _check_int(n, "seed", self.seed, 0)
        self._check_seq_len()

    @property
    def token_offset(self) -> int:
        return NUM_SPECIAL

    @property
    def natural_len(self) -> int:
        return self.total_len

    def vocab(self) -> list[str]:
        return _SPECIAL_WORDS + [f"t{i}" for i in range(self.num_tokens)]


AlgorithmicConfig = Union[MQARConfig, SelectiveCopyConfig, InductionConfig]


def _mqar(cfg: MQARConfig, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    P, Q = cfg.num_pairs, cfg.num_queries
    keys = np.argsort(rng.random((n, cfg.num_keys)), axis=1)[:, :P]  # distinct keys per row
    values = rng.integers(0, cfg.num_values, size=(n, P))
    if Q <= P:
        qidx = np.argsort(rng.random((n, P)), axis=1)[:, :Q]
    else:
        qidx = rng.integers(0, P, size=(n, Q))
    qkeys = np.take_along_axis(keys, qidx, axis=1)
    qvals = np.take_along_axis(values, qidx, axis=1)
    ids = np.empty((n, cfg.natural_len), dtype=np.int64)
    ids[:, 0 : 2 * P : 2] = keys + cfg.key_offset
    ids[:, 1 : 2 * P : 2] = values + cfg.value_offset
    ids[:, 2 * P] = cfg.SEP
    ids[:, 2 * P + 1 :: 2] = qkeys + cfg.key_offset
    ids[:, 2 * P + 2 :: 2] = qvals + cfg.value_offset
    scored = np.zeros_like(ids, dtype=bool)
    scored[:, 2 * P + 2 :: 2] = True
    return ids, scored


def _selective_copy(cfg: SelectiveCopyConfig, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    L, K = cfg.context_len, cfg.num_to_copy
    pos = np.sort(np.argsort(rng.random((n, L)), axis=1)[:, :K], axis=1)
    data = rng.integers(0, cfg.num_data_tokens, size=(n, K)) + cfg.data_offset
    ids = np.full((n, cfg.natural_len), cfg.NOISE, dtype=np.int64)
    np.put_along_axis(ids, pos, data, axis=1)
    ids[:, L] = cfg.MARKER
    ids[:, L + 1 :] = data
    scored = np.zeros_like(ids, dtype=bool)
    scored[:, L + 1 :] = True
    return ids, scored


def _induction(cfg: InductionConfig, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    T, L, V = cfg.total_len, cfg.segment_len, cfg.num_tokens
    perm = np.argsort(rng.random((n, V)), axis=1)
    segment = perm[:, :L]  # distinct segment tokens
    rest = perm[:, L:]  # tokens allowed as noise
    noise = np.take_along_axis(rest, rng.integers(0, V - L, size=(n, T)), axis=1)
    ids = noise.copy()
    starts = rng.integers(0, T - 2 * L + 1, size=n)
    cols = starts[:, None] + np.arange(L)[None, :]
    np.put_along_axis(ids, cols, segment, axis=1)
    ids[:, T - L :] = segment
    ids += cfg.token_offset
    scored = np.zeros_like(ids, dtype=bool)
    scored[:, T - L + 1 :] = True
    return ids, scored


_GENERATORS = {MQARConfig: _mqar, SelectiveCopyConfig: _selective_copy, InductionConfig: _induction}


def _as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def make_batch(cfg: AlgorithmicConfig, batch_size: int, rng: np.random.Generator | int | None = None) -> dict[str, torch.Tensor]:
    """One batch of ``batch_size`` examples of the task given by the config type.

    ``rng`` is a numpy ``Generator`` (advanced in place, for streams of batches) or a seed.
    Returns ``input_ids`` / ``labels`` (LongTensor [N, T]) and ``attention_mask`` (float [N, T]).
    """
    gen = _GENERATORS.get(type(cfg))
    if gen is None:
        raise TypeError(f"cfg must be one of {[c.__name__ for c in _GENERATORS]}, got {type(cfg).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    ids, scored = gen(cfg, batch_size, _as_generator(rng))
    T = cfg.length
    input_ids = torch.zeros((batch_size, T), dtype=torch.long)
    input_ids[:, : ids.shape[1]] = torch.from_numpy(ids)
    labels = torch.full((batch_size, T), IGNORE_INDEX, dtype=torch.long)
    sc = torch.from_numpy(scored)
    labels[:, : ids.shape[1]] = torch.where(sc, input_ids[:, : ids.shape[1]], torch.tensor(IGNORE_INDEX))
    attention_mask = torch.zeros((batch_size, T), dtype=torch.float32)
    attention_mask[:, : ids.shape[1]] = 1.0
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def generate_dataset(n: int, cfg: AlgorithmicConfig, seed: int | None = None) -> dict[str, torch.Tensor]:
    """``n`` examples generated from ``np.random.default_rng(seed)`` (``seed`` defaults to
    ``cfg.seed``): same seed, same tensors."""
    return make_batch(cfg, n, np.random.default_rng(cfg.seed if seed is None else seed))
