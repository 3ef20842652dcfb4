"""(b) torchrun with two gloo processes: ranks stay in sync and the weights move."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from training_factories import tiny_run

ROOT = Path(__file__).resolve().parents[3]


def test_torchrun_two_ranks_stay_in_sync(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run(train={"steps": 4, "save_every": 0})))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "pulse.train", "--config", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    hashes = metrics["rank_weight_hashes"]  # each rank's own hash of its parameters, gathered
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    assert metrics["weights_hash"] != metrics["initial_weights_hash"]
    assert hashes[0] == metrics["weights_hash"][:15]
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_ranks_get_different_shards():
    from pulse.data import build_task
    from pulse.training.data import train_batch

    task = build_task("mqar", num_pairs=2, num_queries=2, num_keys=4, num_values=4)
    a = train_batch(task, 5, rank=0, world_size=2, batch_size=8, seed=1)
    b = train_batch(task, 5, rank=1, world_size=2, batch_size=8, seed=1)
    again = train_batch(task, 5, rank=0, world_size=2, batch_size=8, seed=1)
    assert not a["input_ids"].equal(b["input_ids"])
    assert all(a[k].equal(again[k]) for k in a)
