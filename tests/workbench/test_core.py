"""Checkpoint discovery and loading, text encoding: every bad input is a clear WorkbenchError."""

import json
import shutil

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
