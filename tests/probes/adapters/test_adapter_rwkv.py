"""RWKV adapter: the WKV operator as an exact per-channel softmax attention, hooks that change
nothing, and a time-decay intervention checked against the paper's recurrence (Peng et al. 2023)."""
import math

import pytest
import torch

pytest.importorskip("transformers", reason="the adapters need transformers (pip install 'pulse-workbench[adapters]')")

from conftest import pair, record_all, tiny_rwkv  # noqa: E402

from probes.adapters import adapt  # noqa: E402
from probes.adapters.base import ReadOnlySiteError  # noqa: E402
from pulse.hooks import hook_sites, installed_hooks  # noqa: E402


def capture_core(model):
    """The test's own hooks on each time mixing's projections: k, v, receptance (pre-sigmoid)
    and the output projection's input."""
    store, handles = {}, []
    for i, block in enumerate(model.rwkv.blocks):
        att = block.attention
        for mod, key in ((att.key, "k"), (att.value, "v"), (att.receptance, "r")):
            handles.append(mod.register_forward_hook(
                lambda m, a, o, i=i, key=key: store.setdefault(i, {}).update({key: o.detach()})))
        handles.append(att.output.register_forward_pre_hook(
            lambda m, a, i=i: store.setdefault(i, {}).update(y=a[0].detach())))
    return store, handles


def reference_wkv(cap, w, u):
    """Float64 loop: a_t = e^-w a_{t-1} + e^k_t v_t, b_t likewise with 1;
    wkv_t = (a_{t-1} + e^{u+k_t} v_t) / (b_{t-1} + e^{u+k_t}); returns sigmoid(r) * wkv and (a, b)."""
    k, v, r = cap["k"].double(), cap["v"].double(), cap["r"].double()
    w, u = w.double(), u.double()
    a = torch.zeros_like(k[:, 0])
    b = torch.zeros_like(k[:, 0])
    outs, As, Bs = [], [], []
    for t in range(k.shape[1]):
        bonus = torch.exp(u + k[:, t])
        outs.append((a + bonus * v[:, t]) / (b + bonus))
        a = torch.exp(-w) * a + torch.exp(k[:, t]) * v[:, t]
        b = torch.exp(-w) * b + torch.exp(k[:, t])
        As.append(a)
        Bs.append(b)
    return torch.sigmoid(r) * torch.stack(outs, 1), torch.stack(As, 1), torch.stack(Bs, 1)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_implicit_attention_times_values_is_the_core_output(tokens):
    model = tiny_rwkv()
    store, handles = capture_core(model)
    adapter = adapt(model)
    results = adapter.implicit_attention(tokens)
    for h in handles:
        h.remove()
    for r in results:
        assert r.matrix.shape == (2, 16, 12, 12) and r.layout == ("batch", "channel", "pos", "src")
        assert torch.equal(r.actual, store[r.layer]["y"])
        assert torch.all(torch.triu(r.matrix, diagonal=1) == 0)
        assert torch.allclose(r.matrix.sum(-1), torch.ones(2, 16, 12, dtype=torch.float64))
        assert r.residual <= 1e-5, r.residual
        recon = torch.einsum("bcts,bsc->btc", r.matrix, store[r.layer]["v"].double())
        assert rel(recon * torch.sigmoid(store[r.layer]["r"].double()), store[r.layer]["y"]) <= 1e-5
    sub = adapter.implicit_attention(tokens, layers=[0], channels=[2])[0]
    assert torch.allclose(sub.matrix, results[0].matrix[:, [2]], rtol=0, atol=1e-12)


def test_hooked_and_unhooked_forwards_agree_exactly(tokens):
    model, untouched = pair(tiny_rwkv)
    adapter = adapt(model)
    sites = hook_sites(model)
    assert sites["blocks.0.mixer.hook_decay"].layout == ("channel",)
    assert sites["blocks.0.mixer.hook_receptance"].kind == "gate"
    assert sites["blocks.1.mixer.hook_state_num"].kind == "state"
    want = untouched(tokens).logits
    assert torch.equal(model(tokens).logits, want)
    fns, seen = record_all(sites)
    with installed_hooks(model, fns):
        got = model(tokens).logits
    assert torch.equal(got, want) and set(seen) == set(sites)
    # with a carried state (two calls) too
    with installed_hooks(model, fns):
        o1 = model(tokens[:, :7], use_cache=True)
        o2 = model(tokens[:, 7:], state=o1.state, use_cache=True)
    u1 = untouched(tokens[:, :7], use_cache=True)
    u2 = untouched(tokens[:, 7:], state=u1.state, use_cache=True)
    assert torch.equal(o2.logits, u2.logits)
    adapter.remove()
    assert not hook_sites(model) and torch.equal(model(tokens).logits, want)


