"""Tasks: one small interface over every data source, for training and evaluation scripts.

``task = build_task(name, **kwargs)`` with ``name`` in :func:`available_tasks`
(``story_world``, ``mqar``, ``selective_copy``, ``induction``, ``text``). Every task has

* ``task.tokenizer`` (a :class:`~pulse.data.tokenizers.WordTokenizer` or
  :class:`~pulse.data.tokenizers.ByteBPETokenizer`) and ``task.vocab_size``;
* ``task.make_split(split, n=None, seq_len=None) -> batch`` for ``split`` in
  ``("train", "eval", "test")`` (text tasks: ``"train"``, ``"eval"``); same arguments,
  same tensors;
* ``task.eval_set(n=None, seq_len=None)`` = ``make_split("eval", ...)``;
* ``task.train_batches(batch_size, seq_len=None, seed=0)``: an *infinite* iterator of
  batches (fresh samples for generated tasks, reshuffled epochs for text); take as many as
  you need with ``itertools.islice``;
* ``task.evaluate_predictions(predictions, batch)``: answer accuracy (see
  :func:`~pulse.data.batching.answer_accuracy`);
* ``task.labels_for(input_ids, attention_mask=None)``: the training labels of *any* token
  ids (a typed text, a generated one, a batch), exactly as ``make_split`` labels its rows:
  ``-100`` wherever the model was not trained to predict the token; ``task.answer_mask_for``
  the answer positions; ``task.loss_name`` says which loss those labels give
  (``"answer-token loss"`` or ``"all-token loss"``);
* ``task.describe()``: a JSON-able dict for run metadata.

A *batch* is a dict of tensors with the same ``[N, T]`` shape:

* ``input_ids`` (long);
* ``labels`` (long): the training target, aligned with ``input_ids`` (the model shifts:
  logits at ``t-1`` are scored against ``labels[t]``), ``-100`` where not trained on.
  ``train_on="all"`` (story world and text default): every real token, i.e. the full
  next-token LM loss. ``train_on="answers"`` (algorithmic default): only the answer
  positions;
* ``attention_mask`` (float32, 1.0 = real token, 0.0 = right padding);
* ``answer_mask`` (bool): positions scored for accuracy (story-world answer tokens, MQAR
  values after queries, copied tokens, repeated segment; for text every real token but
  the first).

Generated tasks derive every split from ``(config.seed, split)`` and the training stream
from ``(config.seed, seed)``, so splits are reproducible and independent of each other
(a generated eval example can coincide with a training one by chance, as in the
literature on these tasks).
"""

from __future__ import annotations

import dataclasses
import os
import random
from functools import partial
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from . import algorithmic as alg
from .batching import IGNORE_INDEX, answer_accuracy, iterate_batches, pad_sequences
from .story_world import (
    Story,
    StoryWorldConfig,
    generate_dataset,
    generate_story,
    max_story_length,
    story_world_vocabulary,
)
from .text import check_characters, load_text_dataset, pack_sequences, tokenize_texts
from .tokenizers import ByteBPETokenizer, WordTokenizer, load_tokenizer

STORY_PUNCTUATION = ".,!?;:"  # split off as words when story text is encoded (the stories' own: . ?)

__all__ = [
    "Task",
    "StoryWorldTask",
    "AlgorithmicTask",
    "TextTask",
    "build_task",
    "register_task",
    "available_tasks",
]

SPLITS = ("train", "eval", "test")
_SPLIT_CODE = {"train": 0, "eval": 1, "test": 2}


def _check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {list(allowed)}, got {split!r}")


