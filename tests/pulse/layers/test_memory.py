import math

import pytest
import torch

from pulse.layers.memory import KeyValueMemory, MemoryAugmentedLayer


def test_key_value_memory_api_of_the_original_readme():
    memory = KeyValueMemory(hidden_size=8, capacity=4)
    assert len(memory) == 0
    values, scores, idx = memory.read(torch.randn(8), top_k=5)
    assert values.shape == (1, 0, 8) and scores.shape == (1, 0) and idx.shape == (1, 0)
    emb = torch.randn(3, 8)
    memory.write(emb)
    values, scores, idx = memory.read(emb[1], top_k=5)
    assert values.shape == (1, 3, 8) and len(memory) == 3
    expected = (emb @ emb[1]) / math.sqrt(8)
    torch.testing.assert_close(scores[0], expected.sort(descending=True).values)
    torch.testing.assert_close(values[0], emb[idx[0]])


def test_key_value_memory_is_circular_and_clears():
    memory = KeyValueMemory(hidden_size=2, capacity=3)
    for i in range(5):
        memory.write(torch.tensor([float(i), 1.0]), torch.tensor([float(i), 0.0]))
    assert len(memory) == 3
    assert sorted(memory.values[:, 0].tolist()) == [2.0, 3.0, 4.0]  # the oldest two were overwritten
    memory.write(torch.arange(20.0).view(10, 2))  # a write larger than the capacity keeps the last rows
    assert sorted(memory.keys[:, 0].tolist()) == [14.0, 16.0, 18.0]
    memory.clear()
    assert len(memory) == 0


def test_key_value_memory_errors_name_the_argument():
    with pytest.raises(ValueError, match="capacity"):
        KeyValueMemory(hidden_size=4, capacity=0)
    memory = KeyValueMemory(hidden_size=4, capacity=2)
    with pytest.raises(ValueError, match="key"):
        memory.write(torch.randn(3))
    with pytest.raises(ValueError, match="top_k"):
        memory.read(torch.randn(4), top_k=0)


def reference_memory_layer(layer: MemoryAugmentedLayer, x: torch.Tensor, mask=None):
    """Token by token: read the top-k of the last C entries written before t, then write."""
    B, T, D = x.shape
    C, K = layer.capacity, layer.top_k
    q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
    reads = torch.zeros(B, T, D)
    for b in range(B):
        entries = []
        for t in range(T):
            if mask is not None and not mask[b, t]:
                continue
            visible = entries[-C:]
            if visible:
                keys = torch.stack([e[0] for e in visible])
                vals = torch.stack([e[1] for e in visible])
                scores = keys @ q[b, t] / math.sqrt(D)
                top, idx = scores.topk(min(K, len(visible)))
                reads[b, t] = (torch.softmax(top, 0)[:, None] * vals[idx]).sum(0)
            entries.append((k[b, t], v[b, t]))
    return layer.out_proj(reads)


@pytest.mark.parametrize("capacity,top_k,chunk", [(4, 2, 3), (8, 3, 16), (3, 5, 2)])
def test_memory_layer_matches_token_loop(capacity, top_k, chunk):
    layer = MemoryAugmentedLayer(6, capacity=capacity, top_k=top_k, chunk_size=chunk)
    x = torch.randn(2, 11, 6)
    delta, _ = layer(x)
    torch.testing.assert_close(delta, reference_memory_layer(layer, x), atol=1e-5, rtol=1e-5)


def test_memory_layer_is_causal_padding_aware_and_streams():
    layer = MemoryAugmentedLayer(6, capacity=4, top_k=2, chunk_size=4)
    x = torch.randn(2, 10, 6)
    full, _ = layer(x)
    x2 = x.clone()
    x2[:, 6] += 5.0
    changed, _ = layer(x2)
    torch.testing.assert_close(changed[:, :6], full[:, :6])  # nothing before t=6 can see it
    assert not torch.allclose(changed[:, 7:], full[:, 7:])
    a, st = layer(x[:, :3])
    b, _ = layer(x[:, 3:], state=st)
    torch.testing.assert_close(torch.cat([a, b], 1), full, atol=1e-6, rtol=1e-6)
    mask = torch.ones(2, 10)
    mask[0, :2] = 0
    mask[1, 4] = 0
    padded, _ = layer(x, mask)
    ref = reference_memory_layer(layer, x, mask.bool())
    torch.testing.assert_close(padded[mask.bool()], ref[mask.bool()], atol=1e-5, rtol=1e-5)


def test_read_hooks_flow_on():
    layer = MemoryAugmentedLayer(6, capacity=4, top_k=2, chunk_size=4)
    x = torch.randn(1, 9, 6)
    base, _ = layer(x)
    handle = layer.hook_read_weights.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    zeroed, _ = layer(x)
    handle.remove()
    torch.testing.assert_close(zeroed, torch.zeros_like(zeroed))
    # scores pushed to -inf except the first selected entry: each token reads its best match only
    def best_only(m, i, o):
        out = torch.full_like(o, float("-inf"))
        out[..., 0] = o[..., 0]
        return out
    handle = layer.hook_read_scores.register_forward_hook(best_only)
    best, _ = layer(x)
    handle.remove()
    one = MemoryAugmentedLayer(6, capacity=4, top_k=1, chunk_size=4)
    one.load_state_dict(layer.state_dict())
    torch.testing.assert_close(best, one(x)[0])
    assert not torch.allclose(best, base)
