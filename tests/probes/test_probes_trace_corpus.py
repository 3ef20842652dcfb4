import json

import duckdb
import pytest
import torch
from safetensors.torch import save_file

from probes.trace_corpus import main


def test_trace_corpus_two_ranks(bank_model, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    bank_model.save_pretrained(ckpt)
    ids = torch.randint(1, 50, (5, 12))
    mask = torch.ones(5, 12)
    mask[2, :3] = 0
    save_file({"input_ids": ids, "attention_mask": mask}, str(tmp_path / "data.safetensors"))
    out = tmp_path / "out"
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(["--checkpoint", str(ckpt), "--data", str(tmp_path / "data.safetensors"), "--out", str(out),
                     "--no-progress"]) == 0
    got = duckdb.sql(f"select shard, example, count(*) as n from read_parquet('{out}/token_loss/*/*.parquet', "
                     f"hive_partitioning=true) group by shard, example order by example").fetchall()
    assert [(int(r), e) for r, e, _ in got] == [(0, 0), (1, 1), (0, 2), (1, 3), (0, 4)]
    assert [n for *_, n in got] == [12, 12, 9, 12, 12]
    n = duckdb.sql(f"select count(*) from read_parquet('{out}/routing/*/*.parquet', hive_partitioning=true)"
                   ).fetchall()[0][0]
    assert n == (5 * 12 - 3) * 2 * 4
    meta = json.loads((out / "_meta" / "shard=1.json").read_text())
    assert meta["examples"] == [1, 3] and meta["world_size"] == 2
    assert (out / "importance" / "shard=0").exists() and not (out / "importance" / "shard=1").exists()


def test_trace_corpus_text_with_tokenizer(plain_model, tmp_path, monkeypatch):
    from pulse.data import WordTokenizer

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ckpt = tmp_path / "ckpt"
    plain_model.save_pretrained(ckpt)
    words = "the cat sat on a mat and dog ran".split()
    tok = WordTokenizer.from_vocabulary(words)
    assert tok.vocab_size <= 50
    tok.save(ckpt)
    (tmp_path / "data.txt").write_text("the cat sat on the mat\n\nthe dog ran\na cat ran\n")
    out = tmp_path / "out"
    assert main(["--checkpoint", str(ckpt), "--data", str(tmp_path / "data.txt"), "--out", str(out),
                 "--limit", "2", "--names", "blocks.0.*", "--no-progress"]) == 0
    rows = duckdb.sql(f"select example, count(*) from read_parquet('{out}/token_loss/*/*.parquet') "
                      f"group by example order by example").fetchall()
    assert rows == [(0, 6), (1, 3)]
    assert not (out / "routing").exists() and (out / "fusion_gate").exists()


def _story_checkpoint(tmp_path, **task_kwargs):
    """A tiny story-world model saved with its tokenizer and the trainer's task.json."""
    from probe_models import BANK, make_model
    from pulse.data import build_task
    from pulse.data.task_record import TASK_FILE, task_record_json

    task = build_task("story_world", **task_kwargs)
    ckpt = tmp_path / "story"
    make_model(vocab_size=task.vocab_size, **BANK).save_pretrained(ckpt)
    task.tokenizer.save(ckpt)
    (ckpt / TASK_FILE).write_text(task_record_json("story_world", task_kwargs, task))
    return ckpt, task


def test_trace_corpus_scores_the_checkpoints_labels(tmp_path, monkeypatch):
    """--data story_world is the checkpoint's own task (its settings) and token_loss is the
    answer-token loss: finite exactly at the answers of the task's eval stories."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    kwargs = {"train_on": "answers", "p_object_question": 0.0, "questions_per_story": 3}
    ckpt, task = _story_checkpoint(tmp_path, **kwargs)
    out = tmp_path / "out"
    assert main(["--checkpoint", str(ckpt), "--data", "story_world", "--out", str(out), "--limit", "4",
                 "--names", "blocks.0.*", "--no-progress"]) == 0
    got = duckdb.sql(f"select example, pos from read_parquet('{out}/token_loss/*/*.parquet') "
                     f"where loss is not null and not isnan(loss) order by example, pos").fetchall()
    want = [(i, p) for i, s in enumerate(task.stories("eval", 4)) for p in s.answer_positions]
    assert got == want and len(want) == 4 * 3
    assert json.loads((out / "_meta" / "shard=0.json").read_text())["loss"] == "answer-token loss"
    # a file traced under the same checkpoint is scored on its answers too
    (tmp_path / "d.txt").write_text("mary went to the kitchen . where is mary ? kitchen . <eos>\n")
    assert main(["--checkpoint", str(ckpt), "--data", str(tmp_path / "d.txt"), "--out", str(tmp_path / "o2"),
                 "--names", "blocks.0.*", "--no-progress"]) == 0
    got = duckdb.sql(f"select pos from read_parquet('{tmp_path}/o2/token_loss/*/*.parquet') "
                     f"where loss is not null and not isnan(loss)").fetchall()
    assert got == [(10,)]


def test_trace_corpus_refuses_a_task_it_cannot_use(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ckpt, _ = _story_checkpoint(tmp_path, train_on="answers")
    args = ["--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--no-progress", "--limit", "2"]
    with pytest.raises(SystemExit, match="trained on task 'story_world'.*not 'mqar'"):
        main(args + ["--data", "mqar"])
    (ckpt / "task.json").write_text(json.dumps({"name": "story_world", "config": {}}))  # not the trainer's format
    with pytest.raises(SystemExit, match="no 'kwargs'"):
        main(args + ["--data", "story_world"])