def _check_pos_int(name: str, v: Any, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")


def _ids_and_mask(input_ids: Any, attention_mask: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(ids [B, T] long, mask [B, T], was 1-D) of token ids given as a list or a tensor."""
    ids = torch.as_tensor(input_ids)
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"input_ids must be integer token ids, got dtype {ids.dtype}")
    if ids.dim() not in (1, 2):
        raise ValueError(f"input_ids must be [T] or [B, T], got shape {tuple(ids.shape)}")
    one = ids.dim() == 1
    ids = ids.long()[None] if one else ids.long()
    if attention_mask is None:
        attn = torch.ones(ids.shape, dtype=torch.float32)
    else:
        attn = torch.as_tensor(attention_mask).to(torch.float32)
        attn = attn[None] if attn.dim() == 1 else attn
        if attn.shape != ids.shape:
            raise ValueError(f"attention_mask has shape {tuple(attn.shape)}, input_ids {tuple(ids.shape)}")
    return ids, attn.to(ids.device), one


def _split_config_kwargs(cls: type, kwargs: dict[str, Any], task: str) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for task {task!r}; {cls.__name__} fields: {sorted(known)}")
    return kwargs


class Task:
    """Base class; see the module docstring for the interface."""

    name: str = "task"
    tokenizer: Any
    train_on: str = "all"
    default_eval_size: int = 512

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def make_split(self, split: str, n: int | None = None, seq_len: int | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def eval_set(self, n: int | None = None, seq_len: int | None = None) -> dict[str, torch.Tensor]:
        return self.make_split("eval", n, seq_len)

    def train_batches(self, batch_size: int, seq_len: int | None = None, seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        raise NotImplementedError

    def evaluate_predictions(self, predictions: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        return answer_accuracy(predictions, batch)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "vocab_size": self.vocab_size, "train_on": self.train_on}

    def _finish(self, ids: torch.Tensor, attn: torch.Tensor, answer_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.train_on == "all":
            labels = ids.masked_fill(attn == 0, IGNORE_INDEX)
        else:
            labels = ids.masked_fill(~answer_mask, IGNORE_INDEX)
        return {"input_ids": ids, "labels": labels, "attention_mask": attn, "answer_mask": answer_mask}

    # -------------------------------------------------------------- labels of any ids
    @property
    def loss_name(self) -> str:
        """What a loss on :meth:`labels_for` is: ``"answer-token loss"`` (``train_on="answers"``)
        or ``"all-token loss"`` (``train_on="all"``: every real token, the LM loss)."""
        return "answer-token loss" if self.train_on == "answers" else "all-token loss"

    def answer_mask_for(self, input_ids: Any, attention_mask: Any = None) -> torch.Tensor:
        """[B, T] bool (or [T] for 1-D ids): the answer positions of these ids, as
        ``make_split`` marks them in ``answer_mask``; never a padding position."""
        ids, attn, one = _ids_and_mask(input_ids, attention_mask)
        mask = self._answer_mask(ids) & (attn > 0)
        return mask[0] if one else mask

    def labels_for(self, input_ids: Any, attention_mask: Any = None) -> torch.Tensor:
        """The labels training used, for any token ids: ``input_ids`` where the model was
        trained to predict the token, ``-100`` elsewhere (long, same shape as ``input_ids``).

        ``train_on="all"``: every real token; ``train_on="answers"``: the answer positions
        (story world: the token after each ``?``; MQAR / selective copy / induction: their
        answer columns). ``attention_mask`` (1 = real token, default all real) excludes
        padding. On ``make_split``'s rows it equals their ``labels``. Pass the result as
        ``labels=`` to ``probes.compare`` / ``per_token_loss`` / the claim checks to score
        the tokens the model was trained on (:attr:`loss_name` says which)."""
        ids, attn, one = _ids_and_mask(input_ids, attention_mask)
        if self.train_on == "all":
            keep = attn > 0
        else:
            keep = self._answer_mask(ids) & (attn > 0)
        labels = ids.masked_fill(~keep, IGNORE_INDEX)
        return labels[0] if one else labels

    def _answer_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, T] bool answer positions of 2-D ids (padding is removed by the caller)."""
        raise NotImplementedError(f"task {self.name!r} does not say where its answers are")

    @staticmethod
    def _check_train_on(train_on: str) -> str:
        if train_on not in ("all", "answers"):
            raise ValueError(f"train_on must be 'all' or 'answers', got {train_on!r}")
        return train_on


class StoryWorldTask(Task):
    """The story world (:mod:`pulse.data.story_world`), one story per row, right-padded.

    Rows of ``make_split(split, n)`` are ``task.stories(split, n)`` in order, and input
    position ``i`` is ``story.tokens[i]`` (no ``<bos>``; stories end with ``<eos>``), so
    per-token annotations line up with model positions. ``seq_len=None`` pads to the
    longest story of the batch; a given ``seq_len`` must be at least
    :attr:`max_len` (stories are never truncated, answers come last).
    """

    name = "story_world"

    def __init__(self, config: StoryWorldConfig | None = None, eval_size: int = 512, train_on: str = "all",
                 **config_fields: Any) -> None:
        if config is not None and config_fields:
            raise ValueError(f"pass either config or config fields, not both (got {sorted(config_fields)})")
        self.config = config or StoryWorldConfig(**_split_config_kwargs(StoryWorldConfig, config_fields, self.name))
        _check_pos_int("eval_size", eval_size)
        self.default_eval_size = eval_size
        self.train_on = self._check_train_on(train_on)
        # the stories are lower-case with punctuation as words: text to encode is normalised so
        # ("Mary went to the kitchen." -> "mary went to the kitchen ."), and the tokenizer saves it
        self.tokenizer = WordTokenizer.from_vocabulary(story_world_vocabulary(self.config), lowercase=True,
                                                       split_punctuation=STORY_PUNCTUATION)

    @property
    def max_len(self) -> int:
        return max_story_length(self.config)

    def stories(self, split: str, n: int | None = None, start: int = 0) -> list[Story]:
        """The stories behind ``make_split(split, n)`` (rows ``start .. start+n-1``)."""
        _check_split(split)
        return generate_dataset(self.default_eval_size if n is None else n, self.config,
                                seed=f"{self.config.seed}-{split}", start=start)

    def encode_stories(self, stories: list[Story], seq_len: int | None = None) -> dict[str, torch.Tensor]:
        if seq_len is not None and seq_len < self.max_len:
            raise ValueError(f"seq_len ({seq_len}) must be >= the longest possible story ({self.max_len} tokens)")
        seqs = [self.tokenizer.encode(s.text, strict=True) for s in stories]
        ids, attn = pad_sequences(seqs, self.tokenizer.pad_token_id, seq_len)
        answer_mask = torch.zeros_like(ids, dtype=torch.bool)
        for row, s in enumerate(stories):
            answer_mask[row, s.answer_positions] = True
        return self._finish(ids, attn, answer_mask)

    def make_split(self, split: str, n: int | None = None, seq_len: int | None = None) -> dict[str, torch.Tensor]:
        return self.encode_stories(self.stories(split, n), seq_len)

    def _answer_mask(self, ids: torch.Tensor) -> torch.Tensor:
        # Every question ends "... ?" and its answer is the next token; "?" appears nowhere else.
        qmark = self.tokenizer.token_to_id("?")
        if qmark is None:  # pragma: no cover - the story-world vocabulary always has it
            raise ValueError("the story-world tokenizer has no '?' token")
        mask = torch.zeros_like(ids, dtype=torch.bool)
        mask[:, 1:] = ids[:, :-1] == qmark
        return mask

    def train_batches(self, batch_size: int, seq_len: int | None = None, seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        _check_pos_int("batch_size", batch_size)
        stream = f"{self.config.seed}-train-stream-{seed}"
        step = 0
        while True:
            stories = [generate_story(random.Random(f"story-world:{stream}:{i}"), self.config)
                       for i in range(step * batch_size, (step + 1) * batch_size)]
            yield self.encode_stories(stories, seq_len)
            step += 1

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "config": self.config.to_dict()}


_ALG_CONFIGS: dict[str, type] = {
    "mqar": alg.MQARConfig,
    "selective_copy": alg.SelectiveCopyConfig,
    "induction": alg.InductionConfig,
}


class AlgorithmicTask(Task):
    """MQAR / selective copying / induction (:mod:`pulse.data.algorithmic`).

    Fixed-length rows; ``seq_len`` (argument or config) right-pads. Trained on the answer
    positions only by default (``train_on="answers"``).
    """

    def __init__(self, kind: str, config: Any = None, eval_size: int = 1000, train_on: str = "answers",
                 **config_fields: Any) -> None:
        if kind not in _ALG_CONFIGS:
            raise ValueError(f"kind must be one of {sorted(_ALG_CONFIGS)}, got {kind!r}")
        cls = _ALG_CONFIGS[kind]
        if config is not None and config_fields:
            raise ValueError(f"pass either config or config fields, not both (got {sorted(config_fields)})")
        if config is not None and not isinstance(config, cls):
            raise TypeError(f"config for {kind!r} must be a {cls.__name__}, got {type(config).__name__}")
        self.name = kind
        self.config = config or cls(**_split_config_kwargs(cls, config_fields, kind))
        _check_pos_int("eval_size", eval_size)
        self.default_eval_size = eval_size
        self.train_on = self._check_train_on(train_on)
        self.tokenizer = WordTokenizer.from_vocabulary(self.config.vocab())

    def _cfg(self, seq_len: int | None) -> Any:
        return self.config if seq_len is None else dataclasses.replace(self.config, seq_len=seq_len)

    def _answer_mask(self, ids: torch.Tensor) -> torch.Tensor:
        # The answer columns are fixed by the task's layout (the same in every row): read them
        # off one generated row rather than restating the layout here.
        if not hasattr(self, "_answer_columns"):
            row = alg.make_batch(self.config, 1, np.random.default_rng(0))["labels"][0]
            self._answer_columns = torch.nonzero(row != IGNORE_INDEX).flatten()
        cols = self._answer_columns[self._answer_columns < ids.shape[1]].to(ids.device)
        mask = torch.zeros_like(ids, dtype=torch.bool)
        mask[:, cols] = True
        return mask

    def _batch(self, cfg: Any, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        b = alg.make_batch(cfg, n, rng)
        return self._finish(b["input_ids"], b["attention_mask"], b["labels"] != IGNORE_INDEX)

    def make_split(self, split: str, n: int | None = None, seq_len: int | None = None) -> dict[str, torch.Tensor]:
        _check_split(split)
        n = self.default_eval_size if n is None else n
        return self._batch(self._cfg(seq_len), n, np.random.default_rng([self.config.seed, _SPLIT_CODE[split]]))

    def train_batches(self, batch_size: int, seq_len: int | None = None, seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        _check_pos_int("batch_size", batch_size)
        cfg = self._cfg(seq_len)
        rng = np.random.default_rng([self.config.seed, 1000, seed])
        while True:
            yield self._batch(cfg, batch_size, rng)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "config": self.config.to_dict()}


class TextTask(Task):
    """Language modelling on real text, documents packed into blocks of ``seq_len``.

    ``source`` and the loading options go to :func:`~pulse.data.text.load_text_dataset`.
    Eval documents come from ``eval_source`` / ``eval_split`` if given, else a seeded
    ``eval_fraction`` of the documents (at least one) is held out. ``tokenizer``: an
    instance, a directory saved with ``save``, or ``None`` to train one on the training
    documents (``tokenizer_type`` ``"byte_bpe"`` with ``vocab_size``, or ``"word"``).
    ``strict=True`` refuses characters outside the tokenizer's alphabet and, for a word
    tokenizer, unknown words. Training blocks drop the ragged tail; eval blocks pad it.
    """

    name = "text"

    def __init__(
        self,
        source: str | os.PathLike | None = None,
        *,
        texts: list[str] | None = None,
        tokenizer: Any = None,
        tokenizer_type: str = "byte_bpe",
        vocab_size: int = 1024,
        seq_len: int = 128,
        eval_fraction: float = 0.05,
        eval_source: str | os.PathLike | None = None,
        eval_split: str | None = None,
        limit: int | None = None,
        text_field: str = "text",
        split: str = "train",
        seed: int = 0,
        strict: bool = False,
        train_on: str = "all",
        **load_kwargs: Any,
    ) -> None:
        if (source is None) == (texts is None):
            raise ValueError("pass exactly one of source (a path or dataset name) or texts (a list of strings)")
        _check_pos_int("seq_len", seq_len)
        self.seq_len = seq_len
        self.seed = seed
        self.train_on = self._check_train_on(train_on)
        load = partial(load_text_dataset, text_field=text_field, limit=limit, **load_kwargs)
        docs = list(texts) if texts is not None else load(source, split=split)
        if not docs:
            raise ValueError("texts is empty")
        if eval_source is not None or eval_split is not None:
            eval_docs = load(eval_source if eval_source is not None else source,
                             split=eval_split if eval_split is not None else split)
            train_docs = docs
        else:
            if not 0.0 < eval_fraction < 1.0:
                raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction!r}")
            if len(docs) < 2:
                raise ValueError("need at least 2 documents to hold out an eval set (or pass eval_source/eval_split)")
            order = list(range(len(docs)))
            random.Random(f"text-split:{seed}").shuffle(order)
            n_eval = min(len(docs) - 1, max(1, round(eval_fraction * len(docs))))
            eval_idx = set(order[:n_eval])
            train_docs = [d for i, d in enumerate(docs) if i not in eval_idx]
            eval_docs = [d for i, d in enumerate(docs) if i in eval_idx]

        if tokenizer is None:
            if tokenizer_type == "byte_bpe":
                tokenizer = ByteBPETokenizer.train(train_docs, vocab_size=vocab_size)
            elif tokenizer_type == "word":
                tokenizer = WordTokenizer.from_corpus(train_docs)
            else:
                raise ValueError(f"tokenizer_type must be 'byte_bpe' or 'word', got {tokenizer_type!r}")
        elif isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        if strict:
            check_characters(train_docs + eval_docs, tokenizer)
        self._ids = {
            "train": tokenize_texts(tokenizer, train_docs, strict=strict),
            "eval": tokenize_texts(tokenizer, eval_docs, strict=strict),
        }
        self.num_documents = {"train": len(train_docs), "eval": len(eval_docs)}
        self._cache: dict[tuple[str, int], dict[str, torch.Tensor]] = {}

    def _blocks(self, split: str, seq_len: int | None) -> dict[str, torch.Tensor]:
        _check_split(split, ("train", "eval"))
        T = self.seq_len if seq_len is None else seq_len
        _check_pos_int("seq_len", T)
        key = (split, T)
        if key not in self._cache:
            tok = self.tokenizer
            blocks = pack_sequences(self._ids[split], T, tok.eos_token_id, drop_last=(split == "train"),
                                    pad_id=tok.pad_token_id)
            # Padding only ever fills the tail of the last eval block.
            attn = torch.ones_like(blocks, dtype=torch.float32)
            if split == "eval":
                total = sum(len(x) + 1 for x in self._ids[split])
                flat = attn.view(-1)
                flat[total:] = 0.0
            answer_mask = attn.bool()
            answer_mask[:, 0] = False
            self._cache[key] = self._finish(blocks, attn, answer_mask)
        return self._cache[key]

    def make_split(self, split: str, n: int | None = None, seq_len: int | None = None) -> dict[str, torch.Tensor]:
        data = self._blocks(split, seq_len)
        if n is not None:
            _check_pos_int("n", n)
            data = {k: v[:n] for k, v in data.items()}
        return data

    def _answer_mask(self, ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(ids, dtype=torch.bool)
        mask[:, 0] = False  # as make_split: every token but the first of a block
        return mask

    def train_batches(self, batch_size: int, seq_len: int | None = None, seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        return iterate_batches(self._blocks("train", seq_len), batch_size, seed=seed, shuffle=True, epochs=None)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seq_len": self.seq_len, "tokenizer_type": type(self.tokenizer).__name__,
                "num_documents": dict(self.num_documents)}


_REGISTRY: dict[str, Callable[..., Task]] = {
    "story_world": StoryWorldTask,
    "mqar": partial(AlgorithmicTask, "mqar"),
    "selective_copy": partial(AlgorithmicTask, "selective_copy"),
    "induction": partial(AlgorithmicTask, "induction"),
    "text": TextTask,
}


def register_task(name: str, factory: Callable[..., Task], overwrite: bool = False) -> None:
    """Add a task factory under ``name`` (refuses to replace one unless ``overwrite``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"task {name!r} is already registered")
    _REGISTRY[name] = factory


def available_tasks() -> list[str]:
    return sorted(_REGISTRY)


def build_task(name: str, **kwargs: Any) -> Task:
    """Build the task ``name`` (see :func:`available_tasks`); ``kwargs`` go to its class
    (config fields such as ``num_pairs=16`` are accepted directly)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; available: {available_tasks()}")
    return _REGISTRY[name](**kwargs)
