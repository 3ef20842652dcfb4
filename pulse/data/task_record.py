"""The task a checkpoint was trained on: one writer (``pulse.train``) and one reader.

A training run writes ``task.json`` beside the weights::

    {"name": "story_world", "kwargs": {...build_task arguments...}, "describe": task.describe()}

``task_record`` makes that object; ``load_task(folder)`` rebuilds the very task from it (and
checks the folder's ``tokenizer.json`` against the task's tokenizer). Everything that needs
a checkpoint's task -- evaluation, corpus tracing, the workbench, the model-card script --
calls ``load_task``; a folder whose task cannot be rebuilt raises :class:`TaskRecordError`
naming the file and the reason, never a silent default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pulse.io import CheckpointError, read_json_object

__all__ = ["TASK_FILE", "TaskRecordError", "task_record", "task_record_json", "read_task_record", "load_task"]

TASK_FILE = "task.json"


class TaskRecordError(CheckpointError):
    """A checkpoint's task.json is missing, malformed, or names a task that cannot be rebuilt."""


def task_record(name: str, kwargs: dict[str, Any], task: Any) -> dict[str, Any]:
    """The object ``pulse.train`` writes to task.json for ``build_task(name, **kwargs)``."""
    return {"name": name, "kwargs": dict(kwargs), "describe": task.describe()}


def task_record_json(name: str, kwargs: dict[str, Any], task: Any) -> str:
    return json.dumps(task_record(name, kwargs, task), indent=2, sort_keys=True, default=str) + "\n"


def read_task_record(folder: str | os.PathLike) -> dict[str, Any]:
    """task.json of ``folder``, checked: an object with a string ``name`` and an object ``kwargs``."""
    path = Path(folder) / TASK_FILE
    try:
        info = read_json_object(path, f"{folder}: no {TASK_FILE} (train with `python -m pulse.train`, which writes it)")
    except CheckpointError as e:
        raise TaskRecordError(str(e)) from None
    if not isinstance(info.get("name"), str):
        raise TaskRecordError(f"{path}: expected an object with a task 'name' (a string) and 'kwargs'")
    if "kwargs" not in info:  # e.g. an old hand-written {name, config}: never rebuild it with defaults
        raise TaskRecordError(f"{path}: no 'kwargs' (the build_task arguments); write it with task_record_json")
    if not isinstance(info["kwargs"], dict):
        raise TaskRecordError(f"{path}: 'kwargs' must be an object, got {type(info['kwargs']).__name__}")
    return info


def load_task(folder: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """``(task, record)``: the task of the checkpoint in ``folder``, rebuilt from its task.json."""
    from pulse.data.tasks import build_task
    from pulse.data.tokenizers import load_tokenizer

    folder = Path(folder)
    info = read_task_record(folder)
    kwargs = dict(info.get("kwargs") or {})
    if info["name"] == "text":
        kwargs["tokenizer"] = str(folder)
    try:
        task = build_task(info["name"], **kwargs)
    except (TypeError, ValueError, FileNotFoundError) as e:
        raise TaskRecordError(f"{folder / TASK_FILE}: cannot rebuild task {info['name']!r}: {e}") from None
    if (folder / "tokenizer.json").is_file():
        saved = load_tokenizer(folder)
        if saved.vocab_size != task.tokenizer.vocab_size or (
                hasattr(saved, "vocab") and hasattr(task.tokenizer, "vocab") and saved.vocab != task.tokenizer.vocab):
            raise TaskRecordError(f"{folder}/tokenizer.json does not match the tokenizer of task {info['name']!r}")
    return task, info
