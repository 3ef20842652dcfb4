import pytest
import torch

from pulse.layers.attention import GroupedQueryAttention, MultiHeadAttention
from pulse.layers.rotary import RotaryEmbedding, apply_rotary_pos_emb


def naive_attention(layer: GroupedQueryAttention, x: torch.Tensor) -> torch.Tensor:
    B, T, D = x.shape
    H, Hkv, hd = layer.num_heads, layer.num_kv_heads, layer.head_dim
    q = layer.q_proj(x).view(B, T, H, hd).transpose(1, 2)
    k = layer.k_proj(x).view(B, T, Hkv, hd).transpose(1, 2)
    v = layer.v_proj(x).view(B, T, Hkv, hd).transpose(1, 2)
    cos, sin = layer.rotary(torch.arange(T).expand(B, T))
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = k.repeat_interleave(H // Hkv, 1)
    v = v.repeat_interleave(H // Hkv, 1)
    scores = (q @ k.transpose(-1, -2)) / hd**0.5
    scores = scores.masked_fill(~torch.ones(T, T).tril().bool(), float("-inf"))
    out = scores.softmax(-1) @ v
    return layer.o_proj(out.transpose(1, 2).reshape(B, T, D))


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_matches_naive_and_kv_cache(kv_heads):
    layer = GroupedQueryAttention(16, 4, kv_heads)
    x = torch.randn(2, 9, 16)
    full, _ = layer(x)
    torch.testing.assert_close(full, naive_attention(layer, x), atol=1e-5, rtol=1e-5)
    out, cache = layer(x[:, :4])
    steps = [out]
    for t in range(4, 9):
        o, cache = layer(x[:, t : t + 1], state=cache)
        steps.append(o)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_left_padding_invariance():
    layer = MultiHeadAttention(8, 2)
    x = torch.randn(1, 5, 8)
    ref, _ = layer(x)
    xp = torch.cat([torch.randn(1, 2, 8), x], 1)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1]])
    out, _ = layer(xp, mask)
    torch.testing.assert_close(out[:, 2:], ref, atol=1e-5, rtol=1e-5)


def test_rotary_preserves_norm_and_relative_angle():
    rot = RotaryEmbedding(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    def dot(pq, pk):
        cq, sq = rot(torch.tensor([[pq]]))
        ck, sk = rot(torch.tensor([[pk]]))
        rq, _ = apply_rotary_pos_emb(q, q, cq, sq)
        rk, _ = apply_rotary_pos_emb(k, k, ck, sk)
        return (rq * rk).sum()
    torch.testing.assert_close(dot(3, 1), dot(10, 8), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="head_dim"):
        RotaryEmbedding(7)
