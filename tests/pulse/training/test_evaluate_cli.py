"""(d) python -m pulse.evaluate on a tiny saved model."""

import json

import pytest

from pulse.evaluate import main
from pulse.train import train
from pulse.training.config import load_run_config
from training_factories import tiny_run


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(load_run_config(None, data=tiny_run(train={"steps": 2, "save_every": 0})), out, progress=False)
    return out


def test_evaluate_prints_table_and_json(saved, capsys, tmp_path):
    assert main(["--checkpoint", str(saved), "--n", "12", "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "answer accuracy" in out and "mqar / test (12 sequences)" in out
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["n"] == 12 and metrics["split"] == "test" and metrics["task"] == "mqar"
    assert metrics["total"] == 12 * 2 and 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0
    assert json.loads((tmp_path / "m.json").read_text()) == metrics


def test_evaluate_is_held_out_and_deterministic(saved):
    from pulse.data import build_task
    from pulse.evaluate import evaluate_checkpoint
    from pulse.training.data import train_batch

    a = evaluate_checkpoint(saved, n=8, split="test")
    assert a == evaluate_checkpoint(saved, n=8, split="test")
    task = build_task("mqar", num_pairs=2, num_queries=2, num_keys=4, num_values=4)
    test = task.make_split("test", n=8)["input_ids"]
    assert not test.equal(train_batch(task, 0, batch_size=8, seed=3)["input_ids"])


def test_evaluate_errors(saved, tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "weights").mkdir()
    assert main(["--checkpoint", str(tmp_path / "weights")]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["--checkpoint", str(saved), "--split", "dev"]) == 2
    assert "split" in capsys.readouterr().err


def test_evaluate_transformer(tmp_path, capsys):
    data = tiny_run(train={"steps": 1, "save_every": 0, "prune_at": [], "allocate_at": []})
    data["model"] = {"type": "transformer", "hidden_size": 16, "num_layers": 1, "num_heads": 2}
    train(load_run_config(None, data=data), tmp_path, progress=False)
    assert main(["--checkpoint", str(tmp_path), "--n", "4"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model_type"] == "transformer"
