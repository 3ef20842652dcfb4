"""(a) An interrupted and resumed run reproduces the uninterrupted one exactly."""

import csv
import json

import torch
from safetensors.torch import load_file

from pulse.train import train
from pulse.training.config import load_run_config
from training_factories import tiny_run

LOSS_COLUMNS = ("loss", "lm_loss", "aux_loss", "lr", "grad_norm", "active_states", "eval_loss", "eval_accuracy")


def _rows(path):
    with open(path, newline="") as f:
        return [{k: r[k] for k in ("step", *LOSS_COLUMNS)} for r in csv.DictReader(f)]


def test_resume_matches_uninterrupted_run(tmp_path):
    run = load_run_config(None, data=tiny_run())
    full = train(run, tmp_path / "full", progress=False)
    part = train(run, tmp_path / "resumed", stop_after=3, progress=False)
    assert part["step"] == 3 and not part["finished"]
    assert not (tmp_path / "resumed" / "model.safetensors").exists()  # only the checkpoint so far
    resumed = train(run, tmp_path / "resumed", resume=True, progress=False)
    assert resumed["finished"] and resumed["step"] == 6

    # the same per-step losses (logged every step), bit for bit
    a, b = _rows(tmp_path / "full" / "metrics.csv"), _rows(tmp_path / "resumed" / "metrics.csv")
    assert [r["step"] for r in a] == [str(s) for s in range(1, 7)]
    assert a == b
    # the same final weights, bit for bit, and the same state-bank events (pruned at 4, revived at 5)
    wa = load_file(tmp_path / "full" / "model.safetensors")
    wb = load_file(tmp_path / "resumed" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert full["weights_hash"] == resumed["weights_hash"]
    assert full["state_bank_events"] == resumed["state_bank_events"]
    assert [(e["step"], e["kind"]) for e in full["state_bank_events"]] == [(4, "prune")] * 2 + [(5, "allocate")] * 2
    assert full["eval_history"] == resumed["eval_history"]


def test_checkpoint_is_pickle_free_and_loadable(tmp_path):
    from pulse import load_pretrained

    run = load_run_config(None, data=tiny_run(train={"steps": 3}))
    train(run, tmp_path, progress=False)
    ckpt = tmp_path / "checkpoints" / "step-0000003"
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == ["config.json", "model.safetensors", "optimizer.safetensors", "rng.safetensors", "task.json",
                     "tokenizer.json", "trainer_state.json", "training.json"]
    for p in ckpt.iterdir():  # every file is JSON or safetensors: nothing to unpickle
        if p.suffix == ".json":
            json.loads(p.read_text())
        else:
            assert p.suffix == ".safetensors"
            load_file(p)
    opt = load_file(ckpt / "optimizer.safetensors")
    assert any(k.endswith(".exp_avg_sq") for k in opt)
    assert load_pretrained(ckpt).config.num_states == 4


def test_resume_refuses_a_changed_config(tmp_path):
    import pytest

    from pulse.config import ConfigError

    train(load_run_config(None, data=tiny_run()), tmp_path, stop_after=3, progress=False)
    with pytest.raises(ConfigError, match="train.lr"):
        train(load_run_config(None, data=tiny_run(train={"lr": 0.5})), tmp_path, resume=True, progress=False)
