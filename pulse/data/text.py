"""Real text: loading documents, checking their characters, packing them for LM training.

:func:`load_text_dataset` returns a ``list[str]`` of documents from

* a local ``.txt`` file: one document per blank-line-separated paragraph
  (``txt_mode="paragraph"``, the default; lines inside a paragraph keep their newlines)
  or one per non-blank line (``txt_mode="line"``); each document is stripped;
* a local ``.jsonl`` file: one JSON object per non-blank line, the document in field
  ``text_field``;
* a local ``.parquet`` file: column ``text_field``;
* a local directory: its ``.txt``/``.jsonl``/``.parquet`` files (not recursive, hidden files
  and other extensions ignored) in sorted order. If some file names start with the split
  name (``train.jsonl``, ``train-00000.parquet``, ``validation_1.txt``), only those are
  read; otherwise all of them;
* anything else: a Hugging Face dataset, ``datasets.load_dataset(source, split=split,
  data_files=..., cache_dir=..., streaming=...)``, e.g. ``"roneneldan/TinyStories"`` or a
  packaged builder with local files (``load_text_dataset("json", data_files="a.jsonl")``).
  ``use_datasets=True`` routes a local file or directory through ``datasets`` too.

Local files are read directly (``json``, ``pyarrow``), without the ``datasets`` cache;
``split`` applies to Hugging Face datasets and directories only. ``pyarrow`` and
``datasets`` are imported lazily. Errors are ``ValueError`` with the cause: an empty file
or dataset ("... is empty"), a missing field/column (naming it and listing the available
ones), an unsupported extension, characters outside an allowed alphabet
(:func:`check_characters`, naming the characters).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch.utils.data import Dataset

from .batching import IGNORE_INDEX, iterate_batches

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "load_text_dataset",
    "check_characters",
    "tokenize_texts",
    "pack_sequences",
    "PackedLMDataset",
]

SUPPORTED_EXTENSIONS = (".txt", ".jsonl", ".parquet")
_DATASETS_BUILDERS = {".txt": "text", ".jsonl": "json", ".parquet": "parquet"}


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")


def _read_txt(path: Path, mode: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"{path} is empty")
    text = text.replace("\r\n", "\n")
    parts = re.split(r"\n[ \t]*\n", text) if mode == "paragraph" else text.split("\n")
    return [p.strip() for p in parts if p.strip()]


def _read_jsonl(path: Path, text_field: str, limit: int | None) -> list[str]:
    docs: list[str] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno} is not valid JSON ({e})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}: line {lineno} is not a JSON object")
            if text_field not in rec:
                raise ValueError(
                    f"{path}: line {lineno} has no field {text_field!r} (text_field); "
                    f"available fields: {sorted(rec)}"
                )
            val = rec[text_field]
            if not isinstance(val, str):
                raise ValueError(f"{path}: line {lineno} field {text_field!r} is {type(val).__name__}, not a string")
            docs.append(val)
            if limit is not None and len(docs) >= limit:
                break
    if not docs:
        raise ValueError(f"{path} is empty")
    return docs


def _read_parquet(path: Path, text_field: str, limit: int | None) -> list[str]:
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty")
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow.ArrowInvalid and friends
        raise ValueError(f"{path} is not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise ValueError(f"{path} has no column {text_field!r} (text_field); available columns: {names}")
    if pf.metadata.num_rows == 0:
        raise ValueError(f"{path} is empty")
    col = pf.read(columns=[text_field]).column(text_field)
    values = col.slice(0, limit).to_pylist() if limit is not None else col.to_pylist()
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ValueError(f"{path}: row {i} of column {text_field!r} is {type(v).__name__}, not a string")
    return values


def _dir_files(directory: Path, split: str) -> list[Path]:
    files = sorted(
        p for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUPPORTED_EXTENSIONS
    )
    if not files:
        raise ValueError(f"directory {directory} contains no {'/'.join(SUPPORTED_EXTENSIONS)} files")
    pattern = re.compile(rf"^{re.escape(split)}($|[-_.])", re.IGNORECASE)
    chosen = [p for p in files if pattern.match(p.stem)]
    return chosen or files


def _read_local(path: Path, text_field: str, limit: int | None, txt_mode: str) -> list[str]:
    ext = path.suffix.lower()
    if ext == ".txt":
        docs = _read_txt(path, txt_mode)
    elif ext == ".jsonl":
        docs = _read_jsonl(path, text_field, limit)
    elif ext == ".parquet":
        docs = _read_parquet(path, text_field, limit)
    else:
        raise ValueError(
            f"unsupported file extension {path.suffix!r} for {path}; supported: {list(SUPPORTED_EXTENSIONS)}"
        )
    return docs[:limit] if limit is not None else docs


def _load_with_datasets(
    path: str,
    split: str,
    text_field: str,
    limit: int | None,
    data_files: Any = None,
    cache_dir: str | os.PathLike | None = None,
    streaming: bool = False,
    **load_kwargs: Any,
) -> list[str]:
    import datasets

    kwargs: dict[str, Any] = dict(load_kwargs)
    if data_files is not None:
        kwargs["data_files"] = data_files
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    ds = datasets.load_dataset(path, split=split, streaming=streaming, **kwargs)
    label = f"dataset {path!r} (split {split!r})"
    columns = getattr(ds, "column_names", None)
    if streaming:
        it = iter(ds)
        first = next(it, None)
        if first is None:
            raise ValueError(f"{label} is empty")
        if text_field not in first:
            raise ValueError(f"{label} has no column {text_field!r} (text_field); available columns: {sorted(first)}")
        rows: Iterable[Any] = itertools.chain([first], it)
        if limit is not None:
            rows = itertools.islice(rows, limit)
        values = [r[text_field] for r in rows]
    else:
        if columns is not None and text_field not in columns:
            raise ValueError(f"{label} has no column {text_field!r} (text_field); available columns: {columns}")
        if len(ds) == 0:
            raise ValueError(f"{label} is empty")
        if limit is not None and limit < len(ds):
            ds = ds.select(range(limit))
        values = list(ds[text_field])
    if not values:
        raise ValueError(f"{label} is empty")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ValueError(f"{label}: row {i} of column {text_field!r} is {type(v).__name__}, not a string")
    return values


def load_text_dataset(
    source: str | os.PathLike,
    split: str = "train",
    text_field: str = "text",
    limit: int | None = None,
    *,
    txt_mode: str = "paragraph",
    data_files: Any = None,
    cache_dir: str | os.PathLike | None = None,
    streaming: bool = False,
    use_datasets: bool = False,
    allowed_characters: Any = None,
    **load_kwargs: Any,
) -> list[str]:
    """Load documents (see the module docstring for sources and errors).

    ``limit`` keeps the first ``limit`` documents. ``allowed_characters`` (a string/set of
    characters, or a tokenizer with an ``alphabet``) runs :func:`check_characters`.
    Extra keyword arguments go to ``datasets.load_dataset``.
    """
    _check_limit(limit)
    if txt_mode not in ("paragraph", "line"):
        raise ValueError(f"txt_mode must be 'paragraph' or 'line', got {txt_mode!r}")
    if not isinstance(text_field, str) or not text_field:
        raise ValueError(f"text_field must be a non-empty string, got {text_field!r}")
    src = os.fspath(source)
    path = Path(src)
    local = data_files is None and path.exists()

    if local and not use_datasets:
        if path.is_dir():
            docs: list[str] = []
            for f in _dir_files(path, split):
                docs += _read_local(f, text_field, None if limit is None else limit - len(docs), txt_mode)
                if limit is not None and len(docs) >= limit:
                    break
        else:
            docs = _read_local(path, text_field, limit, txt_mode)
    elif local:  # through datasets' packaged builders
        files = _dir_files(path, split) if path.is_dir() else [path]
        exts = {f.suffix.lower() for f in files}
        bad = sorted(exts - set(_DATASETS_BUILDERS))
        if bad:
            raise ValueError(f"unsupported file extension {bad[0]!r} for {path}; supported: {list(SUPPORTED_EXTENSIONS)}")
        if len(exts) > 1:
            raise ValueError(f"{path}: use_datasets needs files of one type, found {sorted(exts)}")
        for f in files:
            if f.stat().st_size == 0:
                raise ValueError(f"{f} is empty")
        builder = _DATASETS_BUILDERS[exts.pop()]
        if builder == "text":
            load_kwargs.setdefault("sample_by", "paragraph" if txt_mode == "paragraph" else "line")
        docs = _load_with_datasets(builder, "train", text_field, limit, [str(f) for f in files],
                                   cache_dir, streaming, **load_kwargs)
        docs = [d.strip() for d in docs if d.strip()] if builder == "text" else docs
    else:
        if data_files is None and path.suffix.lower() in SUPPORTED_EXTENSIONS + (".json", ".csv"):
            raise FileNotFoundError(f"no such file: {src}")
        docs = _load_with_datasets(src, split, text_field, limit, data_files, cache_dir, streaming, **load_kwargs)
    if not docs:
        raise ValueError(f"{src} is empty")
    if allowed_characters is not None:
        check_characters(docs, allowed_characters)
    return docs


def _describe_char(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"{ch!r} (U+{ord(ch):04X}{' ' + name if name else ''})"


def check_characters(texts: Iterable[str] | str, allowed: Any) -> None:
    """Raise ``ValueError`` naming every character of ``texts`` not in ``allowed``.

    ``allowed``: a string or iterable of characters, or an object with an ``alphabet``
    attribute (a tokenizer); an ``alphabet`` of ``None`` allows everything.
    """
    if hasattr(allowed, "alphabet"):
        allowed = allowed.alphabet
        if allowed is None:
            return
    allowed_set = set(allowed)
    if isinstance(texts, str):
        texts = [texts]
    bad: Counter[str] = Counter()
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        extra = set(t) - allowed_set
        for ch in extra:
            bad[ch] += t.count(ch)
            first.setdefault(ch, i)
    if bad:
        chars = sorted(bad, key=lambda c: (-bad[c], c))
        shown = ", ".join(f"{_describe_char(c)} x{bad[c]} (first in document {first[c]})" for c in chars[:20])
        more = f" and {len(chars) - 20} more" if len(chars) > 20 else ""
        raise ValueError(f"text contains {len(chars)} character(s) outside the allowed alphabet: {shown}{more}")


def tokenize_texts(tokenizer: Any, texts: Sequence[str], strict: bool = False) -> list[list[int]]:
    """Encode each document (no specials added). ``strict`` is passed to tokenizers that take it."""
    if hasattr(tokenizer, "encode_batch"):
        return tokenizer.encode_batch(list(texts))
    if strict:
        return [tokenizer.encode(t, strict=True) for t in texts]
    return [tokenizer.encode(t) for t in texts]


def pack_sequences(
    token_id_lists: Iterable[Sequence[int]],
    seq_len: int,
    eos_id: int,
    drop_last: bool = True,
    pad_id: int = 0,
) -> torch.Tensor:
    """Concatenate the documents, each followed by ``eos_id``, and cut the stream into
    blocks of ``seq_len``: returns ``LongTensor[N, seq_len]``. The remainder shorter than
    ``seq_len`` is dropped (``drop_last=True``) or right-padded with ``pad_id``.
    Raises ``ValueError`` if not a single block results."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    stream: list[int] = []
    for ids in token_id_lists:
        stream.extend(int(i) for i in ids)
        stream.append(int(eos_id))
    n_full = len(stream) // seq_len
    rem = len(stream) - n_full * seq_len
    if not drop_last and rem:
        stream.extend([int(pad_id)] * (seq_len - rem))
        n_full += 1
    if n_full == 0:
        raise ValueError(f"only {len(stream)} tokens (with eos), fewer than seq_len={seq_len}: no block to pack")
    return torch.tensor(stream[: n_full * seq_len], dtype=torch.long).view(n_full, seq_len)


