"""Mamba-2 adapter: the SSD scan as an exact per-head attention, hooks that change nothing, and a
decay intervention checked against the paper's recurrence (Dao & Gu 2024)."""
import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers",
                                   reason="the adapters need transformers (pip install 'pulse-workbench[adapters]')")
if int(transformers.__version__.split(".")[0]) < 5:
    pytest.skip(f"the Mamba-2 adapter needs transformers >= 5 (installed: {transformers.__version__})",
                allow_module_level=True)

from conftest import pair, record_all, tiny_mamba2  # noqa: E402

from probes.adapters import adapt  # noqa: E402
from pulse.hooks import hook_sites, installed_hooks  # noqa: E402


def capture_core(model):
    """The test's own hooks: in_proj's output and the gated norm's input y (the scan's output)."""
    store, handles = {}, []
    for i, block in enumerate(model.backbone.layers):
        mx = block.mixer
        handles.append(mx.in_proj.register_forward_hook(
            lambda m, a, o, i=i: store.setdefault(i, {}).update(proj=o.detach())))
        handles.append(mx.norm.register_forward_pre_hook(
            lambda m, a, i=i: store.setdefault(i, {}).update(y=a[0].detach())))
    return store, handles


def reference_ssd(mixer, proj, A):
    """Float64 loop per head: h_t = exp(Δ_t A_h) h_{t-1} + Δ_t x_t B_t^T, y_t = h_t C_t + D_h x_t,
    from in_proj's output through the causal depthwise conv + SiLU, written out here."""
    H, P, G, N = mixer.num_heads, mixer.head_dim, mixer.n_groups, mixer.ssm_state_size
    I, K = mixer.intermediate_size, mixer.conv_kernel_size
    b, T, _ = proj.shape
    proj = proj.double()
    xBC, dt_raw = proj[..., I:-H], proj[..., -H:]
    wconv, bconv = mixer.conv1d.weight.double()[:, 0], mixer.conv1d.bias.double()  # [ch, K]
    padded = F.pad(xBC, (0, 0, K - 1, 0))
    conv = torch.stack([(padded[:, t:t + K] * wconv.T).sum(1) for t in range(T)], 1) + bconv
    conv = conv * torch.sigmoid(conv)
    x = conv[..., :I].reshape(b, T, H, P)
    B = conv[..., I:I + G * N].reshape(b, T, G, N)
    C = conv[..., I + G * N:].reshape(b, T, G, N)
    dt = F.softplus(dt_raw + mixer.dt_bias.double())
    A, D = A.double(), mixer.D.detach().double()
    h = torch.zeros(b, H, P, N, dtype=torch.float64)
    ys = []
    for t in range(T):
        for hd in range(H):
            g = hd // (H // G)
            h[:, hd] = torch.exp(dt[:, t, hd] * A[hd])[:, None, None] * h[:, hd] + \
                dt[:, t, hd, None, None] * x[:, t, hd, :, None] * B[:, t, g, None, :]
        y = torch.stack([h[:, hd] @ C[:, t, hd // (H // G)].unsqueeze(-1) for hd in range(H)], 1)[..., 0]
        ys.append(y + D[None, :, None] * x[:, t])
    return torch.stack(ys, 1)  # [b, T, H, P]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("case", ["plain", "masked", "ssm_only"])
def test_implicit_attention_times_values_is_the_core_output(tokens, case):
    """ssm_only: no D skip and Δ about 1, so that the residual measures the scan itself (at random
    init the D x term dominates the core output)."""
    masked = case == "masked"
    model = tiny_mamba2()
    if case == "ssm_only":
        with torch.no_grad():
            for block in model.backbone.layers:
                block.mixer.D.zero_()
                block.mixer.dt_bias.fill_(0.5)
    store, handles = capture_core(model)
    adapter = adapt(model)
    mask = None
    if masked:
        mask = torch.ones_like(tokens)
        mask[0, :3] = 0
    results = adapter.implicit_attention(tokens, attention_mask=mask)
    for h in handles:
        h.remove()
    for r in results:
        assert r.matrix.shape == (2, 4, 12, 12) and r.layout == ("batch", "head", "pos", "src")
        assert torch.equal(r.actual.reshape(2, 12, 32), store[r.layer]["y"])
        assert torch.all(torch.triu(r.matrix, diagonal=1) == 0)
        assert r.residual <= 1e-5, r.residual
    sub = adapter.implicit_attention(tokens, attention_mask=mask, layers=[1], channels=[1, 3])[0]
    assert torch.allclose(sub.matrix, results[1].matrix[:, [1, 3]], rtol=0, atol=1e-12)


@pytest.mark.parametrize("full_state", [False, True])
def test_hooked_and_unhooked_forwards_agree_exactly(tokens, full_state):
    model, untouched = pair(tiny_mamba2)
    adapter = adapt(model, full_state=full_state)
    sites = hook_sites(model)
    assert sites["blocks.0.mixer.hook_decay"].layout == ("head",)
    assert sites["blocks.0.mixer.hook_x"].layout == ("batch", "pos", "head", "d_v")
    want = untouched(tokens).logits
    fns, seen = record_all(sites)
    with installed_hooks(model, fns):
        got = model(tokens).logits
    assert torch.equal(got, want) and set(seen) == set(sites)
    with pytest.warns(UserWarning, match="decoding steps"), installed_hooks(model, fns):
        g = model.generate(tokens[:, :5], max_new_tokens=3, do_sample=False)
    assert torch.equal(g, untouched.generate(tokens[:, :5], max_new_tokens=3, do_sample=False))
    adapter.remove()
    assert torch.equal(model(tokens).logits, want)


def test_decay_intervention_matches_an_independent_recurrence(tokens):
    """Scale A of head 2 of layer 0 by 10 (exp(A) -> exp(A)**10) through hook_decay."""
    model = tiny_mamba2()
    adapt(model, full_state=True)
    mixer = model.backbone.layers[0].mixer
    with torch.no_grad():
        mixer.dt_bias.fill_(0.5)  # Δ about 1 (random init: 0.001-0.1), so the decay matters
        mixer.D.zero_()
    hd = 2
    store, handles = capture_core(model)
    model(tokens)
    y0 = store[0]["y"].reshape(2, 12, 4, 8).clone()
    A = -torch.exp(mixer.A_log.detach().double())
    assert rel(y0, reference_ssd(mixer, store[0]["proj"], A)) <= 1e-5

    def shorten(decay, name):
        out = decay.clone()
        out[hd] = decay[hd] ** 10
        return out

    norms = {}
    with installed_hooks(model, {"blocks.0.mixer.hook_decay": shorten,
                                 "blocks.0.mixer.hook_core_out": lambda v, n: norms.update(y=v.clone())}):
        model(tokens)
    for h in handles:
        h.remove()
    A_short = A.clone()
    A_short[hd] *= 10
    y1 = store[0]["y"].reshape(2, 12, 4, 8)
    assert torch.equal(norms["y"], y1)
    assert rel(y1, reference_ssd(mixer, store[0]["proj"], A_short)) <= 1e-5
    others = [i for i in range(4) if i != hd]
    assert torch.allclose(y1[:, :, others], y0[:, :, others], rtol=1e-6, atol=1e-8)
    assert rel(y1[:, :, hd], y0[:, :, hd]) > 1e-2
