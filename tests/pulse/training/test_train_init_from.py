"""train.init_from: a second stage starts from another run's weights, and refuses another architecture."""

import pytest
import torch
from safetensors.torch import load_file

from pulse.config import ConfigError
from pulse.train import train
from pulse.training.config import load_run_config
from training_factories import tiny_run


def test_second_stage_starts_from_the_first_stages_weights(tmp_path):
    first = train(load_run_config(None, data=tiny_run(train={"prune_at": [], "allocate_at": []})),
                  tmp_path / "a", progress=False)
    stage2 = tiny_run(train={"init_from": str(tmp_path / "a"), "steps": 2, "lr": 1e-3, "seed": 4,
                             "prune_at": [], "allocate_at": []})
    second = train(load_run_config(None, data=stage2), tmp_path / "b", progress=False)
    assert second["initial_weights_hash"] == first["weights_hash"]
    assert second["weights_hash"] != first["weights_hash"]  # and it trained on from there
    # a fresh run with the same seed starts elsewhere: init_from really replaced the random init
    fresh = train(load_run_config(None, data=tiny_run(train={"steps": 1, "seed": 4, "prune_at": [],
                                                             "allocate_at": []})), tmp_path / "c", progress=False)
    assert fresh["initial_weights_hash"] != first["weights_hash"]
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and any(not torch.equal(wa[k], wb[k]) for k in wa)


def test_init_from_refuses_another_architecture_and_a_missing_folder(tmp_path):
    train(load_run_config(None, data=tiny_run(train={"steps": 1, "prune_at": [], "allocate_at": []})),
          tmp_path / "a", progress=False)
    wider = tiny_run(model={"hidden_size": 32}, train={"init_from": str(tmp_path / "a"), "steps": 1})
    with pytest.raises(ConfigError, match=r"init_from: .*differs .*hidden_size \(16 vs 32\)"):
        train(load_run_config(None, data=wider), tmp_path / "b", progress=False)
    missing = tiny_run(train={"init_from": str(tmp_path / "nowhere"), "steps": 1})
    with pytest.raises(ConfigError, match="init_from: .*nowhere has no config.json"):
        train(load_run_config(None, data=missing), tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="train.init_from: must be a model folder"):
        load_run_config(None, data=tiny_run(train={"init_from": 3}))
