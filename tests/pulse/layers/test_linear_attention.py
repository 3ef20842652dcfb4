import math

import pytest
import torch

from pulse.layers.linear_attention import (
    LinearAttention,
    chunked_linear_attention,
    decayed_state_scan,
    feature_map,
    recurrent_linear_attention_step,
    sequential_state_scan,
)


def explicit_attention(q, k, v, gamma, eps, mask=None):
    """The n x n reference: A[t, s] = gamma^(#real tokens in (s, t]) phi(q_t).phi(k_s), s <= t."""
    B, H, T, _ = q.shape
    real = torch.ones(B, T) if mask is None else mask.float()
    k = k * real[:, None, :, None]
    steps = real.cumsum(1)  # number of real tokens up to and including t
    dist = steps[:, :, None] - steps[:, None, :]  # [B, T, T] decay exponent for (t, s)
    causal = torch.ones(T, T).tril().bool()
    A = torch.einsum("bhtd,bhsd->bhts", q, k)
    decay = gamma.view(1, H, 1, 1) ** dist[:, None].clamp(min=0)
    A = torch.where(causal, A * decay, torch.zeros(()))
    num = A @ v
    den = A.sum(-1)
    return num / (den[..., None] + eps), den


def random_inputs(B=2, H=3, T=20, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = feature_map(torch.randn(B, H, T, d, generator=g))
    k = feature_map(torch.randn(B, H, T, d, generator=g))
    v = torch.randn(B, H, T, d, generator=g)
    gamma = torch.tensor([0.5, 0.9, 0.99])[:H]
    return q, k, v, gamma


def recurrent_reference(q, k, v, log_decay, S0, z0, eps=1e-6):
    S, z, outs, dens = S0, z0, [], []
    for t in range(q.shape[2]):
        o, n, S, z = recurrent_linear_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], log_decay[:, :, t], S, z, eps)
        outs.append(o)
        dens.append(n)
    return torch.stack(outs, 2), torch.stack(dens, 2), S, z


