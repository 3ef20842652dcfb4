"""Checkpoint discovery and loading, text encoding: every bad input is a clear WorkbenchError."""

import json
import shutil

import numpy as np
import pytest

from workbench import core
from workbench.core import WorkbenchError


def test_discovery_lists_folders_default_first(checkpoint_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(core.CHECKPOINT_DIR_ENV, str(checkpoint_dir))
    assert list(core.discover_checkpoints()) == ["tiny-a", "tiny-b"]
    for name in ("zzz", core.DEFAULT_CHECKPOINT_NAME):
        shutil.copytree(checkpoint_dir / "tiny-a", tmp_path / name)
    (tmp_path / "not-a-checkpoint").mkdir()
    assert list(core.discover_checkpoints(tmp_path)) == [core.DEFAULT_CHECKPOINT_NAME, "zzz"]
    assert core.discover_checkpoints(tmp_path / "missing") == {}


def test_folder_key_changes_with_the_weights(checkpoint_dir, tmp_path):
    d = shutil.copytree(checkpoint_dir / "tiny-a", tmp_path / "m")
    k1 = core.folder_key(d)
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes() + b"")
    import os
    os.utime(d / "model.safetensors", ns=(1, 1))
    assert core.folder_key(d) != k1


@pytest.mark.parametrize("breakage, message", [
    ("missing", "does not exist"),
    ("file", "is a file"),
    ("no_config", "no config.json"),
    ("pickle_only", "safetensors only"),
    ("bad_json", "Could not load"),
    ("foreign_type", "Could not load"),
    ("bad_weights", "Could not load"),
    ("no_tokenizer", "no tokenizer.json"),
    ("bad_tokenizer", "tokenizer"),
])
def test_broken_or_foreign_folders(checkpoint_dir, tmp_path, breakage, message):
    d = shutil.copytree(checkpoint_dir / "tiny-a", tmp_path / "m")
    if breakage == "missing":
        d = tmp_path / "nope"
    elif breakage == "file":
        d = d / "config.json"
    elif breakage == "no_config":
        (d / "config.json").unlink()
    elif breakage == "pickle_only":
        (d / "model.safetensors").rename(d / "pytorch_model.bin")
    elif breakage == "bad_json":
        (d / "config.json").write_text("{not json")
    elif breakage == "foreign_type":
        (d / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    elif breakage == "bad_weights":
        (d / "model.safetensors").write_bytes(b"garbage" * 10)
    elif breakage == "no_tokenizer":
        (d / "tokenizer.json").unlink()
    elif breakage == "bad_tokenizer":
        (d / "tokenizer.json").write_text("[]")
    with pytest.raises(WorkbenchError, match=message):
        core.load_checkpoint(d)
    with pytest.raises(WorkbenchError, match="No checkpoint"):
        core.load_checkpoint("  ")


def test_examples_are_story_world_stories_with_roles(checkpoint_dir):
    ckpt = core.load_checkpoint(checkpoint_dir / "tiny-a")
    exs = core.examples(ckpt, n=3)
    assert len(exs) == 3 and all(e.text.endswith("<eos>") for e in exs)
    assert all(len(e.categories) == len(e.text.split()) for e in exs)
    assert ckpt.tokenizer.unk_token_id not in ckpt.tokenizer.encode(exs[0].text)


def test_encode_errors_and_warnings(checkpoint_dir):
    tok = core.load_checkpoint(checkpoint_dir / "tiny-a").tokenizer
    for bad in ("", "   \n", None):
        with pytest.raises(WorkbenchError, match="empty|must be text"):
            core.encode_text(tok, bad)
    with pytest.raises(WorkbenchError, match="at most 10"):
        core.encode_text(tok, "mary went to the kitchen . " * 3, max_tokens=10)
    with pytest.raises(WorkbenchError, match="characters"):
        core.encode_text(tok, "x" * (core.MAX_CHARS + 1))
    with pytest.raises(WorkbenchError, match="None of the words"):
        core.encode_text(tok, "zebra quantum")
    enc = core.encode_text(tok, "mary went to the zebra . ☃")
    assert enc.ids[4] == tok.unk_token_id
    assert any("'zebra'" in w for w in enc.warnings) and any("☃" in w for w in enc.warnings)
    assert core.encode_text(tok, "mary went to the kitchen . <eos>").warnings == []


def test_trace_and_generate(checkpoint_dir):
    ckpt = core.load_checkpoint(checkpoint_dir / "tiny-a")
    run, _ = core.trace_text(ckpt, "mary went to the kitchen . where is mary ?")
    assert run.T == 10 and run.categories[0] == "character" and run.categories[4] == "place"
    assert run.trace["blocks.0.states.hook_routing"].shape[:2] == (1, 10)
    text = core.generate_text(ckpt, "mary went to", max_new_tokens=5)
    assert text.startswith("mary went to") and len(text.split()) <= 8
    with pytest.raises(WorkbenchError):
        core.generate_text(ckpt, "", max_new_tokens=5)
    assert core.window_bounds(100, 95, 20) == (80, 100) and core.window_bounds(10, 0, 50) == (0, 10)


# ------------------------------------------------------------------ the checkpoint's task
def test_examples_come_from_the_trained_task_distribution(tmp_path, checkpoint_factory):
    """A checkpoint trained with non-default story settings gets examples with those settings
    (its held-out test split), not stories of the default config."""
    from pulse.data import StoryWorldConfig, build_task

    kwargs = {"train_on": "answers", "p_object_question": 0.0, "questions_per_story": 3}
    d = checkpoint_factory(tmp_path / "characters", task_kwargs=kwargs)
    ckpt = core.load_checkpoint(d)
    assert ckpt.task_problem == "" and ckpt.task.config.p_object_question == 0.0
    assert ckpt.task_record["kwargs"] == kwargs and ckpt.loss_name == "answer-token loss"
    exs = core.examples(ckpt, n=8)
    want = build_task("story_world", **kwargs).stories("test", 8)
    assert [e.text for e in exs] == [s.text for s in want]
    assert [e.categories for e in exs] == [list(s.roles) for s in want]
    object_questions = 0
    for e in exs:  # three questions per story, about characters ("where is mary ?"), not objects
        words = e.text.split()
        qs = [i for i, w in enumerate(words) if w == "?"]
        assert len(qs) == 3
        object_questions += sum(words[i - 2] == "the" for i in qs)
    assert object_questions <= 1  # the default config (p_object_question 0.5) asks ~40% about objects
    default = build_task("story_world", train_on="answers").stories("test", 8)
    assert sum(w == "?" for s in default for w in s.tokens) == 16 and [s.text for s in default] != [e.text for e in exs]
    assert StoryWorldConfig().p_object_question == 0.5 and StoryWorldConfig().questions_per_story == 2


@pytest.mark.parametrize("record, reason", [
    (None, "no task.json"),
    ({"name": "story_world", "vocab_size": 40, "train_on": "all", "config": {}}, "no 'kwargs'"),
    ({"name": "no_such_task", "kwargs": {}}, "unknown task"),
    ("[1, 2]", "object"),
])
def test_a_task_that_cannot_be_rebuilt_is_reported_not_replaced(checkpoint_dir, tmp_path, record, reason):
    d = shutil.copytree(checkpoint_dir / "tiny-a", tmp_path / "m")
    if record is None:
        (d / "task.json").unlink()
    else:
        (d / "task.json").write_text(record if isinstance(record, str) else json.dumps(record))
    ckpt = core.load_checkpoint(d)
    assert ckpt.task is None and reason in ckpt.task_problem and "all-token loss" in ckpt.task_problem
    assert core.examples(ckpt) == []  # no stories from a default config
    run, _ = core.trace_text(ckpt, "mary went to the kitchen . where is mary ? kitchen .")
    assert run.loss_name == "all-token loss" and run.n_loss_tokens() == run.T - 1


def test_a_tokenizer_that_does_not_match_the_task_is_reported(checkpoint_dir, tmp_path):
    from pulse.data import WordTokenizer

    d = shutil.copytree(checkpoint_dir / "tiny-a", tmp_path / "m")
    WordTokenizer.from_vocabulary(["mary", "went", "to", "the", "kitchen", "."]).save(d)
    ckpt = core.load_checkpoint(d)
    assert ckpt.task is None and "tokenizer.json does not match" in ckpt.task_problem


def test_trace_loss_is_on_the_answer_tokens_only(checkpoint_dir):
    """The run's loss is the answer-token loss: equal to a hand computation at the tokens after
    each '?', and not the all-token mean."""
    import torch

    ckpt = core.load_checkpoint(checkpoint_dir / "tiny-a")
    ex = core.examples(ckpt, n=1)[0]
    run, _ = core.trace_text(ckpt, ex.text, ex.categories)
    words = ex.text.split()
    answers = [i + 1 for i, w in enumerate(words) if w == "?"]
    assert run.n_loss_tokens() == len(answers) == 2 and run.loss_label() == "answer-token loss, n=2"
    assert np.isfinite(run.loss()).nonzero()[0].tolist() == answers
    with torch.no_grad():
        lp = ckpt.model(run.input_ids())["logits"][0].log_softmax(-1)
    hand = -np.mean([float(lp[t - 1, run.ids[t]]) for t in answers])
    everything = -np.mean([float(lp[t - 1, run.ids[t]]) for t in range(1, run.T)])
    assert run.mean_loss() == pytest.approx(hand, rel=1e-5)
    assert abs(run.mean_loss() - everything) > 1e-3
    assert run.trace.metadata["loss"] == "answer-token loss"
    free, _ = core.trace_text(ckpt, "mary went to the kitchen .")  # no question: no answer token, no loss
    assert free.n_loss_tokens() == 0 and np.isnan(free.mean_loss()) and "no answer tokens" in free.no_loss_reason()
    assert core.fmt_loss(free.mean_loss()) == "n/a"
