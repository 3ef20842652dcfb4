"""Tiny run configs shared by the training tests (a few steps take well under a second)."""

import copy

TINY = {
    "model": {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "chunk_size": 4, "conv_kernel_size": 2,
              "num_states": 4, "state_dim": 8, "state_num_heads": 2, "use_memory": True,
              "memory_capacity": 4, "memory_top_k": 2, "use_recurrent_state": True, "dropout": 0.1},
    "task": {"name": "mqar", "num_pairs": 2, "num_queries": 2, "num_keys": 4, "num_values": 4, "eval_size": 16},
    "train": {"steps": 6, "batch_size": 4, "lr": 0.01, "warmup": 2, "eval_size": 16, "log_every": 1,
              "save_every": 3, "device": "cpu", "prune_at": [4], "prune_lowest": 1, "allocate_at": [5],
              "allocate_n": 1, "seed": 3},
}


def tiny_run(**sections):
    data = copy.deepcopy(TINY)
    for section, values in sections.items():
        data[section].update(values)
    return data