@pytest.mark.parametrize("T", [1, 5, 16, 17, 48, 50])
@pytest.mark.parametrize("chunk", [1, 4, 16])
def test_chunked_equals_recurrent_equals_explicit(T, chunk):
    q, k, v, gamma = random_inputs(T=T)
    B, H, _, d = q.shape
    log_decay = torch.log(gamma).view(1, H, 1).expand(B, H, T)
    S0, z0 = torch.zeros(B, H, d, d), torch.zeros(B, H, d)
    out_c, den_c, S_c, z_c = chunked_linear_attention(q, k, v, log_decay, S0, z0, chunk, 1e-6)
    out_r, den_r, S, z = recurrent_reference(q, k, v, log_decay, S0, z0)
    out_e, den_e = explicit_attention(q, k, v, gamma, 1e-6)
    torch.testing.assert_close(out_c, out_e, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_r, out_e, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(den_c, den_e, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(S_c, S, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(z_c, z, atol=1e-4, rtol=1e-5)


def test_padding_has_decay_one_and_no_write():
    q, k, v, gamma = random_inputs(T=12)
    B, H, T, d = q.shape
    mask = torch.ones(B, T)
    mask[0, :3] = 0  # left padding
    mask[1, 5] = 0  # a hole
    mask[1, -2:] = 0  # right padding
    log_decay = torch.log(gamma).view(1, H, 1) * mask[:, None, :]
    kk = k * mask[:, None, :, None]
    out, den, _, _ = chunked_linear_attention(q, kk, v, log_decay, torch.zeros(B, H, d, d), torch.zeros(B, H, d), 4, 1e-6)
    ref, _ = explicit_attention(q, k, v, gamma, 1e-6, mask)
    real = mask.bool()
    torch.testing.assert_close(out.transpose(1, 2)[real], ref.transpose(1, 2)[real], atol=1e-5, rtol=1e-5)


def padded_float64_inputs(T=23, seed=3):
    g = torch.Generator().manual_seed(seed)
    B, H, d = 2, 3, 4
    q = feature_map(torch.randn(B, H, T, d, generator=g, dtype=torch.float64))
    k = feature_map(torch.randn(B, H, T, d, generator=g, dtype=torch.float64))
    v = torch.randn(B, H, T, d, generator=g, dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.float64)
    mask[0, :4] = 0
    mask[1, 9] = 0
    log_decay = torch.log(torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)).view(1, H, 1) * mask[:, None, :]
    k = k * mask[:, None, :, None]
    S0 = torch.randn(B, H, d, d, generator=g, dtype=torch.float64)
    z0 = torch.rand(B, H, d, generator=g, dtype=torch.float64)
    return q, k, v, log_decay, S0, z0


@pytest.mark.parametrize("N", [1, 9, 70])
def test_sequential_scan_equals_matrix_scan(N):
    g = torch.Generator().manual_seed(N)
    dS = torch.randn(2, 3, N, 5, generator=g, dtype=torch.float64)
    a = -3 * torch.rand(2, 3, N, generator=g, dtype=torch.float64)
    a[0, 0, : N // 2] = 0.0  # padding chunks: no decay
    S0 = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    starts, final = sequential_state_scan(dS, a, S0)
    ref_starts, ref_final = decayed_state_scan(dS, a, S0, 8)
    torch.testing.assert_close(starts, ref_starts, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(final, ref_final, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("chunk", [1, 5, 8])
def test_chunked_gradients_equal_recurrent_gradients(chunk):
    """The autograd form (out of place, matrix scan) against backprop through the per-token loop."""
    inputs = [t.requires_grad_() for t in padded_float64_inputs()]
    weights = [torch.randn_like(t) for t in recurrent_reference(*inputs)]

    def grads(fn):
        outs = fn(*inputs)
        return torch.autograd.grad(sum((w * o).sum() for w, o in zip(weights, outs)), inputs)

    fast = grads(lambda *x: chunked_linear_attention(*x, chunk, 1e-6))
    slow = grads(recurrent_reference)
    for name, a, b in zip(("q", "k", "v", "log_decay", "S0", "z0"), fast, slow):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9, msg=lambda m, name=name: f"d{name}: {m}")


def test_chunked_without_autograd_equals_with_autograd():
    """No grad: intermediates updated in place and the sequential scan; must match the autograd form."""
    inputs = padded_float64_inputs(T=41)
    with torch.no_grad():
        plain = chunked_linear_attention(*inputs, 8, 1e-6)
    tracked = chunked_linear_attention(*[t.clone().requires_grad_() for t in inputs], 8, 1e-6)
    reference = recurrent_reference(*inputs)
    for a, b, c in zip(plain, tracked, reference):
        torch.testing.assert_close(a, b.detach(), atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(a, c, atol=1e-12, rtol=1e-12)


def test_layer_modes_agree_and_carry_state():
    layer = LinearAttention(hidden_size=24, num_heads=3, chunk_size=8)
    x = torch.randn(2, 29, 24)
    out_c, st_c = layer(x, mode="chunked")
    out_r, st_r = layer(x, mode="recurrent")
    torch.testing.assert_close(out_c, out_r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(st_c["S"], st_r["S"], atol=1e-4, rtol=1e-5)
    a, st = layer(x[:, :11])
    b, _ = layer(x[:, 11:], state=st)
    torch.testing.assert_close(torch.cat([a, b], 1), out_c, atol=1e-5, rtol=1e-5)


def test_normalizer_intervention_changes_the_division():
    """Replacing hook_normalizer's value n_t makes the output num_t / (n_t' + eps)."""
    layer = LinearAttention(hidden_size=12, num_heads=3, chunk_size=4).double()
    x = torch.randn(2, 10, 12, dtype=torch.float64)
    seen = {}
    layer.hook_out.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    layer.hook_normalizer.register_forward_hook(lambda m, i, o: seen.__setitem__("den", o))
    layer(x)
    num = seen["out"] * (seen["den"] + layer.eps)[..., None]  # numerator phi(q_t) S_t
    handle = layer.hook_normalizer.register_forward_hook(lambda m, i, o: 3.0 * o + 0.5)
    layer(x)
    handle.remove()
    torch.testing.assert_close(seen["out"], num / (3.0 * seen["den"] + 0.5 + layer.eps)[..., None])
    assert not torch.allclose(seen["out"], num / (seen["den"] + layer.eps)[..., None])


def test_bad_mode_is_named():
    layer = LinearAttention(hidden_size=8, num_heads=2)
    with pytest.raises(ValueError, match="mode"):
        layer(torch.randn(1, 3, 8), mode="fast")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_long_sequence_stays_finite_in_half_precision(dtype):
    layer = LinearAttention(hidden_size=16, num_heads=2, chunk_size=64, half_life_min=1.0, half_life_max=2.0).to(dtype)
    x = torch.randn(1, 4096, 16).to(dtype)
    out, state = layer(x)
    assert torch.isfinite(out).all()
    assert torch.isfinite(state["S"]).all()


def test_initial_half_lives_are_spread():
    layer = LinearAttention(hidden_size=16, num_heads=4, half_life_min=4, half_life_max=256)
    half_lives = math.log(0.5) / torch.log(layer.decay())
    torch.testing.assert_close(half_lives, torch.tensor([4.0, 16.0, 64.0, 256.0]), rtol=1e-3, atol=1e-3)
