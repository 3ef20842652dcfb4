"""Tiny random checkpoint folders for the workbench tests (the shipped ones are not needed)."""

import os
import sys
from pathlib import Path

import pytest
import torch

from workbench_paths import APP, REPO  # noqa: E402
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# tiny models: one thread is much faster than two when the 2 shared cores are busy
torch.set_num_threads(1)


TASK_KWARGS = {"train_on": "answers", "p_object_question": 0.0}  # as the shipped story-world model


def make_checkpoint(folder: Path, seed: int = 0, task_kwargs: dict | None = None, **overrides) -> Path:
    """save_pretrained folder: a tiny PULSE model with every part, its story-world task's
    WordTokenizer, task.json written by the trainer's own writer (``task_record_json``) and
    model_card.md, as the shipped checkpoints have. ``task_kwargs``: ``build_task("story_world",
    ...)`` arguments (default :data:`TASK_KWARGS`)."""
    from pulse import PulseConfig, PulseForCausalLM
    from pulse.data import build_task
    from pulse.data.task_record import TASK_FILE, task_record_json

    task_kwargs = dict(TASK_KWARGS if task_kwargs is None else task_kwargs)
    task = build_task("story_world", **task_kwargs)
    tok = task.tokenizer
    values = dict(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=2, chunk_size=8,
                  conv_kernel_size=3, use_memory=True, memory_capacity=8, memory_top_k=2, use_recurrent_state=True,
                  num_states=4, state_dim=16, state_num_heads=2, eos_token_id=tok.eos_token_id)
    values.update(overrides)
    torch.manual_seed(seed)
    model = PulseForCausalLM(PulseConfig(**values))
    with torch.no_grad():  # spread the importances so pruning and claims have something to rank
        for _, bank in model.state_banks():
            bank.importance_logits.copy_(torch.linspace(-2.0, 2.0, bank.importance_logits.numel()))
    model.save_pretrained(folder)
    tok.save(folder)
    (folder / TASK_FILE).write_text(task_record_json("story_world", task_kwargs, task))
    (folder / "model_card.md").write_text(f"# {folder.name}\n\nA tiny random model for tests.\n")
    return folder


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpts")
    make_checkpoint(root / "tiny-a", seed=0)
    make_checkpoint(root / "tiny-b", seed=1)
    return root


@pytest.fixture
def app_env(checkpoint_dir, monkeypatch):
    monkeypatch.setenv("PULSE_WORKBENCH_CHECKPOINT_DIR", str(checkpoint_dir))
    return checkpoint_dir


@pytest.fixture
def checkpoint_factory():
    """:func:`make_checkpoint`, for tests that need a checkpoint of their own task settings."""
    return make_checkpoint
