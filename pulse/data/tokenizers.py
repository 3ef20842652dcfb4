"""Tokenizers: a word-level tokenizer and a byte-level BPE wrapper, saved as JSON.

Both share the special tokens ``<pad>``=0, ``<unk>``=1, ``<bos>``=2, ``<eos>``=3 and expose
``vocab_size``, ``pad_token_id``, ``unk_token_id``, ``bos_token_id``, ``eos_token_id``,
``encode(text, add_bos=False, add_eos=False) -> list[int]``, ``decode(ids) -> str``,
``save(directory)`` and ``load(directory)``.

Directory layout: ``<dir>/tokenizer.json`` is always this module's file, a JSON object with
a ``"type"`` field (``"word"`` or ``"byte_bpe"``) and ``"format_version"``. A word tokenizer
stores its vocabulary there; a byte-level BPE tokenizer stores the Hugging Face
``tokenizers`` file next to it as ``<dir>/bpe.json`` (named by the ``"hf_file"`` field).
All files are written atomically (temporary file, then ``os.replace``).
:func:`load_tokenizer` dispatches on ``"type"`` and refuses unknown or malformed files with
a ``ValueError`` naming the file and the problem.

``tokenizers`` (Hugging Face) is imported lazily, only by :class:`ByteBPETokenizer`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = [
    "SPECIAL_TOKENS",
    "TOKENIZER_FILE",
    "WordTokenizer",
    "ByteBPETokenizer",
    "load_tokenizer",
]

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<unk>", "<bos>", "<eos>")
TOKENIZER_FILE = "tokenizer.json"
BPE_FILE = "bpe.json"
FORMAT_VERSION = 1


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _tokenizer_path(directory: str | os.PathLike) -> Path:
    p = Path(directory)
    return p if p.name == TOKENIZER_FILE and not p.is_dir() else p / TOKENIZER_FILE


def _read_meta(directory: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    path = _tokenizer_path(directory)
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file at {path}")
    raw = path.read_text(encoding="utf-8")
    if not raw.strip():
        raise ValueError(f"malformed tokenizer file {path}: file is empty")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"malformed tokenizer file {path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"malformed tokenizer file {path}: expected a JSON object, got {type(meta).__name__}")
    if "type" not in meta:
        raise ValueError(f"malformed tokenizer file {path}: missing the 'type' field")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"malformed tokenizer file {path}: unsupported format_version {version!r} "
            f"(this code reads {FORMAT_VERSION})"
        )
    return path, meta


class _SpecialIds:
    pad_token_id = 0
    unk_token_id = 1
    bos_token_id = 2
    eos_token_id = 3
    special_tokens = SPECIAL_TOKENS

    def _wrap(self, ids: list[int], add_bos: bool, add_eos: bool) -> list[int]:
        if add_bos:
            ids = [self.bos_token_id] + ids
        if add_eos:
            ids = ids + [self.eos_token_id]
        return ids


class WordTokenizer(_SpecialIds):
    """Word-level tokenizer: tokens are the whitespace-separated words of the text.

    Ids 0-3 are ``<pad>, <unk>, <bos>, <eos>``; the vocabulary words follow in the given
    order. A special token's string in the text (e.g. ``<eos>``) encodes to its id.

    :meth:`normalize` is the text normalisation the vocabulary was made with, and is applied
    before lookup: with ``lowercase=True`` text is lowercased; every character of
    ``split_punctuation`` (e.g. ``".?"``) becomes a word of its own ("kitchen." -> "kitchen .").
    Both are saved, so a loaded tokenizer reads text as the one that was trained. Files written
    before ``split_punctuation`` was saved load with ``normalization_declared = False`` (and no
    splitting): the caller may know the normalisation from elsewhere (the task that made the
    text). ``decode`` joins words with single spaces, so ``decode(encode(t)) == " ".join(t.split())``
    for in-vocabulary, normalised text.
    """

    type_name = "word"

    def __init__(self, vocab: Sequence[str], lowercase: bool = False, split_punctuation: str = "") -> None:
        words = list(SPECIAL_TOKENS) + [w for w in vocab if w not in SPECIAL_TOKENS]
        for i, w in enumerate(words):
            if not isinstance(w, str) or not w or any(ch.isspace() for ch in w):
                raise ValueError(f"vocab entry {i} must be a non-empty string without whitespace, got {w!r}")
        dups = sorted(w for w, c in Counter(words).items() if c > 1)
        if dups:
            raise ValueError(f"vocab has duplicate words: {dups[:10]}")
        if not isinstance(split_punctuation, str) or any(
                ch.isspace() or ch.isalnum() or ch in "".join(SPECIAL_TOKENS) for ch in split_punctuation):
            raise ValueError("split_punctuation must be a string of punctuation characters (not in the special "
                             f"tokens {list(SPECIAL_TOKENS)}), got {split_punctuation!r}")
        split = "".join(dict.fromkeys(split_punctuation))
        unreachable = [w for w in words[len(SPECIAL_TOKENS):] if len(w) > 1 and any(ch in split for ch in w)]
        if unreachable:
            raise ValueError(f"vocab words {unreachable[:10]} contain characters of split_punctuation "
                             f"{split!r}: they could never be read")
        self.lowercase = bool(lowercase)
        self.split_punctuation = split
        self.normalization_declared = True  # False only for files that predate split_punctuation
        self._id_to_token: list[str] = words
        self._token_to_id: dict[str, int] = {w: i for i, w in enumerate(words)}

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_vocabulary(cls, words: Sequence[str], lowercase: bool = False,
                        split_punctuation: str = "") -> "WordTokenizer":
        """From a fixed word list (order kept; specials are prepended, duplicates refused)."""
        return cls(words, lowercase=lowercase, split_punctuation=split_punctuation)

    @classmethod
    def from_corpus(
        cls,
        texts: Iterable[str],
        min_freq: int = 1,
        max_size: int | None = None,
        lowercase: bool = False,
        split_punctuation: str = "",
    ) -> "WordTokenizer":
        """Vocabulary = words with count >= ``min_freq``, most frequent first (ties
        alphabetical), at most ``max_size`` words besides the specials; the texts are
        normalised as :meth:`normalize` will normalise text to encode."""
        norm = cls([], lowercase=lowercase, split_punctuation=split_punctuation)
        counts: Counter[str] = Counter()
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"texts must be strings, got {type(t).__name__}")
            counts.update(norm.normalize(t).split())
        words = sorted((w for w, c in counts.items() if c >= min_freq and w not in SPECIAL_TOKENS),
                       key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[:max_size]
        return cls(words, lowercase=lowercase, split_punctuation=split_punctuation)

    # ---- properties ---------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    @property
    def vocab(self) -> list[str]:
        """All tokens, index = id (specials first)."""
        return list(self._id_to_token)

    @property
    def alphabet(self) -> frozenset[str]:
        """Characters that can occur in encodable text (vocabulary characters + whitespace)."""
        chars = {ch for w in self._id_to_token[len(SPECIAL_TOKENS):] for ch in w}
        if self.lowercase:
            chars |= {ch.upper() for ch in chars if ch.upper().lower() == ch}
        return frozenset(chars | {" ", "\n", "\t", "\r"})

    def token_to_id(self, token: str) -> int | None:
        return self._token_to_id.get(token)

    def id_to_token(self, idx: int) -> str:
        return self._id_to_token[idx]

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def normalization(self) -> str:
        """What :meth:`normalize` does, in words ("" when it changes nothing)."""
        parts = (["lower-cased"] if self.lowercase else []) + (
            [f"{' '.join(self.split_punctuation)} split off as words"] if self.split_punctuation else [])
        return "; ".join(parts)

    # ---- encode / decode ----------------------------------------------------------
    def normalize(self, text: str) -> str:
        """``text`` as the vocabulary was made: lower-cased when ``lowercase``, each
        ``split_punctuation`` character made a word of its own; words joined by single spaces."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if self.lowercase:
            text = text.lower()
        if self.split_punctuation:
            text = "".join(f" {ch} " if ch in self.split_punctuation else ch for ch in text)
        return " ".join(text.split())

    def tokenize(self, text: str) -> list[str]:
        return self.normalize(text).split()

    def encode(self, text: str, strict: bool = False, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Word ids of ``text``. Unknown words map to ``<unk>``, or with ``strict=True``
        raise ``ValueError`` naming them."""
        words = self.tokenize(text)
        get = self._token_to_id.get
        ids = [get(w, -1) for w in words]
        if strict and -1 in ids:
            unknown = sorted({w for w, i in zip(words, ids) if i == -1})
            shown = ", ".join(repr(w) for w in unknown[:20])
            more = f" (and {len(unknown) - 20} more)" if len(unknown) > 20 else ""
            raise ValueError(f"text contains {len(unknown)} word(s) not in the vocabulary: {shown}{more}")
        ids = [self.unk_token_id if i == -1 else i for i in ids]
        return self._wrap(ids, add_bos, add_eos)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} out of range [0, {self.vocab_size})")
            if skip_special_tokens and i < len(SPECIAL_TOKENS):
                continue
            out.append(self._id_to_token[i])
        return " ".join(out)

    # ---- persistence --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "format_version": FORMAT_VERSION,
            "special_tokens": list(SPECIAL_TOKENS),
            "lowercase": self.lowercase,
            "split_punctuation": self.split_punctuation,
            "vocab": self._id_to_token,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``<directory>/tokenizer.json`` atomically; returns its path."""
        path = Path(directory) / TOKENIZER_FILE
        _atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))
        return path

    @classmethod
    def _from_meta(cls, path: Path, meta: dict[str, Any]) -> "WordTokenizer":
        vocab = meta.get("vocab")
        if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
            raise ValueError(f"malformed tokenizer file {path}: 'vocab' must be a list of strings")
        if vocab[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS):
            raise ValueError(f"malformed tokenizer file {path}: 'vocab' must start with {list(SPECIAL_TOKENS)}")
        lowercase = meta.get("lowercase", False)
        if not isinstance(lowercase, bool):
            raise ValueError(f"malformed tokenizer file {path}: 'lowercase' must be true or false")
        split = meta.get("split_punctuation", "")
        if not isinstance(split, str):
            raise ValueError(f"malformed tokenizer file {path}: 'split_punctuation' must be a string")
        try:
            tok = cls(vocab[len(SPECIAL_TOKENS):], lowercase=lowercase, split_punctuation=split)
        except ValueError as e:
            raise ValueError(f"malformed tokenizer file {path}: {e}") from None
        tok.normalization_declared = "split_punctuation" in meta
        return tok

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "WordTokenizer":
        path, meta = _read_meta(directory)
        if meta["type"] != cls.type_name:
            raise ValueError(f"{path} holds a {meta['type']!r} tokenizer, not {cls.type_name!r}")
        return cls._from_meta(path, meta)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordTokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        split = f", split_punctuation={self.split_punctuation!r}" if self.split_punctuation else ""
        return f"WordTokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase}{split})"


