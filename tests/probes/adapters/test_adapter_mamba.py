"""Mamba-1 adapter: exact implicit attention, hooks that change nothing, decay interventions
checked against an independent recurrence (Gu & Dao 2023, eq. 2)."""
import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers", reason="the adapters need transformers (pip install 'pulse-workbench[adapters]')")

from conftest import pair, record_all, tiny_mamba  # noqa: E402

from probes.adapters import adapt  # noqa: E402
from probes.adapters.base import ReadOnlySiteError  # noqa: E402
from pulse.hooks import hook_sites, installed_hooks  # noqa: E402


def capture_core(model):
    """The test's own forward hooks on each HF mixer's submodules: z, x (x_proj's input),
    (dt_raw, B, C) (x_proj's output) and y (out_proj's input). Independent of the adapter."""
    store, handles = {}, []
    for i, block in enumerate(model.backbone.layers):
        mx = block.mixer
        C = mx.intermediate_size
        handles.append(mx.in_proj.register_forward_hook(
            lambda m, a, o, i=i, C=C: store.setdefault(i, {}).update(z=o[..., C:].detach())))
        handles.append(mx.x_proj.register_forward_hook(
            lambda m, a, o, i=i: store.setdefault(i, {}).update(x=a[0].detach(), proj=o.detach())))
        handles.append(mx.out_proj.register_forward_pre_hook(
            lambda m, a, i=i: store.setdefault(i, {}).update(y=a[0].detach())))
    return store, handles


def reference_scan(mixer, cap, A):
    """Float64 loop of h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t, y_t = C_t h_t + D x_t, times silu(z)."""
    R, N = mixer.time_step_rank, mixer.ssm_state_size
    ts, B, C = torch.split(cap["proj"].double(), [R, N, N], dim=-1)
    dt = F.softplus(ts @ mixer.dt_proj.weight.double().T + mixer.dt_proj.bias.double())
    x, z, A, D = cap["x"].double(), cap["z"].double(), A.double(), mixer.D.detach().double()
    h = torch.zeros(x.shape[0], x.shape[2], N, dtype=torch.float64)
    ys, hs = [], []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + dt[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None]
        hs.append(h)
        ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])
    y = torch.stack(ys, 1) * (z * torch.sigmoid(z))
    return y, torch.stack(hs, 1)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("case", ["plain", "masked", "ssm_only"])
def test_implicit_attention_times_values_is_the_core_output(tokens, case):
    """ssm_only: no D skip and Δ about 1, so that the residual measures the scan itself (at random
    init the D x term dominates the core output)."""
    masked = case == "masked"
    model = tiny_mamba()
    if case == "ssm_only":
        with torch.no_grad():
            for block in model.backbone.layers:
                block.mixer.D.zero_()
                block.mixer.dt_proj.bias.fill_(0.5)
    store, handles = capture_core(model)
    adapter = adapt(model)
    mask = None
    if masked:
        mask = torch.ones_like(tokens)
        mask[1, :4] = 0  # left padding
    results = adapter.implicit_attention(tokens, attention_mask=mask)
    for h in handles:
        h.remove()
    assert [r.layer for r in results] == [0, 1]
    for r in results:
        assert r.matrix.shape == (2, 32, 12, 12) and r.matrix.dtype == torch.float64
        assert r.layout == ("batch", "channel", "pos", "src")
        assert torch.equal(r.actual, store[r.layer]["y"])  # the HF module's own value
        assert torch.all(torch.triu(r.matrix, diagonal=1) == 0)  # causal
        assert r.residual <= 1e-5, r.residual
        recon = torch.einsum("bcts,bsc->btc", r.matrix, r.values.double()) * r.gate
        assert rel(recon, store[r.layer]["y"]) <= 1e-5
    # a channel subset is the same rows of the full matrix
    sub = adapter.implicit_attention(tokens, attention_mask=mask, layers=[1], channels=[3, 7])[0]
    assert torch.allclose(sub.matrix, results[1].matrix[:, [3, 7]], rtol=0, atol=1e-12)
    assert sub.residual <= 1e-5


@pytest.mark.parametrize("full_state", [False, True])
def test_hooked_and_unhooked_forwards_agree_exactly(tokens, full_state):
    model, untouched = pair(tiny_mamba)
    adapter = adapt(model, full_state=full_state)
    sites = hook_sites(model)
    names = {n.split(".")[-1] for n in sites}
    assert {"hook_decay", "hook_gate", "hook_x", "hook_B", "hook_C", "hook_dt", "hook_core_out",
            "hook_state_norm", "hook_out"} <= names
    assert ("hook_state" in names) == full_state
    assert sites["blocks.1.mixer.hook_decay"].layout == ("channel", "d_k")
    assert sites["blocks.1.mixer.hook_decay"].kind == "decay"
    assert sites["blocks.0.mixer.hook_state_norm"].kind == "state"
    want = untouched(tokens).logits
    assert torch.equal(model(tokens).logits, want)  # adapted, nothing hooked
    fns, seen = record_all(sites)
    with installed_hooks(model, fns):
        got = model(tokens).logits
    assert torch.equal(got, want)
    assert set(seen) == set(sites)
    assert seen["blocks.0.mixer.hook_x"][0].shape == (2, 12, 32)
    assert seen["blocks.0.mixer.hook_state_norm"][0].shape == (2, 12, 32)
    # generation (prefill, then one-token steps on the cache) is unchanged too
    with installed_hooks(model, fns):
        g = model.generate(tokens[:, :5], max_new_tokens=4, do_sample=False)
    assert torch.equal(g, untouched.generate(tokens[:, :5], max_new_tokens=4, do_sample=False))
    adapter.remove()
    assert not hook_sites(model) and torch.equal(model(tokens).logits, want)


