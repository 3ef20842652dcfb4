"""NSMLayer, HybridAttention, SparseStateAttention, HierarchicalStateManager, SimpleNSM."""

import pytest
import torch

from pulse.nsm import HierarchicalStateManager, HybridAttention, NSMLayer, SimpleNSM, SparseStateAttention


def test_nsm_layer_readme_usage_and_alive():
    torch.manual_seed(0)
    layer = NSMLayer(state_dim=128, token_dim=64, num_heads=4)
    tokens = torch.randn(2, 7, 64)
    new_tokens, new_states = layer(tokens)
    assert new_tokens.shape == (2, 7, 64) and new_states.shape == (2, 16, 128)
    states = torch.randn(2, 16, 128)
    alive = torch.ones(16, dtype=torch.bool)
    alive[3] = False
    seen = {}
    layer.hook_read_weights.register_forward_hook(lambda m, i, o: seen.__setitem__("w", o))
    t1, s1 = layer(tokens, states, alive)
    assert seen["w"].shape == (2, 4, 7, 16) and torch.all(seen["w"][..., 3] == 0)
    assert torch.equal(s1[:, 3], states[:, 3])
    states2 = states.clone()
    states2[:, 3] = 1e4
    t2, s2 = layer(tokens, states2, alive)
    assert torch.allclose(t1, t2, atol=1e-5) and torch.allclose(s1[:, alive], s2[:, alive], atol=1e-5)


def test_nsm_layer_learns():
    torch.manual_seed(1)
    layer = NSMLayer(state_dim=16, token_dim=8, num_heads=2, num_states=4)
    x, y = torch.randn(8, 5, 8), torch.randn(8, 5, 8)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = (layer(x)[0] - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_hybrid_attention_gate_and_causality():
    torch.manual_seed(2)
    ha = HybridAttention(token_dim=8, state_dim=12, num_heads=2)
    tokens, states = torch.randn(2, 6, 8), torch.randn(2, 5, 12)
    out = ha(tokens, states)
    assert out.shape == (2, 6, 8)
    with torch.no_grad():  # gate fully open to self-attention: output = W_o(self path)
        ha.gate.bias.fill_(50.0)
        ha.gate.weight.zero_()
    self_only = ha.out_proj(ha.self_attention(tokens))
    assert torch.allclose(ha(tokens, states), self_only, atol=1e-5)
    assert torch.allclose(ha(tokens, torch.randn(2, 5, 12)), self_only, atol=1e-5)  # states ignored
    t2 = tokens.clone()
    t2[:, 4] += 1.0  # causal: earlier positions unchanged
    assert torch.allclose(ha(t2, states)[:, :4], ha(tokens, states)[:, :4], atol=1e-6)
    with torch.no_grad():
        ha.gate.bias.fill_(-50.0)
    seen = {}
    ha.hook_gate.register_forward_hook(lambda m, i, o: seen.__setitem__("g", o))
    alive = torch.tensor([True, True, False, True, True])
    s2 = states.clone()
    s2[:, 2] = 1e4
    assert torch.allclose(ha(tokens, states, alive), ha(tokens, s2, alive), atol=1e-5)
    assert seen["g"].shape == (2, 6)


def test_sparse_state_attention_uses_exactly_k_slots():
    torch.manual_seed(3)
    sp = SparseStateAttention(token_dim=8, state_dim=12, top_k=3)
    tokens, states = torch.randn(2, 6, 8), torch.randn(2, 7, 12)
    out, w = sp(tokens, states)
    assert out.shape == (2, 6, 8) and w.shape == (2, 6, 7)
    assert torch.all((w > 0).sum(-1) == 3) and torch.allclose(w.sum(-1), torch.ones(2, 6))
    scores = sp.q_proj(tokens) @ sp.k_proj(states).transpose(1, 2)
    top = scores.topk(3, dim=-1).indices
    assert torch.all(torch.gather(w, -1, top) > 0)
    alive = torch.tensor([True, False, True, False, False, False, True])
    out2, w2 = sp(tokens, states, alive)
    assert torch.all((w2 > 0).sum(-1) == 3) and torch.all(w2[..., ~alive] == 0)
    alive[2] = False  # only 2 alive -> k = 2
    assert torch.all((sp(tokens, states, alive)[1] > 0).sum(-1) == 2)
    with pytest.raises(ValueError, match="top_k"):
        SparseStateAttention(8, 12, top_k=0)


def test_hierarchical_levels_shapes_and_causality():
    torch.manual_seed(4)
    hm = HierarchicalStateManager(token_dim=8, state_dim=12, chunk_size=4, num_chunk_states=3,
                                  num_global_states=2, num_heads=2)
    tokens = torch.randn(2, 10, 8)
    out = hm(tokens)
    assert out["token_states"].shape == (2, 10, 12)
    assert out["chunk_states"].shape == (2, 3, 3, 12)  # ceil(10 / 4) chunk updates
    assert out["global_states"].shape == (2, 2, 12)
    t2 = tokens.clone()
    t2[:, 5] += 2.0  # chunk 1: chunk 0 states and all token states before it unchanged
    out2 = hm(t2)
    assert torch.allclose(out2["token_states"][:, :5], out["token_states"][:, :5])
    assert torch.allclose(out2["chunk_states"][:, 0], out["chunk_states"][:, 0])
    assert not torch.allclose(out2["chunk_states"][:, 1], out["chunk_states"][:, 1])
    assert not torch.allclose(out2["token_states"][:, 8:], out["token_states"][:, 8:])
    # a chunk of padding leaves chunk states alone; carrying global states changes the next call
    mask = torch.ones(2, 10)
    mask[:, 4:8] = 0
    out3 = hm(tokens, mask)
    assert torch.equal(out3["chunk_states"][:, 1], out3["chunk_states"][:, 0])
    out4 = hm(tokens, global_states=out["global_states"])
    assert not torch.allclose(out4["token_states"], out["token_states"])


@pytest.mark.parametrize("gate_type", ["gru", "lstm"])
def test_simple_nsm_shapes_and_learning(gate_type):
    torch.manual_seed(5)
    m = SimpleNSM(input_dim=784, state_dim=128, num_states=16, output_dim=10, gate_type=gate_type)
    assert m(torch.randn(3, 784)).shape == (3, 10)
    assert m(torch.randn(3, 4, 784)).shape == (3, 10)
    small = SimpleNSM(input_dim=6, state_dim=16, num_states=4, output_dim=2, gate_type=gate_type, num_heads=2)
    x = torch.randn(64, 3, 6)
    y = (x[:, :, 0].sum(1) > 0).long()
    opt = torch.optim.Adam(small.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(small(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 * first
    acc = (small(x).argmax(-1) == y).float().mean()
    assert acc > 0.8
    mask = torch.ones(64, 3)
    mask[:, 2] = 0  # a masked step changes nothing
    assert torch.allclose(small(x, mask), small(x[:, :2]), atol=1e-6)
