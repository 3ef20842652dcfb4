"""Fixtures for the probes tests."""
import pytest
import torch

from probe_models import BANK, make_model


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