class ByteBPETokenizer(_SpecialIds):
    """Byte-level BPE (Hugging Face ``tokenizers``), lossless on any Unicode text:
    ``decode(encode(t)) == t``. Ids 0-3 are the specials; 256 byte symbols follow, then merges.
    """

    type_name = "byte_bpe"

    def __init__(self, hf_tokenizer: Any) -> None:
        self._tok = hf_tokenizer
        for i, s in enumerate(SPECIAL_TOKENS):
            if hf_tokenizer.token_to_id(s) != i:
                raise ValueError(f"BPE tokenizer must map special token {s!r} to id {i}")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> "ByteBPETokenizer":
        """Train on an iterator of texts. ``vocab_size`` counts specials and the 256 bytes."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        minimum = len(SPECIAL_TOKENS) + 256
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < minimum:
            raise ValueError(f"vocab_size must be an int >= {minimum} (specials + 256 bytes), got {vocab_size!r}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator((t for t in texts), trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def alphabet(self) -> None:
        """``None``: every character is encodable."""
        return None

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, idx: int) -> str:
        return self._tok.id_to_token(idx)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._wrap(list(self._tok.encode(text, add_special_tokens=False).ids), add_bos, add_eos)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(e.ids) for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} out of range [0, {self.vocab_size})")
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``bpe.json`` (HF format) then ``tokenizer.json`` (wrapper), both atomically."""
        d = Path(directory)
        _atomic_write_text(d / BPE_FILE, self._tok.to_str())
        meta = {
            "type": self.type_name,
            "format_version": FORMAT_VERSION,
            "special_tokens": list(SPECIAL_TOKENS),
            "hf_file": BPE_FILE,
        }
        path = d / TOKENIZER_FILE
        _atomic_write_text(path, json.dumps(meta, indent=1))
        return path

    @classmethod
    def _from_meta(cls, path: Path, meta: dict[str, Any]) -> "ByteBPETokenizer":
        from tokenizers import Tokenizer

        hf_file = meta.get("hf_file")
        if not isinstance(hf_file, str) or not hf_file or Path(hf_file).name != hf_file:
            raise ValueError(f"malformed tokenizer file {path}: 'hf_file' must be a file name")
        hf_path = path.parent / hf_file
        if not hf_path.is_file():
            raise FileNotFoundError(f"{path} refers to {hf_file!r}, which does not exist at {hf_path}")
        try:
            tok = Tokenizer.from_str(hf_path.read_text(encoding="utf-8"))
        except Exception as e:  # the HF error types are not a stable API
            raise ValueError(f"malformed BPE tokenizer file {hf_path}: {e}") from None
        try:
            return cls(tok)
        except ValueError as e:
            raise ValueError(f"malformed BPE tokenizer file {hf_path}: {e}") from None

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "ByteBPETokenizer":
        path, meta = _read_meta(directory)
        if meta["type"] != cls.type_name:
            raise ValueError(f"{path} holds a {meta['type']!r} tokenizer, not {cls.type_name!r}")
        return cls._from_meta(path, meta)

    def __repr__(self) -> str:
        return f"ByteBPETokenizer(vocab_size={self.vocab_size})"


_TYPES: dict[str, type] = {WordTokenizer.type_name: WordTokenizer, ByteBPETokenizer.type_name: ByteBPETokenizer}


def load_tokenizer(directory: str | os.PathLike) -> WordTokenizer | ByteBPETokenizer:
    """Load the tokenizer saved in ``directory`` (or at a ``tokenizer.json`` path),
    dispatching on its ``"type"`` field."""
    path, meta = _read_meta(directory)
    cls = _TYPES.get(meta["type"]) if isinstance(meta["type"], str) else None
    if cls is None:
        raise ValueError(
            f"malformed tokenizer file {path}: unknown tokenizer type {meta['type']!r}; "
            f"known types: {sorted(_TYPES)}"
        )
    return cls._from_meta(path, meta)  # type: ignore[attr-defined]
