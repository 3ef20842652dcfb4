"""StateBank: exactness against a per-token loop, causality, pieces, padding, pruning, hooks."""

import math

import pytest
import torch
import torch.nn.functional as F

from pulse.hooks import hook_points
from pulse.nsm import StateBank

D, S, DS, C = 12, 6, 8, 3


def make(gate_type="gru", comm=True, seed=0, max_states=None, num_states=S):
    torch.manual_seed(seed)
    sb = StateBank(D, num_states, DS, C, gate_type=gate_type, num_heads=2, enable_communication=comm,
                   max_states=max_states)
    with torch.no_grad():  # spread importance so it matters in the read
        sb.importance_logits.copy_(torch.linspace(-1.5, 2.0, sb.max_states))
    return sb


def rand_mask(b, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = (torch.rand(b, t, generator=g) > 0.25).float()
    m[0] = 1.0
    if b > 1:
        m[1, :4] = 0.0  # left padding
    return m


# ---------------------------------------------------------------- slow reference
def ref_step(sb, h, u, c):
    """One bank update with hand-written equations: h, u, c [S, Ds] (h zeroed on dead slots)."""
    cell, n = sb.cell, DS
    W, U, b = cell.weight_ih, cell.weight_hh, cell.bias
    blk = lambda M, k: M[k * n : (k + 1) * n]
    if sb.gate_type == "gru":
        r = torch.sigmoid(u @ blk(W, 0).T + blk(b, 0) + h @ blk(U, 0).T)
        z = torch.sigmoid(u @ blk(W, 1).T + blk(b, 1) + h @ blk(U, 1).T)
        cand = torch.tanh(u @ blk(W, 2).T + blk(b, 2) + (r * h) @ blk(U, 2).T)
        h_new, c_new = (1 - z) * h + z * cand, None
    else:
        a = [u @ blk(W, k).T + blk(b, k) + h @ blk(U, k).T for k in range(4)]
        c_new = torch.sigmoid(a[1]) * c + torch.sigmoid(a[0]) * torch.tanh(a[2])
        h_new = torch.sigmoid(a[3]) * torch.tanh(c_new)
    if sb.communication is not None:
        cm, alive = sb.communication, sb.alive
        H, hd = cm.num_heads, cm.head_dim
        q, k, v = cm.q_proj(h_new), cm.k_proj(h_new), cm.v_proj(h_new)
        outs = []
        for s in range(sb.max_states):
            heads = []
            for hh in range(H):
                sl = slice(hh * hd, (hh + 1) * hd)
                sc = torch.stack([q[s, sl] @ k[s2, sl] / math.sqrt(hd) for s2 in range(sb.max_states)])
                sc = sc.masked_fill(~alive, -math.inf)
                heads.append(torch.softmax(sc, 0) @ v[:, sl])
            o = cm.out_proj(torch.cat(heads))
            outs.append(F.layer_norm(h_new[s] + o, (DS,), cm.norm.weight, cm.norm.bias, cm.norm.eps))
        h_new = torch.stack(outs)
    return h_new, c_new


@torch.no_grad()
def reference(sb, x, mask):
    """Token-by-token loop, one row at a time, updating the bank at chunk boundaries."""
    B, T, _ = x.shape
    alive = sb.alive
    imp = torch.sigmoid(sb.importance_logits)
    dk = sb.key_dim
    out = torch.zeros(B, T, D)
    banks = []
    for b in range(B):
        bank = sb.slot_values.clone()
        cell = torch.zeros(sb.max_states, DS)
        pu, pw, cnt = torch.zeros(sb.max_states, DS), torch.zeros(sb.max_states), 0
        for t in range(T):
            if mask[b, t] == 0:
                continue
            xt = x[b, t]
            bc = torch.where(alive[:, None], bank, torch.zeros(()))
            sc = (bc @ sb.read_key.weight.T) @ (sb.read_query.weight @ xt) / math.sqrt(dk)
            r = torch.softmax(sc.masked_fill(~alive, -math.inf), 0)
            out[b, t] = sb.out_proj.weight @ ((r * imp) @ bc)
            sc = (bc @ sb.write_key.weight.T) @ (sb.write_query.weight @ xt) / math.sqrt(dk)
            w = torch.softmax(sc.masked_fill(~alive, -math.inf), 0)
            pu += w[:, None] * (sb.write_value.weight @ xt + sb.write_value.bias)
            pw += w
            cnt += 1
            if cnt % C == 0:
                h_new, c_new = ref_step(sb, bc, pu / (pw[:, None] + sb.eps), cell)
                bank = torch.where(alive[:, None], h_new, bank)
                if c_new is not None:
                    cell = torch.where(alive[:, None], c_new, cell)
                pu, pw = torch.zeros_like(pu), torch.zeros_like(pw)
        banks.append(bank)
    return out, torch.stack(banks)


@pytest.mark.parametrize("gate_type", ["gru", "lstm"])
def test_parallel_matches_per_token_reference(gate_type):
    sb = make(gate_type, max_states=S + 2)  # two dead slots at the end
    sb.prune_states([1])
    x, mask = torch.randn(3, 17, D), rand_mask(3, 17)
    with torch.no_grad():
        delta, st = sb(x, mask)
    ref, ref_bank = reference(sb, x, mask)
    assert torch.allclose(delta, ref, atol=1e-5)
    assert torch.allclose(st["bank"], ref_bank, atol=1e-5)
    assert torch.equal(st["count"], mask.sum(1).long())


@pytest.mark.parametrize("gate_type", ["gru", "lstm"])
@pytest.mark.parametrize("splits", [[], [5], [1, 2, 3, 7, 8, 12, 13], list(range(1, 19))])
def test_pieces_with_state_equal_one_call(gate_type, splits):
    sb = make(gate_type, seed=1)
    x, mask = torch.randn(3, 19, D), rand_mask(3, 19, seed=1)
    with torch.no_grad():
        full, full_state = sb(x, mask)
        bounds = [0, *splits, 19]
        state, parts = None, []
        for a, b in zip(bounds[:-1], bounds[1:]):
            d, state = sb(x[:, a:b], mask[:, a:b], state)
            parts.append(d)
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
    for key in full_state:
        assert torch.allclose(state[key].double(), full_state[key].double(), atol=1e-5), key


def test_causality_and_chunk_blindness():
    sb = make("gru", seed=2)
    x = torch.randn(1, 14, D)
    with torch.no_grad():
        base, _ = sb(x)
        for t in [0, 4, 8, 13]:
            x2 = x.clone()
            x2[0, t] += 3.0 * torch.randn(D)
            d2, _ = sb(x2)
            own_chunk_end = (t // C + 1) * C  # other tokens of its chunk (and earlier ones) never see it
            others = [p for p in range(min(own_chunk_end, 14)) if p != t]
            assert torch.equal(d2[:, others], base[:, others]), t
            if own_chunk_end < 14:
                assert not torch.allclose(d2[:, own_chunk_end:], base[:, own_chunk_end:])


def test_left_padding_invariance():
    sb = make("lstm", seed=3)
    x = torch.randn(1, 10, D)
    pad = torch.randn(1, 4, D) * 5
    xp = torch.cat([pad, x], 1)
    mp = torch.cat([torch.zeros(1, 4), torch.ones(1, 10)], 1)
    with torch.no_grad():
        d, st = sb(x)
        dp, stp = sb(xp, mp)
    assert torch.allclose(dp[:, 4:], d, atol=1e-6)
    assert torch.all(dp[:, :4] == 0)
    assert torch.allclose(stp["bank"], st["bank"], atol=1e-6) and torch.equal(stp["count"], st["count"])


def test_dead_slots_contribute_nothing_and_routing_sums_to_one():
    sb = make("gru", seed=4)
    assert sb.prune_states([2, 4]) == 2
    x, mask = torch.randn(2, 11, D), rand_mask(2, 11, seed=4)
    seen = {}
    for name in ["hook_routing", "hook_read_weights", "hook_slot_attention", "hook_update_gate"]:
        getattr(sb, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    with torch.no_grad():
        state = sb.init_state(2, None, torch.float32)
        d1, s1 = sb(x, mask, state)
        w = seen["hook_routing"]
        real = mask > 0
        assert torch.allclose(w.sum(-1)[real], torch.ones(int(real.sum())), atol=1e-6)
        assert torch.all(w[~real] == 0)
        for name in ["hook_routing", "hook_read_weights"]:
            assert torch.all(seen[name][..., [2, 4]] == 0), name
        assert torch.all(seen["hook_slot_attention"][..., [2, 4]] == 0)
        assert torch.all(seen["hook_update_gate"][:, :, [2, 4]] == 0)
        garbage = dict(state)
        bank = state["bank"].clone()
        bank[:, [2, 4]] = 1e4 * torch.randn(2, 2, DS)
        garbage["bank"] = bank
        d2, s2 = sb(x, mask, garbage)
    alive = sb.alive
    assert torch.allclose(d1, d2, atol=1e-6)
    assert torch.allclose(s1["bank"][:, alive], s2["bank"][:, alive], atol=1e-6)
    assert torch.equal(s2["bank"][:, ~alive], bank[:, ~alive])  # dead slots unchanged


def test_hook_alive_intervention_equals_pruning():
    sb = make("gru", seed=5)
    x = torch.randn(2, 9, D)
    h = sb.hook_alive.register_forward_hook(lambda m, i, o: o * torch.tensor([1.0, 0, 1, 1, 1, 1]))
    with torch.no_grad():
        d_hooked, _ = sb(x)
    h.remove()
    sb.prune_states([1])
    with torch.no_grad():
        d_pruned, _ = sb(x)
    assert torch.allclose(d_hooked, d_pruned, atol=1e-6)


def test_hook_names_shapes_and_update_positions():
    sb = make("gru", seed=6)
    names = {n for n, _ in hook_points(sb)}
    assert names == {
        "hook_importance", "hook_alive", "hook_routing", "hook_reset_gate", "hook_update_gate",
        "hook_slot_attention", "hook_slots", "hook_update_positions", "hook_read_weights", "hook_read",
    }
    lstm = {n for n, _ in hook_points(make("lstm"))}
    assert {"hook_input_gate", "hook_forget_gate", "hook_output_gate"} <= lstm and "hook_update_gate" not in lstm
    seen = {}
    for n, hp in hook_points(sb):
        hp.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
    mask = torch.ones(2, 8)
    mask[1, :3] = 0  # row 1: 5 real tokens -> 1 update; row 0: 8 -> 2 updates
    with torch.no_grad():
        _, st = sb(torch.randn(2, 8, D), mask)
    U = 2
    assert seen["hook_importance"].shape == (S,) and seen["hook_alive"].shape == (S,)
    assert seen["hook_routing"].shape == (2, 8, S) and seen["hook_read_weights"].shape == (2, 8, S)
    for n in ["hook_reset_gate", "hook_update_gate", "hook_slots"]:
        assert seen[n].shape == (2, U, S, DS), n
    assert seen["hook_slot_attention"].shape == (2, U, 2, S, S)
    assert seen["hook_read"].shape == (2, 8, DS)
    assert seen["hook_update_positions"].tolist() == [[2, 5], [5, -1]]
    assert torch.all(seen["hook_update_gate"][1, 1] == 0)  # padded update
    assert torch.equal(seen["hook_slots"][1, 1], seen["hook_slots"][1, 0])  # repeated bank
    assert torch.equal(seen["hook_slots"][:, -1], st["bank"])
    # a call completing no update still emits [B, 0, ...]
    with torch.no_grad():
        sb(torch.randn(2, 1, D))
    assert seen["hook_update_gate"].shape == (2, 0, S, DS) and seen["hook_update_positions"].shape == (2, 0)


def test_gate_intervention_recomputes_updates():
    sb = make("gru", comm=False, seed=7)
    x = torch.randn(2, 10, D)
    h = sb.hook_update_gate.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    with torch.no_grad():
        d, st = sb(x)
        init = sb.init_state(2, None, torch.float32)
    h.remove()
    assert torch.allclose(st["bank"], init["bank"])  # z = 0 freezes the bank
    with torch.no_grad():
        d0, _ = sb(x[:, :C])  # the first chunk reads the initial bank either way
    assert torch.allclose(d[:, :C], d0, atol=1e-6)


@pytest.mark.parametrize("gate_type", ["gru", "lstm"])
def test_gradients_reach_every_parameter(gate_type):
    sb = make(gate_type, seed=8)
    delta, st = sb(torch.randn(2, 10, D), rand_mask(2, 10, seed=8))
    (delta.pow(2).sum() + st["bank"].sum() + sb.importance_loss()).backward()
    for name, p in sb.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dtype_agnostic_float64():
    sb = make("lstm", seed=9).double()
    x = torch.randn(2, 7, D, dtype=torch.float64)
    d, st = sb(x)
    assert d.dtype == torch.float64 and st["bank"].dtype == torch.float64 and st["cell"].dtype == torch.float64


def test_prune_allocate_events_and_state_dict_round_trip():
    sb = make("gru", seed=10, max_states=S + 2)
    assert sb.get_active_count() == S and sb.get_importance_scores().shape == (S + 2,)
    imp = sb.get_importance_scores()
    n_low = int(((imp < 0.3) & sb.alive).sum())
    assert sb.prune_low_importance_states(step=5) == n_low > 0
    assert sb.get_active_count() == S - n_low
    assert sb.events[-1]["kind"] == "prune" and sb.events[-1]["step"] == 5
    assert sb.allocate_states(1) == 1 and sb.get_active_count() == S - n_low + 1
    assert sb.events[-1]["kind"] == "allocate" and len(sb.events[-1]["slots"]) == 1
    loss = sb.importance_loss()
    assert torch.allclose(loss, torch.sigmoid(sb.importance_logits)[sb.alive].mean())
    sd = {k: v.clone() for k, v in sb.state_dict().items()}
    assert "alive" in sd and "importance_logits" in sd
    other = StateBank(D, S, DS, C, num_heads=2, max_states=S + 2)
    other.load_state_dict(sd)
    assert torch.equal(other.alive, sb.alive)
    assert torch.equal(other.get_importance_scores(), sb.get_importance_scores())
    x = torch.randn(1, 8, D)
    with torch.no_grad():
        assert torch.equal(other(x)[0], sb(x)[0])


def test_validation_errors():
    with pytest.raises(ValueError, match="gate_type"):
        StateBank(D, S, DS, C, gate_type="rnn")
    with pytest.raises(ValueError, match="num_states"):
        StateBank(D, 8, DS, C, max_states=4)
    with pytest.raises(ValueError, match="chunk_size"):
        StateBank(D, S, DS, 0)
    with pytest.raises(ValueError, match="prune_threshold"):
        StateBank(D, S, DS, C, prune_threshold=1.5)
    sb = make()
    with pytest.raises(ValueError, match="x"):
        sb(torch.randn(2, 5, D + 1))
    with pytest.raises(ValueError, match="mask"):
        sb(torch.randn(2, 5, D), torch.ones(2, 4))
    with pytest.raises(ValueError, match="bank"):
        sb(torch.randn(2, 5, D), None, {**sb.init_state(2, None, torch.float32), "bank": torch.zeros(2, 1, DS)})
    with pytest.raises(ValueError, match="n"):
        sb.allocate_states(-1)


@pytest.mark.parametrize("gate_type", ["gru", "lstm"])
def test_identity_interventions_rerun_to_same_result(gate_type):
    """Hooks that return a copy force the override/recompute path; results must not move."""
    sb = make(gate_type, seed=11)
    x, mask = torch.randn(2, 10, D), rand_mask(2, 10, seed=11)
    with torch.no_grad():
        d0, s0 = sb(x, mask)
        handles = [hp.register_forward_hook(lambda m, i, o: o.clone()) for _, hp in hook_points(sb)]
        d1, s1 = sb(x, mask)
        for h in handles:
            h.remove()
        # a real routing intervention: send all writes to slot 0 -> other slots get zero input
        h = sb.hook_routing.register_forward_hook(
            lambda m, i, o: torch.zeros_like(o).index_fill_(-1, torch.tensor([0]), 1.0) * (mask[..., None])
        )
        d2, s2 = sb(x, mask)
        h.remove()
    assert torch.allclose(d0, d1, atol=1e-6) and torch.allclose(s0["bank"], s1["bank"], atol=1e-6)
    assert torch.allclose(s2["pending_w"][:, 1:], torch.zeros(2, S - 1))
    assert not torch.allclose(s2["bank"], s0["bank"])
