"""The fused Triton kernel against the PyTorch chunked path: forward, every gradient, state.

On a CUDA machine with Triton this runs the compiled kernel (true fp32 dots, ``ieee``, and
the default tf32 at a looser tolerance). Without CUDA but with Triton installed it runs the
same kernels in Triton's CPU interpreter (TRITON_INTERPRET=1, set before the import).
Without Triton it is skipped (the project's CPU install does not carry Triton).
"""

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"  # before Triton is imported
triton = pytest.importorskip("triton")

from pulse.kernels.linear_attention_triton import fused_linear_attention  # noqa: E402
from pulse.layers.linear_attention import LinearAttention, chunked_linear_attention, feature_map  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"


def inputs(B, H, T, dk, dv, seed, padding=False):
    g = torch.Generator().manual_seed(seed)
    q = feature_map(torch.randn(B, H, T, dk, generator=g))
    k = feature_map(torch.randn(B, H, T, dk, generator=g))
    v = torch.randn(B, H, T, dv, generator=g)
    ld = torch.log(torch.rand(H, generator=g) * 0.3 + 0.69).view(1, H, 1).expand(B, H, T).clone()
    if padding:
        real = torch.ones(B, T)
        real[0, : T // 3] = 0
        real[-1, -5:] = 0
        k = k * real[:, None, :, None]
        ld = ld * real[:, None, :]
    S0 = torch.randn(B, H, dk, dv, generator=g) * 0.1
    z0 = torch.rand(B, H, dk, generator=g)
    return [t.to(DEVICE).requires_grad_() for t in (q, k, v, ld, S0, z0)]


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


CASES = [(2, 2, 45, 16, 16, 16, False), (1, 3, 64, 16, 32, 16, True), (2, 1, 100, 32, 16, 32, True)]
if CUDA:
    CASES += [(2, 12, 1000, 64, 64, 64, True), (1, 4, 8192, 64, 64, 64, False)]


@pytest.mark.parametrize("B,H,T,dk,dv,chunk,padding", CASES)
@pytest.mark.parametrize("precision", ["ieee", "tf32"] if CUDA else ["ieee"])
def test_fused_equals_pytorch_path(B, H, T, dk, dv, chunk, padding, precision):
    x = inputs(B, H, T, dk, dv, seed=T + dk, padding=padding)
    fused = fused_linear_attention(*x, 1e-6, chunk, precision=precision)
    ref = chunked_linear_attention(*x, 64, 1e-6)
    tol = 1e-5 if precision == "ieee" else 5e-3
    for name, a, b in zip(("out", "den", "S_T", "z_T"), fused, ref):
        assert rel(a, b) < tol, name
    g = torch.Generator().manual_seed(7)
    weights = [torch.randn(t.shape, generator=g).to(DEVICE) for t in ref]
    grads_f = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, fused)), x)
    grads_r = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, ref)), x)
    for name, a, b in zip(("q", "k", "v", "log_decay", "S0", "z0"), grads_f, grads_r):
        assert torch.isfinite(a).all(), name
        assert rel(a, b) < (10 * tol), name


def test_layer_uses_fused_path_and_matches(monkeypatch):
    torch.manual_seed(0)
    layer = LinearAttention(hidden_size=64, num_heads=2, chunk_size=16).to(DEVICE)
    x = torch.randn(2, 40, 64, device=DEVICE)
    mask = torch.ones(2, 40, device=DEVICE)
    mask[1, :7] = 0
    monkeypatch.setenv("PULSE_LA_BACKEND", "triton")
    monkeypatch.setenv("PULSE_LA_PRECISION", "ieee")
    out_f, st_f = layer(x, mask)
    out_f.square().sum().backward()
    grads_f = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    monkeypatch.setenv("PULSE_LA_BACKEND", "torch")
    out_r, st_r = layer(x, mask)
    out_r.square().sum().backward()
    assert rel(out_f, out_r) < 1e-5
    assert rel(st_f["S"], st_r["S"]) < 1e-5
    for a, p in zip(grads_f, layer.parameters()):
        assert rel(a, p.grad) < 1e-4


@pytest.mark.skipif(not CUDA, reason="auto picks the fused kernel only on CUDA")
def test_auto_backend_is_fused_on_cuda(monkeypatch):
    from pulse.kernels import linear_attention_backend

    monkeypatch.delenv("PULSE_LA_BACKEND", raising=False)
    x = inputs(1, 2, 64, 64, 64, seed=0)
    assert linear_attention_backend(x[0], x[2]) == "triton"
