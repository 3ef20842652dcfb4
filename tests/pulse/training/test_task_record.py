"""The trainer's task.json writer and the one reader agree, for every kind of task."""

import json

import pytest

from pulse.data import StoryWorldTask, TaskRecordError, load_task, read_task_record
from pulse.evaluate import evaluate_checkpoint
from pulse.train import train
from pulse.training.config import load_run_config
from training_factories import tiny_run


def test_trainer_writes_what_load_task_rebuilds(tmp_path):
    story = {"name": "story_world", "eval_size": 8, "p_object_question": 0.25, "train_on": "answers",
             "characters_per_story": 2}
    data = tiny_run(train={"steps": 2, "prune_at": [], "allocate_at": [], "save_every": 0})
    data["task"] = story
    run = load_run_config(None, data=data)
    train(run, tmp_path / "run", progress=False)
    task, record = load_task(tmp_path / "run")
    assert isinstance(task, StoryWorldTask)
    # the rebuilt task is the trained one, not the default story world
    assert task.config.p_object_question == 0.25 and task.config.characters_per_story == 2
    assert task.train_on == "answers"
    assert record["name"] == "story_world" and record["describe"]["config"]["p_object_question"] == 0.25
    assert evaluate_checkpoint(tmp_path / "run", n=8, device="cpu")["task"] == "story_world"


@pytest.mark.parametrize("text, message", [
    (None, "no task.json"),
    ("{not json", "task.json"),
    ("[1, 2]", "task.json"),
    ('{"kwargs": {}}', "'name'"),
    ('{"name": "story_world", "kwargs": [1]}', "'kwargs' must be an object"),
    ('{"name": "no_such_task", "kwargs": {}}', "cannot rebuild task 'no_such_task'"),
    ('{"name": "story_world", "kwargs": {"num_wizards": 3}}', "cannot rebuild task 'story_world'"),
])
def test_bad_task_records_are_refused_by_name(tmp_path, text, message):
    if text is not None:
        (tmp_path / "task.json").write_text(text)
    with pytest.raises(TaskRecordError, match=message.replace("(", r"\(")):
        load_task(tmp_path)


def test_read_task_record_returns_the_object(tmp_path):
    (tmp_path / "task.json").write_text(json.dumps({"name": "mqar", "kwargs": {"num_pairs": 2}}))
    assert read_task_record(tmp_path)["kwargs"] == {"num_pairs": 2}
