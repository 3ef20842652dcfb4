"""Task.labels_for labels any token ids the way training did: on make_split's rows it gives
exactly their labels, and on a typed text it marks the answers (story world: the token after
each '?'), never the story tokens of an answers-only task."""

import pytest
import torch

from pulse.data import build_task
from pulse.data.batching import IGNORE_INDEX

CASES = [
    ("story_world", {"train_on": "answers"}),
    ("story_world", {"train_on": "all"}),
    ("story_world", {"train_on": "answers", "p_object_question": 0.5, "questions_per_story": 3}),
    ("mqar", {}),
    ("mqar", {"train_on": "all", "num_pairs": 4, "num_queries": 6}),
    ("selective_copy", {}),
    ("induction", {}),
    ("induction", {"seq_len": 80}),  # right padding
]


@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
@pytest.mark.parametrize("split", ["train", "test"])
def test_labels_for_equals_make_split_labels(name, kwargs, split):
    task = build_task(name, **kwargs)
    b = task.make_split(split, n=64)
    assert b["labels"].ne(IGNORE_INDEX).any()
    got = task.labels_for(b["input_ids"], b["attention_mask"])
    assert got.dtype == torch.long and torch.equal(got, b["labels"])
    assert torch.equal(task.answer_mask_for(b["input_ids"], b["attention_mask"]), b["answer_mask"])
    row = task.labels_for(b["input_ids"][3].tolist(), b["attention_mask"][3])  # one row, as a list
    assert torch.equal(row, b["labels"][3])


def test_text_task_labels_every_real_token(tmp_path):
    docs = ["the cat sat on the mat", "a dog ran far away today", "the bird sang", "one two three four"] * 3
    task = build_task("text", texts=docs, tokenizer_type="word", seq_len=8, eval_fraction=0.25, seed=0)
    for split in ("train", "eval"):
        b = task.make_split(split)
        assert torch.equal(task.labels_for(b["input_ids"], b["attention_mask"]), b["labels"])
    assert task.loss_name == "all-token loss"


def test_story_world_labels_of_a_typed_text():
    task = build_task("story_world", train_on="answers")
    tok = task.tokenizer
    text = "mary went to the kitchen . where is mary ? kitchen . where is john ? garden . <eos>"
    ids = tok.encode(text, strict=True)
    labels = task.labels_for(ids)
    words = text.split()
    kept = [words[i] for i in range(len(ids)) if labels[i] != IGNORE_INDEX]
    assert kept == ["kitchen", "garden"] and labels.shape == (len(ids),)
    assert task.labels_for(tok.encode("mary went to the kitchen .")).eq(IGNORE_INDEX).all()
    assert task.loss_name == "answer-token loss"
    assert build_task("story_world").loss_name == "all-token loss"  # train_on="all" is the default
    # padding is never a label, also right after a '?'
    padded = torch.tensor([ids[:9] + [tok.pad_token_id]])
    assert task.labels_for(padded, torch.tensor([[1.0] * 9 + [0.0]])).eq(IGNORE_INDEX).all()


def test_labels_for_refuses_bad_input():
    task = build_task("mqar")
    with pytest.raises(TypeError, match="integer token ids"):
        task.labels_for(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        task.labels_for(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\[T\] or \[B, T\]"):
        task.labels_for(torch.zeros(1, 2, 3, dtype=torch.long))
