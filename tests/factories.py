"""Small models and configs shared by the tests."""
import pytest

from pulse import PulseConfig


def tiny_config(**overrides) -> PulseConfig:
    values = dict(vocab_size=40, hidden_size=32, num_layers=2, num_heads=2, chunk_size=8,
                  conv_kernel_size=3, memory_capacity=6, memory_top_k=2)
    values.update(overrides)
    return PulseConfig(**values)


# every optional part on its own and all together; the state bank variants join when it exists
VARIANTS = {
    "plain": {},
    "memory": {"use_memory": True},
    "recurrent": {"use_recurrent_state": True},
    "bank": {"num_states": 4, "state_dim": 16, "state_num_heads": 2},
    "bank_lstm": {"num_states": 4, "state_dim": 16, "state_num_heads": 2, "state_gate_type": "lstm"},
    "everything": {"use_memory": True, "use_recurrent_state": True, "num_states": 4, "state_dim": 16,
                   "state_num_heads": 2},
}


