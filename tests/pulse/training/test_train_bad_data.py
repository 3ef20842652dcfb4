"""(e) Bad data through the training entry point (`text` task) gives a clear error."""

import json

import pytest
import yaml

from pulse.train import main


def _run(tmp_path, capsys, task):
    cfg = {"model": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "chunk_size": 4},
           "task": {"name": "text", "tokenizer_type": "word", "seq_len": 8, **task},
           "train": {"steps": 1, "batch_size": 2, "eval_size": 2, "device": "cpu"}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = main(["--config", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    return code, capsys.readouterr().err


def test_empty_file(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("  \n")
    code, err = _run(tmp_path, capsys, {"source": str(tmp_path / "empty.txt")})
    assert code == 2 and "empty" in err and "empty.txt" in err


def test_wrong_column(tmp_path, capsys):
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps({"body": f"doc {i}"}) for i in range(4)))
    code, err = _run(tmp_path, capsys, {"source": str(tmp_path / "docs.jsonl")})
    assert code == 2 and "text" in err and "body" in err


def test_unknown_characters(tmp_path, capsys):
    (tmp_path / "tok").mkdir()
    from pulse.data import WordTokenizer

    WordTokenizer.from_vocabulary(["the", "cat", "sat"]).save(tmp_path / "tok")
    texts = ["the cat sat", "the cat sat the cat", "the caté sat"]
    code, err = _run(tmp_path, capsys, {"texts": texts, "tokenizer": str(tmp_path / "tok"), "strict": True})
    assert code == 2 and "é" in err


def test_missing_file(tmp_path, capsys):
    code, err = _run(tmp_path, capsys, {"source": str(tmp_path / "nope.txt")})
    assert code == 2 and "nope.txt" in err


def test_good_text_trains(tmp_path, capsys):
    (tmp_path / "docs.txt").write_text("\n\n".join(f"the cat sat on mat number {i % 5} today" for i in range(20)))
    code, err = _run(tmp_path, capsys, {"source": str(tmp_path / "docs.txt")})
    assert code == 0, err
    assert (tmp_path / "out" / "tokenizer.json").is_file()
