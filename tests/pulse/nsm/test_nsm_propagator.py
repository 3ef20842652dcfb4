"""StatePropagator and the shared cells against hand-written equations."""

import math

import pytest
import torch
import torch.nn.functional as F

from pulse.hooks import hook_points
from pulse.nsm import GatedCell, SlotCommunication, StatePropagator


def hand_gru(cell: GatedCell, x, h):
    D = cell.dim
    W, U, b = cell.weight_ih, cell.weight_hh, cell.bias
    Wr, Wz, Wh = W[:D], W[D : 2 * D], W[2 * D :]
    Ur, Uz, Uh = U[:D], U[D : 2 * D], U[2 * D :]
    br, bz, bh = b[:D], b[D : 2 * D], b[2 * D :]
    r = torch.sigmoid(x @ Wr.T + br + h @ Ur.T)
    z = torch.sigmoid(x @ Wz.T + bz + h @ Uz.T)
    cand = torch.tanh(x @ Wh.T + bh + (r * h) @ Uh.T)
    return (1 - z) * h + z * cand


def hand_lstm(cell: GatedCell, x, h, c):
    D = cell.dim
    W, U, b = cell.weight_ih, cell.weight_hh, cell.bias
    a = [x @ W[k * D : (k + 1) * D].T + b[k * D : (k + 1) * D] + h @ U[k * D : (k + 1) * D].T for k in range(4)]
    i, f, g, o = torch.sigmoid(a[0]), torch.sigmoid(a[1]), torch.tanh(a[2]), torch.sigmoid(a[3])
    c_new = f * c + i * g
    return o * torch.tanh(c_new), c_new


@torch.no_grad()
def hand_communication(comm: SlotCommunication, h, alive):
    """Explicit per-head, per-slot loops."""
    B, S, D = h.shape
    H, hd = comm.num_heads, comm.head_dim
    out = h.clone()
    hin = torch.where(alive[None, :, None], h, torch.zeros(()))
    for b in range(B):
        for s in range(S):
            if not alive[s]:
                continue
            heads = []
            for hh in range(H):
                sl = slice(hh * hd, (hh + 1) * hd)
                q = (comm.q_proj(hin[b, s]))[sl]
                scores = []
                for s2 in range(S):
                    k = comm.k_proj(hin[b, s2])[sl]
                    scores.append(float(q @ k) / math.sqrt(hd) if alive[s2] else -math.inf)
                w = torch.softmax(torch.tensor(scores), 0)
                heads.append(sum(w[s2] * comm.v_proj(hin[b, s2])[sl] for s2 in range(S)))
            o = comm.out_proj(torch.cat(heads))
            out[b, s] = F.layer_norm(hin[b, s] + o, (D,), comm.norm.weight, comm.norm.bias, comm.norm.eps)
    return out


@pytest.mark.parametrize("shape", [(3, 8), (2, 5, 8)])
def test_gru_matches_equations(shape):
    torch.manual_seed(0)
    p = StatePropagator(8, "gru", num_heads=2, enable_communication=False)
    h, x = torch.randn(shape), torch.randn(shape)
    assert torch.allclose(p(h, x), hand_gru(p.cell, x, h), atol=1e-6)
    assert torch.allclose(p(h), hand_gru(p.cell, torch.zeros_like(h), h), atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 8), (2, 5, 8)])
def test_lstm_matches_equations(shape):
    torch.manual_seed(1)
    p = StatePropagator(8, "lstm", num_heads=2, enable_communication=False)
    h, x, c = torch.randn(shape), torch.randn(shape), torch.randn(shape)
    out = p.step(h, x, c)
    eh, ec = hand_lstm(p.cell, x, h, c)
    assert torch.allclose(out.states, eh, atol=1e-6) and torch.allclose(out.cell, ec, atol=1e-6)
    eh0, _ = hand_lstm(p.cell, x, h, torch.zeros_like(h))  # cell None -> zeros
    assert torch.allclose(p(h, x), eh0, atol=1e-6)
    assert StatePropagator(8, "gru").step(h, x).cell is None


def test_readme_usage_and_communication_matches_loops():
    torch.manual_seed(2)
    p = StatePropagator(state_dim=128, gate_type="gru", num_heads=4, enable_communication=True)
    assert p(torch.randn(2, 128)).shape == (2, 128)
    assert p(torch.randn(2, 6, 128)).shape == (2, 6, 128)
    p = StatePropagator(8, "gru", num_heads=2)
    h, x = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    alive = torch.tensor([True, False, True, True, False])
    got = p(h, x, alive=alive)
    gru = hand_gru(p.cell, x, h)
    exp = hand_communication(p.communication, gru, alive)
    exp = torch.where(alive[None, :, None], exp, h)  # dead slots unchanged
    assert torch.allclose(got, exp, atol=1e-5)
    assert torch.equal(got[:, ~alive], h[:, ~alive])


def test_communication_respects_alive_mask():
    torch.manual_seed(3)
    p = StatePropagator(8, "lstm", num_heads=2)
    h, x = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    alive = torch.tensor([True, True, False, True, False])
    seen = {}
    p.hook_slot_attention.register_forward_hook(lambda m, i, o: seen.__setitem__("w", o))
    base = p(h, x, alive=alive)
    w = seen["w"]
    assert w.shape == (2, 2, 5, 5)
    assert torch.all(w[..., ~alive] == 0) and torch.all(w[:, :, ~alive, :] == 0)
    assert torch.allclose(w[:, :, alive].sum(-1), torch.ones(2, 2, 3))
    # garbage in dead slots changes nothing for alive ones, and dead slots are unchanged
    h2, x2 = h.clone(), x.clone()
    h2[:, ~alive] = 1e4 * torch.randn(2, 2, 8)
    x2[:, ~alive] = 1e4
    out2 = p(h2, x2, alive=alive)
    assert torch.allclose(out2[:, alive], base[:, alive], atol=1e-6)
    assert torch.equal(out2[:, ~alive], h2[:, ~alive])


def test_hooks_and_intervention():
    p = StatePropagator(8, "gru", num_heads=2)
    names = {n for n, _ in hook_points(p)}
    assert {"hook_reset_gate", "hook_update_gate", "hook_candidate", "hook_state", "hook_slot_attention"} <= names
    h = torch.randn(2, 3, 8)
    p.communication = None  # clamp z = 0 -> state unchanged
    handle = p.hook_update_gate.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    assert torch.allclose(p(h, torch.randn_like(h)), h)
    handle.remove()


def test_gradients_and_validation():
    p = StatePropagator(8, "lstm", num_heads=2)
    p(torch.randn(2, 4, 8), torch.randn(2, 4, 8)).sum().backward()
    assert all(q.grad is not None for q in p.parameters())
    with pytest.raises(ValueError, match="gate_type"):
        StatePropagator(8, gate_type="rnn")
    with pytest.raises(ValueError, match="num_heads"):
        StatePropagator(8, num_heads=3)
    with pytest.raises(ValueError, match="state_dim"):
        StatePropagator(0)
    with pytest.raises(ValueError, match="inputs"):
        p(torch.randn(2, 4, 8), torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="alive"):
        p(torch.randn(2, 4, 8), alive=torch.zeros(4, dtype=torch.bool))
