"""The task registry and batch interface used by training scripts."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from pulse.data import (
    IGNORE_INDEX,
    StoryWorldConfig,
    WordTokenizer,
    answer_accuracy,
    available_tasks,
    build_task,
    register_task,
)

GENERATED = ["story_world", "mqar", "selective_copy", "induction"]


def oracle(batch):
    """Predictions that are right everywhere: position t-1 predicts token t."""
    ids = batch["input_ids"]
    return torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], dim=1)


def check_batch(task, b, n):
    ids, labels, attn, am = b["input_ids"], b["labels"], b["attention_mask"], b["answer_mask"]
    assert ids.shape == labels.shape == attn.shape == am.shape and ids.shape[0] == n
    assert ids.dtype == labels.dtype == torch.long and attn.dtype == torch.float32 and am.dtype == torch.bool
    assert int(ids.max()) < task.vocab_size
    real = attn.bool()
    assert (ids[~real] == task.tokenizer.pad_token_id).all() and (labels[~real] == IGNORE_INDEX).all()
    assert not (am & ~real).any() and not am[:, 0].any() and am.any(1).all()
    scored = labels != IGNORE_INDEX
    assert (labels[scored] == ids[scored]).all()
    if task.train_on == "all":
        assert torch.equal(scored, real)
    else:
        assert torch.equal(scored, am)


def test_registry():
    assert set(GENERATED + ["text"]) <= set(available_tasks())
    with pytest.raises(ValueError, match="unknown task 'nope'.*mqar"):
        build_task("nope")
    with pytest.raises(ValueError, match=r"\['bogus'\].*MQARConfig"):
        build_task("mqar", bogus=1)
    with pytest.raises(ValueError, match="already registered"):
        register_task("mqar", lambda: None)


@pytest.mark.parametrize("name", GENERATED)
def test_generated_tasks(name):
    task = build_task(name)
    ev = task.eval_set(16)
    check_batch(task, ev, 16)
    again = build_task(name).make_split("eval", 16)
    assert all(torch.equal(ev[k], again[k]) for k in ev)
    tr = task.make_split("train", 16)
    w = min(tr["input_ids"].shape[1], ev["input_ids"].shape[1])
    assert not torch.equal(tr["input_ids"][:, :w], ev["input_ids"][:, :w])  # independent splits
    s1 = list(itertools.islice(task.train_batches(8, seed=1), 3))
    s2 = list(itertools.islice(task.train_batches(8, seed=1), 3))
    s3 = next(task.train_batches(8, seed=2))
    for a, b in zip(s1, s2):
        assert all(torch.equal(a[k], b[k]) for k in a)
        check_batch(task, a, 8)
    assert not torch.equal(s1[0]["input_ids"], s1[1]["input_ids"])
    assert not torch.equal(s1[0]["input_ids"], s3["input_ids"])
    # accuracy helper: oracle is perfect, a constant prediction is not
    r = task.evaluate_predictions(oracle(ev), ev)
    assert r["accuracy"] == 1.0 and r["sequence_accuracy"] == 1.0 and r["total"] == int(ev["answer_mask"].sum())
    logits = torch.nn.functional.one_hot(torch.zeros_like(ev["input_ids"]), task.vocab_size).float()
    assert task.evaluate_predictions(logits, ev)["accuracy"] == 0.0
    json.dumps(task.describe())
    # fixed seq_len pads
    T = ev["input_ids"].shape[1] + 7 if name != "story_world" else task.max_len + 3
    padded = task.make_split("eval", 4, seq_len=T)
    assert padded["input_ids"].shape == (4, T)
    check_batch(task, padded, 4)


def test_story_world_task_alignment():
    task = build_task("story_world", num_places=6, questions_per_story=3, seed=7)
    stories = task.stories("eval", 10)
    b = task.make_split("eval", 10)
    for row, s in enumerate(stories):
        n = len(s.tokens)
        assert task.tokenizer.decode(b["input_ids"][row, :n].tolist()) == s.text
        assert b["attention_mask"][row].sum() == n
        assert b["answer_mask"][row].nonzero().flatten().tolist() == s.answer_positions
        assert b["input_ids"][row, n - 1] == task.tokenizer.eos_token_id
    with pytest.raises(ValueError, match="seq_len"):
        task.make_split("eval", 2, seq_len=10)
    with pytest.raises(ValueError, match="split"):
        task.make_split("dev", 2)
    answers_only = build_task("story_world", train_on="answers").eval_set(4)
    assert torch.equal(answers_only["labels"] != IGNORE_INDEX, answers_only["answer_mask"])
    with pytest.raises(ValueError, match="both"):
        build_task("story_world", config=StoryWorldConfig(), seed=1)


def test_mqar_full_lm_option():
    task = build_task("mqar", num_pairs=4, num_queries=4, train_on="all")
    b = task.eval_set(3)
    assert (b["labels"] == b["input_ids"]).all()


def test_answer_accuracy_partial():
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8], [5, 6, 7, 0]]),
             "answer_mask": torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]], dtype=torch.bool)}
    preds = torch.tensor([[0, 7, 8, 0], [6, 0, 0, 0]])  # row 0 right twice, row 1 right once
    r = answer_accuracy(preds, batch)
    assert (r["correct"], r["total"], r["accuracy"], r["sequence_accuracy"]) == (3, 4, 0.75, 0.5)
    with pytest.raises(ValueError, match="predictions"):
        answer_accuracy(torch.zeros(2, 3), batch)


DOCS = [f"story number {i} : the cat sat on the mat and the dog ran ." for i in range(40)]


def test_text_task(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    task = build_task("text", source=str(p), vocab_size=300, seq_len=16, eval_fraction=0.1, seed=0)
    assert task.num_documents == {"train": 36, "eval": 4}
    tr = task.make_split("train")
    check_batch(task, tr, tr["input_ids"].shape[0])
    ev = task.eval_set()
    check_batch(task, ev, ev["input_ids"].shape[0])
    assert task.tokenizer.decode(ev["input_ids"][ev["attention_mask"].bool()].tolist()).count("story number") == 4
    batches = list(itertools.islice(task.train_batches(4, seed=3), 5))
    assert all(b["input_ids"].shape == (4, 16) for b in batches[:-1])
    assert task.make_split("train", seq_len=8)["input_ids"].shape[1] == 8
    # a saved word tokenizer, strict mode
    wt = WordTokenizer.from_corpus(DOCS)
    wt.save(tmp_path / "tok")
    t2 = build_task("text", texts=DOCS, tokenizer=str(tmp_path / "tok"), seq_len=8, strict=True)
    assert t2.vocab_size == wt.vocab_size
    with pytest.raises(ValueError, match="'é'"):
        build_task("text", texts=DOCS + ["thé cat"], tokenizer=wt, seq_len=8, strict=True)
    with pytest.raises(ValueError, match="exactly one"):
        build_task("text")
    with pytest.raises(ValueError, match="split"):
        task.make_split("test")


def test_import_is_light():
    """pulse.data imports no optional heavy dependency at module import time."""
    import subprocess
    import sys

    code = ("import sys, pulse.data; "
            "print([m for m in ('tokenizers', 'datasets', 'pyarrow', 'pandas') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