class PackedLMDataset(Dataset):
    """Language-model examples from packed blocks ``[N, T]``.

    Item ``i`` is ``{"input_ids": [T], "labels": [T], "attention_mask": [T]}``; ``labels``
    equals ``input_ids`` (the model shifts) with ``-100`` where ``input_ids == pad_id`` when
    ``mask_pad`` (only padded tail blocks contain padding).
    """

    def __init__(self, blocks: torch.Tensor, pad_id: int = 0, mask_pad: bool = True) -> None:
        if not isinstance(blocks, torch.Tensor) or blocks.dim() != 2 or blocks.dtype != torch.long:
            raise ValueError("blocks must be a LongTensor of shape [N, T]")
        self.blocks = blocks
        self.pad_id = pad_id
        pad = blocks == pad_id if mask_pad else torch.zeros_like(blocks, dtype=torch.bool)
        self.labels = blocks.masked_fill(pad, IGNORE_INDEX)
        self.attention_mask = (~pad).float()

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.labels[i], "attention_mask": self.attention_mask[i]}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks, "labels": self.labels, "attention_mask": self.attention_mask}

    def batches(self, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = False,
                epochs: int | None = 1) -> Iterator[dict[str, torch.Tensor]]:
        """Seeded shuffled mini-batches (see :func:`pulse.data.batching.iterate_batches`)."""
        return iterate_batches(self.tensors(), batch_size, seed=seed, shuffle=shuffle, drop_last=drop_last, epochs=epochs)
