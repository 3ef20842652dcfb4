"""Tiny random Hugging Face models (built locally, never downloaded) for the adapter tests."""
import copy
import warnings

import pytest
import torch

VOCAB = 50


def _quiet():
    from transformers.utils import logging

    logging.set_verbosity_error()  # the "falling back to the reference PyTorch implementation" notices
    warnings.filterwarnings("ignore", message=".*attention mask.*")


def tiny_mamba():
    from transformers import MambaConfig, MambaForCausalLM

    _quiet()
    cfg = MambaConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, state_size=4, expand=2, conv_kernel=4,
                      time_step_rank=4)
    return MambaForCausalLM(cfg).eval()


def tiny_mamba2():
    from transformers import Mamba2Config, Mamba2ForCausalLM

    _quiet()
    # 4 heads of 8 in 2 groups; chunk 4 < T so the scan crosses chunk boundaries
    cfg = Mamba2Config(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, state_size=4, expand=2, num_heads=4,
                       head_dim=8, n_groups=2, chunk_size=4, conv_kernel=4)
    return Mamba2ForCausalLM(cfg).eval()


def tiny_rwkv():
    from transformers import RwkvConfig, RwkvForCausalLM

    _quiet()
    cfg = RwkvConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, attention_hidden_size=16,
                     intermediate_size=32, context_length=32)
    model = RwkvForCausalLM(cfg).eval()
    with torch.no_grad():  # spread the keys' bonus so u matters per channel
        for block in model.rwkv.blocks:
            block.attention.time_first.copy_(torch.linspace(-1.0, 1.0, 16))
    return model


def _transformers_major():
    try:
        import transformers
    except ImportError:
        return 0
    return int(transformers.__version__.split(".")[0])


BUILDERS = {"mamba": tiny_mamba, "rwkv": tiny_rwkv}
if _transformers_major() >= 5:  # the Mamba-2 adapter refuses transformers 4.x (see probes/adapters/mamba2.py)
    BUILDERS["mamba2"] = tiny_mamba2


def pair(build):
    """(model, an untouched deep copy with the same weights)."""
    model = build()
    return model, copy.deepcopy(model)


@pytest.fixture
def tokens():
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, VOCAB, (2, 12), generator=g)


def record_all(sites):
    """{name: fn} recording every site's value (the functions return None: read only)."""
    seen = {}

    def make(name):
        def fn(value, _name):
            seen.setdefault(name, []).append(value.detach().clone())
        return fn

    return {n: make(n) for n in sites}, seen
