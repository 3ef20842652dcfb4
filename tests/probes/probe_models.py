"""Tiny models for the probes tests (hidden 32, 2 layers, vocab 50)."""
import torch

from pulse import PulseConfig, PulseForCausalLM


def make_model(**overrides) -> PulseForCausalLM:
    values = dict(vocab_size=50, hidden_size=32, num_layers=2, num_heads=2, chunk_size=8, conv_kernel_size=3,
                  memory_capacity=6, memory_top_k=2)
    values.update(overrides)
    torch.manual_seed(0)
    return PulseForCausalLM(PulseConfig(**values)).eval()


BANK = dict(num_states=4, state_dim=16, state_num_heads=2)