def test_state_is_carried_across_calls(tokens):
    model = tiny_rwkv()
    adapt(model)
    parts, whole = [], []
    with installed_hooks(model, {"blocks.1.mixer.hook_state_den": lambda v, n: parts.append(v.clone())}):
        o = model(tokens[:, :7], use_cache=True)
        model(tokens[:, 7:], state=o.state, use_cache=True)
    with installed_hooks(model, {"blocks.1.mixer.hook_state_den": lambda v, n: whole.append(v.clone())}):
        model(tokens, use_cache=False)
    assert torch.allclose(torch.cat(parts, 1), whole[0], rtol=1e-5)


def test_decay_intervention_matches_an_independent_recurrence(tokens):
    """Set channel c of layer 0 to a one-token half-life (decay 1/2 per token) through
    hook_decay: the core output and the state equal the float64 reference recurrence."""
    model = tiny_rwkv()
    adapter = adapt(model)
    att = model.rwkv.blocks[0].attention
    c = 2  # time_decay -3.05: a half-life of about 15 tokens before
    store, handles = capture_core(model)
    base = model(tokens).logits
    y0 = store[0]["y"].clone()
    w = torch.exp(att.time_decay.detach().double())
    assert adapter.decay_table()[0]["half_life"][c] > 10
    y_plain, _, _ = reference_wkv(store[0], w, att.time_first.detach())
    assert rel(y0, y_plain) <= 1e-5

    def one_token(decay, name):
        out = decay.clone()
        out[c] = 0.5
        return out

    got = {}
    with installed_hooks(model, {"blocks.0.mixer.hook_decay": one_token,
                                 "blocks.0.mixer.hook_state_num": lambda v, n: got.update(a=v.clone()),
                                 "blocks.0.mixer.hook_state_den": lambda v, n: got.update(b=v.clone())}):
        logits = model(tokens).logits
    for h in handles:
        h.remove()
    w_short = w.clone()
    w_short[c] = math.log(2.0)
    y_ref, a_ref, b_ref = reference_wkv(store[0], w_short, att.time_first.detach())
    y1 = store[0]["y"]
    assert rel(y1, y_ref) <= 1e-5
    assert rel(got["a"], a_ref) <= 1e-5 and rel(got["b"], b_ref) <= 1e-5
    others = [i for i in range(16) if i != c]
    assert torch.equal(y1[..., others], y0[..., others])
    assert rel(y1[..., c], y0[..., c]) > 1e-2
    assert not torch.allclose(logits, base)
    assert torch.equal(torch.exp(att.time_decay.detach().double()), w)  # parameter restored


def test_time_first_and_key_interventions_flow_on(tokens):
    model = tiny_rwkv()
    adapt(model)
    att = model.rwkv.blocks[0].attention
    store, handles = capture_core(model)
    u_new = torch.full((16,), -2.0)
    with installed_hooks(model, {"blocks.0.mixer.hook_time_first": lambda v, n: u_new,
                                 "blocks.0.mixer.hook_key": lambda v, n: v * 0.5}):
        model(tokens)
    for h in handles:
        h.remove()
    # the test's hook (installed first) saw the key projection's own output, before the halving
    cap = dict(store[0], k=store[0]["k"] * 0.5)
    y_ref, _, _ = reference_wkv(cap, torch.exp(att.time_decay.detach()), u_new)
    assert rel(store[0]["y"], y_ref) <= 1e-5
    with pytest.raises(ReadOnlySiteError, match="hook_receptance"):
        with installed_hooks(model, {"blocks.0.mixer.hook_receptance": lambda v, n: v * 0}):
            model(tokens)
