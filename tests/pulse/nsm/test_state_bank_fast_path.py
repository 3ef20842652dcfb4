"""The state bank's fast path (fresh state, no hooks) equals the exact path, values and gradients."""

import pytest
import torch

from pulse.nsm.state_bank import StateBank


@pytest.mark.parametrize("gate", ["gru", "lstm"])
@pytest.mark.parametrize("write_mode", ["mean", "mass"])
@pytest.mark.parametrize("communication", [True, False])
def test_fast_path_matches_exact_path(gate, write_mode, communication, monkeypatch):
    torch.manual_seed(0)
    bank = StateBank(16, 6, 8, 4, gate_type=gate, num_heads=2, enable_communication=communication,
                     write_mode=write_mode, max_states=8).double()
    with torch.no_grad():
        bank.alive[5] = False
    x = torch.randn(3, 19, 16, dtype=torch.float64)
    mask = torch.ones(3, 19, dtype=torch.float64)
    mask[1, :5] = 0  # left padding
    mask[2, 14:] = 0  # right padding
    calls = []
    fast = StateBank._fast_forward
    monkeypatch.setattr(StateBank, "_fast_forward", lambda self, *a: (calls.append(1), fast(self, *a))[1])
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    d_fast, s_fast = bank(xa, mask)  # fresh state: fast path
    assert calls == [1]
    d_fast.square().sum().backward()
    g_fast = [p.grad.clone() for p in bank.parameters()]
    bank.zero_grad()
    d_exact, s_exact = bank(xb, mask, bank.init_state(3, dtype=torch.float64))  # a given state: exact path
    assert calls == [1]
    d_exact.square().sum().backward()
    torch.testing.assert_close(d_fast, d_exact, rtol=0, atol=1e-12)
    for k in s_exact:
        torch.testing.assert_close(s_fast[k].double(), s_exact[k].double(), rtol=0, atol=1e-12)
    for a, b in zip(g_fast, [p.grad for p in bank.parameters()]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=1e-10)


def test_a_registered_hook_takes_the_exact_path(monkeypatch):
    bank = StateBank(8, 4, 8, 4, num_heads=2)
    calls = []
    monkeypatch.setattr(StateBank, "_fast_forward", lambda self, *a: calls.append(1))
    seen = []
    h = bank.hook_routing.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    bank(torch.randn(2, 9, 8))
    h.remove()
    assert calls == [] and seen == [torch.Size([2, 9, 4])]


def test_mass_write_leaves_an_unrouted_slot_alone():
    """With write_mode='mass' a slot that receives no routing weight keeps its value."""
    torch.manual_seed(1)
    bank = StateBank(8, 3, 8, 2, num_heads=2, enable_communication=False, write_mode="mass")
    x = torch.randn(1, 4, 8)
    routing = torch.zeros(1, 4, 3)
    routing[..., 0] = 1.0  # every token writes slot 0 only
    h = bank.hook_routing.register_forward_hook(lambda m, i, o: routing)
    slots = []
    h2 = bank.hook_slots.register_forward_hook(lambda m, i, o: slots.append(o))
    bank(x)
    h.remove(), h2.remove()
    final = slots[-1][0, -1]  # [S, Ds] after the last update
    torch.testing.assert_close(final[1:], bank.slot_values[1:].detach())
    assert not torch.allclose(final[0], bank.slot_values[0].detach())