def test_state_over_decoding_steps_continues_the_prefill_state(tokens):
    """The one-token steps read the cache's state: their state norms are those of one long forward."""
    model = tiny_mamba()
    adapt(model)
    steps = []
    with installed_hooks(model, {"blocks.1.mixer.hook_state_norm": lambda v, n: steps.append(v.clone())}):
        g = model.generate(tokens[:, :5], max_new_tokens=4, do_sample=False)
    full = []
    with installed_hooks(model, {"blocks.1.mixer.hook_state_norm": lambda v, n: full.append(v.clone())}):
        model(g[:, :-1], use_cache=False)
    stepped = torch.cat(steps, 1)
    assert [s.shape[1] for s in steps] == [5, 1, 1, 1]
    assert torch.allclose(stepped, full[0], rtol=1e-5, atol=1e-7)


def test_decay_intervention_matches_an_independent_recurrence(tokens):
    """Scale A of one channel of layer 0 by 10 through hook_decay (exp(A) -> exp(A)**10, a
    tenfold shorter half-life): the core output equals the float64 reference loop's, other
    channels do not move, and the state hook shows the reference's states."""
    model = tiny_mamba()
    adapter = adapt(model, full_state=True)
    mixer = model.backbone.layers[0].mixer
    with torch.no_grad():  # steps of about one unit (random init: Δ ~ 0.001-0.1) and no D skip, which
        mixer.dt_proj.bias.fill_(0.5)  # would dwarf C.h at random init: the state is what is seen
        mixer.D.zero_()
    c = 5
    store, handles = capture_core(model)
    base = model(tokens).logits
    y0 = store[0]["y"].clone()

    def shorten(decay, name):
        out = decay.clone()
        out[c] = decay[c] ** 10
        return out

    states = {}
    with installed_hooks(model, {"blocks.0.mixer.hook_decay": shorten,
                                 "blocks.0.mixer.hook_state": lambda v, n: states.update(h=v.clone())}):
        logits = model(tokens).logits
    for h in handles:
        h.remove()
    A = -torch.exp(mixer.A_log.detach().double())
    A_short = A.clone()
    A_short[c] *= 10
    y_ref, h_ref = reference_scan(mixer, store[0], A_short)
    y1 = store[0]["y"]
    assert rel(y1, y_ref) <= 1e-5
    assert rel(states["h"], h_ref) <= 1e-5
    others = [i for i in range(y1.shape[-1]) if i != c]
    assert torch.equal(y1[..., others], y0[..., others])  # exact: the other channels' A is untouched
    assert rel(y1[..., c], y0[..., c]) > 1e-2  # and the intervention did something
    assert not torch.allclose(logits, base)
    # the parameter itself is back
    assert torch.equal(-torch.exp(mixer.A_log.detach().double()), A)
    # layer 0's inputs are the same in both runs: with A itself the reference gives the plain core
    y_plain, _ = reference_scan(mixer, store[0], A)
    assert rel(y0, y_plain) <= 1e-5
    # half-lives: ln 2 / (Δ |A|) at rest
    table = adapter.decay_table()[0]
    rest = F.softplus(mixer.dt_proj.bias.detach().double())
    assert torch.allclose(table["half_life"], math.log(2) / (rest[:, None] * -A))


def test_writable_and_read_only_sites(tokens):
    model = tiny_mamba()
    adapt(model)
    # zeroing C zeroes the scan except the D x skip: core output = D x silu(z)
    got = {}
    with installed_hooks(model, {"blocks.0.mixer.hook_C": lambda v, n: torch.zeros_like(v),
                                 "blocks.0.mixer.hook_x": lambda v, n: got.update(x=v.clone()),
                                 "blocks.0.mixer.hook_gate": lambda v, n: got.update(g=v.clone()),
                                 "blocks.0.mixer.hook_core_out": lambda v, n: got.update(y=v.clone())}):
        model(tokens)
    D = model.backbone.layers[0].mixer.D.detach()
    assert torch.allclose(got["y"], D * got["x"] * got["g"], rtol=1e-5, atol=1e-7)
    # replacing the mixer's output flows on
    with installed_hooks(model, {f"blocks.{i}.mixer.hook_out": lambda v, n: torch.zeros_like(v) for i in (0, 1)}):
        zeroed = model(tokens).logits
    emb = model.backbone.norm_f(model.backbone.embeddings(tokens))
    assert torch.allclose(zeroed, model.lm_head(emb), atol=1e-6)
    with pytest.raises(ReadOnlySiteError, match=r"blocks\.0\.mixer\.hook_x: read-only"):
        with installed_hooks(model, {"blocks.0.mixer.hook_x": lambda v, n: v * 2}):
            model(tokens)
    # nothing stays installed after the error
    assert torch.equal(model(tokens).logits, model(tokens).logits)
