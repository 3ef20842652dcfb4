"""Data layer: a story world with ground truth, algorithmic tasks, tokenizers, real text.

Entry point for training scripts: ``task = build_task(name, **kwargs)``; see
:mod:`pulse.data.tasks` for the batch format (``input_ids``, ``labels`` aligned with the
inputs and shifted by the model, ``attention_mask``, ``answer_mask``).

Only torch, numpy and the standard library are imported here; ``tokenizers``,
``datasets`` and ``pyarrow`` are imported inside the functions that need them.
"""

from .algorithmic import InductionConfig, MQARConfig, SelectiveCopyConfig
from .algorithmic import generate_dataset as generate_algorithmic_dataset
from .algorithmic import make_batch as make_algorithmic_batch
from .batching import IGNORE_INDEX, answer_accuracy, iterate_batches, pad_sequences
from .story_world import (
    Event,
    Question,
    Story,
    StoryWorldConfig,
    generate_dataset,
    generate_story,
    max_story_length,
    story_world_vocabulary,
)
from .tasks import AlgorithmicTask, StoryWorldTask, Task, TextTask, available_tasks, build_task, register_task
from .task_record import TaskRecordError, load_task, read_task_record, task_record
from .text import PackedLMDataset, check_characters, load_text_dataset, pack_sequences, tokenize_texts
from .tokenizers import SPECIAL_TOKENS, ByteBPETokenizer, WordTokenizer, load_tokenizer

__all__ = [
    "IGNORE_INDEX",
    "SPECIAL_TOKENS",
    # story world
    "StoryWorldConfig",
    "Story",
    "Event",
    "Question",
    "generate_story",
    "generate_dataset",
    "story_world_vocabulary",
    "max_story_length",
    # algorithmic
    "MQARConfig",
    "SelectiveCopyConfig",
    "InductionConfig",
    "make_algorithmic_batch",
    "generate_algorithmic_dataset",
    # tokenizers
    "WordTokenizer",
    "ByteBPETokenizer",
    "load_tokenizer",
    # text
    "load_text_dataset",
    "check_characters",
    "tokenize_texts",
    "pack_sequences",
    "PackedLMDataset",
    # batching
    "pad_sequences",
    "iterate_batches",
    "answer_accuracy",
    # tasks
    "Task",
    "StoryWorldTask",
    "AlgorithmicTask",
    "TextTask",
    "build_task",
    "register_task",
    "available_tasks",
    "load_task",
    "read_task_record",
    "task_record",
    "TaskRecordError",
]
