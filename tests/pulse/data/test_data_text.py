"""Real-text loading (local files and the `datasets` code path), character checks, packing."""

from __future__ import annotations

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # never download, whatever imports datasets first
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from pulse.data.text import PackedLMDataset, check_characters, load_text_dataset, pack_sequences  # noqa: E402
from pulse.data.tokenizers import ByteBPETokenizer, WordTokenizer  # noqa: E402

DOCS = ["Once upon a time there was a cat.", "The cat liked milk.\nIt drank it daily.", "The end."]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)


def write_jsonl(path, docs, field="text"):
    path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return path


def write_parquet(path, docs, field="text"):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({field: docs, "id": list(range(len(docs)))}), path)
    return path


def test_txt_paragraphs_and_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("\n\n".join(DOCS) + "\n  \n\n")
    assert load_text_dataset(p) == DOCS
    assert load_text_dataset(p, txt_mode="line") == [
        "Once upon a time there was a cat.", "The cat liked milk.", "It drank it daily.", "The end."]
    assert load_text_dataset(str(p), limit=2) == DOCS[:2]


def test_jsonl_parquet_and_directory(tmp_path):
    j = write_jsonl(tmp_path / "train.jsonl", DOCS)
    q = write_parquet(tmp_path / "validation-00000.parquet", DOCS[::-1])
    assert load_text_dataset(j) == DOCS
    assert load_text_dataset(q) == DOCS[::-1]
    assert load_text_dataset(q, limit=1) == DOCS[-1:]
    (tmp_path / "README.md").write_text("ignored")
    assert load_text_dataset(tmp_path) == DOCS
    assert load_text_dataset(tmp_path, split="validation") == DOCS[::-1]
    assert load_text_dataset(tmp_path, split="other") == DOCS + DOCS[::-1]  # no match: all files, sorted
    assert load_text_dataset(tmp_path, split="other", limit=4) == (DOCS + DOCS[::-1])[:4]
    write_jsonl(tmp_path / "b.jsonl", DOCS, field="story")
    assert load_text_dataset(tmp_path / "b.jsonl", text_field="story") == DOCS


def test_datasets_code_path(tmp_path):
    """The path used for Hugging Face names (e.g. roneneldan/TinyStories), exercised offline
    with local files through datasets' packaged json/parquet builders."""
    j = write_jsonl(tmp_path / "tiny.jsonl", DOCS)
    q = write_parquet(tmp_path / "tiny.parquet", DOCS)
    cache = tmp_path / "cache"
    assert load_text_dataset("json", data_files=str(j), cache_dir=cache) == DOCS
    assert load_text_dataset("parquet", data_files=str(q), cache_dir=cache, limit=2) == DOCS[:2]
    assert load_text_dataset(j, use_datasets=True, cache_dir=cache) == DOCS
    assert load_text_dataset("json", data_files=str(j), cache_dir=cache, streaming=True, limit=2) == DOCS[:2]
    with pytest.raises(ValueError, match=r"no column 'story'.*\['text', 'id'\]"):
        load_text_dataset("json", data_files=str(j), cache_dir=cache, text_field="story")
    with pytest.raises(ValueError, match=r"no column 'story'.*available columns"):
        load_text_dataset("json", data_files=str(j), cache_dir=cache, text_field="story", streaming=True)


@pytest.mark.parametrize("ext", ["txt", "jsonl", "parquet"])
def test_empty_file(tmp_path, ext):
    p = tmp_path / f"e.{ext}"
    if ext == "txt":
        p.write_text("  \n\n")
    elif ext == "jsonl":
        p.write_text("\n")
    else:
        write_parquet(p, [])
    with pytest.raises(ValueError, match="is empty"):
        load_text_dataset(p)
    (tmp_path / "zero.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        load_text_dataset(tmp_path / "zero.parquet")


def test_missing_column_and_bad_records(tmp_path):
    j = write_jsonl(tmp_path / "a.jsonl", DOCS)
    with pytest.raises(ValueError, match=r"no field 'content'.*\['id', 'text'\]"):
        load_text_dataset(j, text_field="content")
    q = write_parquet(tmp_path / "a.parquet", DOCS)
    with pytest.raises(ValueError, match=r"no column 'content'.*\['text', 'id'\]"):
        load_text_dataset(q, text_field="content")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        load_text_dataset(tmp_path / "bad.jsonl")
    (tmp_path / "num.jsonl").write_text('{"text": 5}\n')
    with pytest.raises(ValueError, match="not a string"):
        load_text_dataset(tmp_path / "num.jsonl")


def test_unknown_extension_and_missing(tmp_path):
    p = tmp_path / "a.csv2"
    p.write_text("text\nhello\n")
    with pytest.raises(ValueError, match=r"unsupported file extension '\.csv2'"):
        load_text_dataset(p)
    with pytest.raises(FileNotFoundError):
        load_text_dataset(tmp_path / "missing.jsonl")
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="contains no"):
        load_text_dataset(tmp_path / "d")
    with pytest.raises(ValueError, match="limit"):
        load_text_dataset(p, limit=0)


def test_check_characters(tmp_path):
    tok = WordTokenizer.from_corpus(["the cat sat"])
    check_characters(["the cat", "sat\ttat"], tok)
    with pytest.raises(ValueError, match=r"2 character\(s\).*'é'.*'!'|2 character\(s\).*'!'.*'é'") as e:
        check_characters(["the cat", "thé cat!", "é"], tok)
    assert "U+00E9" in str(e.value) and "first in document 1" in str(e.value)
    check_characters(["anything ∑ 😀"], ByteBPETokenizer.train(["abc"], vocab_size=262))
    check_characters("abc", "abc")
    p = tmp_path / "a.txt"
    p.write_text("the cat\n\nthé cat")
    with pytest.raises(ValueError, match="'é'"):
        load_text_dataset(p, allowed_characters=tok)


def test_pack_sequences_and_dataset():
    docs = [[5, 6, 7], [8], [9, 10, 11, 12]]
    stream = [5, 6, 7, 3, 8, 3, 9, 10, 11, 12, 3]
    blocks = pack_sequences(docs, 4, eos_id=3)
    assert blocks.dtype == torch.long and blocks.tolist() == [stream[0:4], stream[4:8]]
    padded = pack_sequences(docs, 4, eos_id=3, drop_last=False, pad_id=0)
    assert padded.tolist()[-1] == stream[8:] + [0]
    with pytest.raises(ValueError, match="seq_len"):
        pack_sequences(docs, 0, 3)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        pack_sequences([[1]], 5, 3)
    ds = PackedLMDataset(padded)
    assert len(ds) == 3
    item = ds[2]
    assert item["labels"].tolist() == stream[8:] + [-100]
    assert item["attention_mask"].tolist() == [1, 1, 1, 0]
    big = PackedLMDataset(pack_sequences([list(range(4, 100))], 4, eos_id=3))
    order1 = [b["input_ids"][:, 0].tolist() for b in big.batches(5, seed=1)]
    order2 = [b["input_ids"][:, 0].tolist() for b in big.batches(5, seed=1)]
    order3 = [b["input_ids"][:, 0].tolist() for b in big.batches(5, seed=2)]
    assert order1 == order2 != order3
    flat = sorted(x for b in order1 for x in b)
    assert flat == sorted(big.blocks[:, 0].tolist())  # each block exactly once per epoch
