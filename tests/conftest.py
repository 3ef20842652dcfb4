import os

import pytest
import torch

# tests never reach the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# one thread: the models in tests are tiny, and two threads on a shared 2-core machine thrash
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=["plain", "memory", "recurrent", "bank", "bank_lstm", "everything"])
def variant_config(request):
    """A tiny PulseConfig with each optional part on its own, and all together."""
    from factories import VARIANTS, tiny_config

    return tiny_config(**VARIANTS[request.param])
