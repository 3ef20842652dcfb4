"""Tiny models for the probes tests (hidden 32, 2 layers, vocab 50)."""
import pytest
import torch

from pulse import PulseConfig, PulseForCausalLM


def make_model(**overrides) -> PulseForCausalLM:
    values = dict(vocab_size=50, hidden_size=32, num_layers=2, num_heads=2, chunk_size=8, conv_kernel_size=3,
                  memory_capacity=6, memory_top_k=2)
    values.update(overrides)
    torch.manual_seed(0)
    return PulseForCausalLM(PulseConfig(**values)).eval()


BANK = dict(num_states=4, state_dim=16, state_num_heads=2)


@pytest.fixture
def plain_model():
    return make_model()


@pytest.fixture
def bank_model():
    return make_model(**BANK)


@pytest.fixture
def full_model():
    return make_model(use_memory=True, use_recurrent_state=True, **BANK)


@pytest.fixture
def ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(1, 50, (2, 21), generator=g)
