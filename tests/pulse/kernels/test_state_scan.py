"""The vectorised inter-chunk scan and the chunked path at many chunks, against loops (CPU)."""

import pytest
import torch

from pulse.kernels import linear_attention_backend, set_linear_attention_backend
from pulse.layers.linear_attention import chunked_linear_attention, decayed_state_scan, feature_map


def loop_scan(dS, a, S0):
    S, starts = S0, []
    for n in range(dS.shape[2]):
        starts.append(S)
        S = torch.exp(a[:, :, n, None]) * S + dS[:, :, n]
    return torch.stack(starts, 2), S


@pytest.mark.parametrize("N", [1, 7, 64, 65, 300])
@pytest.mark.parametrize("group", [2, 8, 64])
def test_scan_equals_loop(N, group):
    g = torch.Generator().manual_seed(N * 100 + group)
    dS = torch.randn(2, 3, N, 5, generator=g, dtype=torch.float64)
    a = -3 * torch.rand(2, 3, N, generator=g, dtype=torch.float64)
    a[0, 0, : N // 2] = 0.0  # padding chunks: no decay
    S0 = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    starts, final = decayed_state_scan(dS, a, S0, group)
    ref_starts, ref_final = loop_scan(dS, a, S0)
    torch.testing.assert_close(starts, ref_starts, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(final, ref_final, atol=1e-12, rtol=1e-12)


def test_strong_decay_over_many_chunks_stays_finite():
    dS = torch.randn(1, 1, 500, 4)
    a = torch.full((1, 1, 500), -80.0)  # exp(-40000) overall: must underflow to 0, never inf/nan
    starts, final = decayed_state_scan(dS, a, torch.ones(1, 1, 4), 16)
    assert torch.isfinite(starts).all() and torch.isfinite(final).all()
    torch.testing.assert_close(final, dS[:, :, -1])


def test_chunked_with_hundreds_of_chunks_equals_recurrence():
    g = torch.Generator().manual_seed(1)
    B, H, T, d = 1, 2, 700, 4
    q = feature_map(torch.randn(B, H, T, d, generator=g, dtype=torch.float64))
    k = feature_map(torch.randn(B, H, T, d, generator=g, dtype=torch.float64))
    v = torch.randn(B, H, T, d, generator=g, dtype=torch.float64)
    ld = torch.log(torch.tensor([0.9, 0.999], dtype=torch.float64)).view(1, H, 1).expand(B, H, T)
    S0 = torch.randn(B, H, d, d, generator=g, dtype=torch.float64)
    z0 = torch.rand(B, H, d, generator=g, dtype=torch.float64)
    out, den, S_T, z_T = chunked_linear_attention(q, k, v, ld, S0, z0, 2, 1e-6)  # 350 chunks
    S, z = S0, z0
    outs = []
    for t in range(T):
        gamma = torch.exp(ld[:, :, t])
        S = gamma[..., None, None] * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        z = gamma[..., None] * z + k[:, :, t]
        outs.append((q[:, :, t, None, :] @ S).squeeze(-2) / ((q[:, :, t] * z).sum(-1)[..., None] + 1e-6))
    torch.testing.assert_close(out, torch.stack(outs, 2), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(S_T, S, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(z_T, z, atol=1e-10, rtol=1e-10)


def test_backend_choice_on_cpu_is_torch(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(1, 1, 4, 16)
    assert linear_attention_backend(x, x) == "torch"
    set_linear_attention_backend("torch")
    try:
        assert linear_attention_backend(x, x) == "torch"
    finally:
        set_linear_attention_backend(None)
    with pytest.raises(ValueError, match="name"):
        set_linear_attention_backend("cuda-magic")
    monkeypatch.setenv("PULSE_LA_BACKEND", "nope")
    with pytest.raises(ValueError, match="PULSE_LA_BACKEND"):
        linear_attention_backend(x, x)


def test_auto_picks_fused_kernel_on_cuda_when_usable(monkeypatch):
    import pulse.kernels as kernels

    monkeypatch.delenv("PULSE_LA_BACKEND", raising=False)
    monkeypatch.setattr(kernels, "_is_cuda", lambda t: True)  # pretend the tensors live on a GPU
    monkeypatch.setattr(kernels, "triton_available", lambda: True)
    x64, x24 = torch.randn(1, 1, 4, 64), torch.randn(1, 1, 4, 24)
    assert linear_attention_backend(x64, x64) == "triton"
    assert linear_attention_backend(x24, x64) == "torch"  # head dim not a power of two
    assert linear_attention_backend(torch.randn(1, 1, 4, 256), x64) == "torch"  # too wide
    monkeypatch.setenv("PULSE_LA_BACKEND", "torch")
    assert linear_attention_backend(x64, x64) == "torch"
    monkeypatch.delenv("PULSE_LA_BACKEND")
    set_linear_attention_backend("torch")
    try:
        assert linear_attention_backend(x64, x64) == "torch"
    finally:
        set_linear_attention_backend(None)
    monkeypatch.setattr(kernels, "triton_available", lambda: False)
    assert linear_attention_backend(x64, x64) == "torch"


def test_auto_stays_on_pytorch_path_on_cpu_and_under_compile(monkeypatch):
    import pulse.kernels as kernels

    monkeypatch.delenv("PULSE_LA_BACKEND", raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the interpreter is for tests, never chosen by auto
    monkeypatch.setattr(kernels, "triton_available", lambda: True)
    x = torch.randn(1, 1, 4, 64)
    assert linear_attention_backend(x, x) == "torch"
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setattr(kernels, "_is_cuda", lambda t: True)

    def pick(t):  # 1 where the fused kernel would run
        return t + (1.0 if linear_attention_backend(t, t) == "triton" else 0.0)

    assert pick(torch.zeros(1, 1, 4, 64)).sum().item() == 256  # eager: the fused kernel
    torch._dynamo.reset()
    compiled = torch.compile(pick, backend="eager", fullgraph=True)
    assert compiled(torch.zeros(1, 1, 4, 64)).sum().item() == 0  # traced: the PyTorch path
    torch._dynamo.reset()
