"""StateManager bookkeeping and AdaptiveStateAllocator."""

import pytest
import torch

from pulse.nsm import AdaptiveStateAllocator, StateManager


def test_readme_usage_prune_allocate_events():
    m = StateManager(state_dim=128, max_states=64, initial_states=16, prune_threshold=0.3)
    assert m.get_active_count() == 16 and m.get_importance_scores().shape == (64,)
    assert m.get_importance_scores(alive_only=True).shape == (16,)
    with torch.no_grad():
        m.importance_logits[:4] = -3.0  # importance ~0.05 < 0.3
    assert m.prune_low_importance_states(step=3) == 4
    assert m.get_active_count() == 12 and not m.alive[:4].any()
    ev = m.events[-1]
    assert ev["kind"] == "prune" and ev["slots"] == [0, 1, 2, 3] and ev["step"] == 3
    assert all(v < 0.3 for v in ev["importance"])
    assert m.allocate_states(5) == 5 and m.get_active_count() == 17
    assert m.events[-1]["kind"] == "allocate" and m.events[-1]["slots"] == [0, 1, 2, 3, 16]
    assert torch.allclose(m.get_importance_scores()[:4], torch.full((4,), 0.9))
    assert m.allocate_states(100) == 64 - 17 and m.get_active_count() == 64
    assert m.allocate_states(1) == 0  # full
    info = m.get_state_info()
    assert info["active_count"] == 64 and info["max_states"] == 64 and len(info["events"]) == 3
    imp, alive = m.importance_and_alive()
    assert imp.shape == (64,) and alive.dtype == torch.bool
    assert m().shape == (64, 128)  # all 64 slots alive now: their values
    assert m.initial_states(2).shape == (2, 64, 128)


def test_never_prunes_last_alive_and_allocation_deterministic():
    m = StateManager(8, max_states=4, initial_states=3)
    with torch.no_grad():
        m.importance_logits.fill_(-5.0)
        m.importance_logits[1] = -4.0
    assert m.prune_low_importance_states() == 2
    assert m.alive.tolist() == [False, True, False, False]
    m2 = StateManager(8, max_states=4, initial_states=3)
    m2.load_state_dict(m.state_dict())
    m2.events = list(m.events)
    m.allocate_states(2)
    m2.allocate_states(2)
    assert torch.equal(m.slot_values, m2.slot_values)


def test_manager_validation():
    with pytest.raises(ValueError, match="initial_states"):
        StateManager(8, max_states=4, initial_states=5)
    with pytest.raises(ValueError, match="max_states"):
        StateManager(8, max_states=0)
    with pytest.raises(ValueError, match="prune_threshold"):
        StateManager(8, prune_threshold=-0.1)
    with pytest.raises(ValueError, match="threshold"):
        StateManager(8).prune_low_importance_states(threshold=2.0)
    with pytest.raises(ValueError, match="n"):
        StateManager(8).allocate_states(1.5)


def test_importance_loss_has_gradient():
    m = StateManager(8, max_states=6, initial_states=4)
    m.importance_loss().backward()
    assert m.importance_logits.grad[:4].abs().sum() > 0 and torch.all(m.importance_logits.grad[4:] == 0)


def test_adaptive_allocator_grows_and_shrinks():
    torch.manual_seed(0)
    m = StateManager(8, max_states=10, initial_states=4)
    alloc = AdaptiveStateAllocator(token_dim=6, min_states=2)
    c = alloc(torch.randn(3, 5, 6), torch.ones(3, 5))
    assert c.shape == (3,) and torch.all((c > 0) & (c < 1))
    assert alloc.adjust(m, 1.0, step=1) == {"target": 10, "allocated": 6, "pruned": 0, "active": 10}
    with torch.no_grad():
        m.importance_logits.copy_(torch.arange(10.0))
    res = alloc.adjust(m, torch.tensor([0.0, 0.0]), step=2)
    assert res["pruned"] == 8 and m.get_active_count() == 2 and m.alive[-2:].all()
    assert [e["kind"] for e in m.events] == ["allocate", "prune"]
    assert alloc.target_count(m, 0.5) == 6
