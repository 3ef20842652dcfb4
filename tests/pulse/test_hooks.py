"""The hook contract: every site declares its layout and kind, and the declarations hold.

Each model family runs with a hook on every site; every value's ndim must equal the length
of its declared layout and every named axis must have the size it names (batch, pos = T,
head = num_heads, ...). Plus the one way to install hooks (``installed_hooks``): hooks go
away in ``finally``, replacements flow on, hooked and unhooked forwards agree exactly.
"""

import pytest
import torch
from torch import nn

from pulse import LegacyPulseConfig, LegacyPulseForCausalLM, PulseConfig, PulseForCausalLM
from pulse.hooks import AXES, KINDS, HookPoint, HookSite, hook_points, hook_sites, installed_hooks, step_axis
from pulse.transformer import TransformerConfig, TransformerForCausalLM

B, T = 2, 11


def _pulse(**kw):
    values = dict(vocab_size=40, hidden_size=32, num_layers=2, num_heads=2, chunk_size=4, conv_kernel_size=3,
                  memory_capacity=6, memory_top_k=2)
    values.update(kw)
    return PulseForCausalLM(PulseConfig(**values))


BANK = dict(num_states=4, state_dim=16, state_num_heads=2, max_states=5)


def _pulse_sizes(c):
    return {"batch": B, "pos": T, "update": T // c.chunk_size, "head": c.num_heads, "d_model": c.hidden_size,
            "d_k": c.hidden_size // c.num_heads, "d_v": c.hidden_size // c.num_heads,
            "d_ff": c.resolved_intermediate_size, "slot": c.resolved_max_states, "key_slot": c.resolved_max_states,
            "state_head": c.state_num_heads, "d_state": c.resolved_state_dim,
            "rank": min(c.memory_top_k, c.memory_capacity)}


def _legacy_sizes(c):
    return {"batch": B, "pos": T, "update": T // c.state_chunk_size, "head": c.num_heads, "kv_head": c.num_kv_heads,
            "d_model": c.hidden_size, "d_k": c.hidden_size // c.num_heads, "d_v": c.hidden_size // c.num_heads,
            "d_ff": c.resolved_intermediate_size, "slot": c.num_states, "key_slot": c.num_states,
            "state_head": c.state_num_heads, "d_state": c.resolved_state_dim}


def _transformer_sizes(c):
    return {"batch": B, "pos": T, "head": c.num_heads, "kv_head": c.num_kv_heads or c.num_heads,
            "d_model": c.hidden_size, "d_k": c.hidden_size // c.num_heads, "d_v": c.hidden_size // c.num_heads,
            "d_ff": c.resolved_intermediate_size}


FAMILIES = {
    "pulse_everything_gru": lambda: _pulse(use_memory=True, use_recurrent_state=True, **BANK),
    "pulse_everything_lstm": lambda: _pulse(use_memory=True, use_recurrent_state=True, state_gate_type="lstm",
                                            **BANK),
    "pulse_bank_only": lambda: _pulse(use_linear_attention=False, state_communication=False, **BANK),
    "legacy_v1": lambda: LegacyPulseForCausalLM(LegacyPulseConfig(
        vocab_size=40, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, num_states=4, state_dim=16,
        state_num_heads=2, state_chunk_size=4)),
    "transformer": lambda: TransformerForCausalLM(TransformerConfig(
        vocab_size=40, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2)),
}


def _sizes(model):
    if isinstance(model, PulseForCausalLM):
        return _pulse_sizes(model.config)
    if isinstance(model, LegacyPulseForCausalLM):
        return _legacy_sizes(model.config)
    return _transformer_sizes(model.config)


def _never_fire(model):
    """Sites that exist but carry nothing for this config (slot attention without communication)."""
    cfg = model.config
    if getattr(cfg, "state_communication", True) is False:
        return {n for n in hook_sites(model) if n.endswith("states.hook_slot_attention")}
    return set()


@torch.no_grad()
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_declared_layouts_match_the_tensors(family):
    torch.manual_seed(0)
    model = FAMILIES[family]().eval()
    sites = hook_sites(model)
    assert sites and all(isinstance(s, HookSite) for s in sites.values())
    seen: dict[str, list[tuple[int, ...]]] = {}

    def record(value, name):
        seen.setdefault(name, []).append(tuple(value.shape))

    ids = torch.randint(1, 40, (B, T))
    with installed_hooks(model, {n: record for n in sites}):
        model(ids)
    assert set(seen) == set(sites) - _never_fire(model), "every hook site fires"
    sizes = _sizes(model)
    for name, shapes in seen.items():
        site = sites[name]
        assert site.kind in KINDS and all(a in AXES for a in site.layout), name
        for shape in shapes:
            assert len(shape) == len(site.layout), f"{name}: layout {site.layout}, shape {shape}"
            for axis, size in zip(site.layout, shape):
                assert axis in sizes, f"{name}: axis {axis!r} unexpected in {family}"
                assert size == sizes[axis], f"{name}: axis {axis} has size {size}, expected {sizes[axis]}"


def test_the_bank_reports_updates_along_its_update_axis():
    torch.manual_seed(0)
    model = _pulse(**BANK).eval()
    sites = hook_sites(model)
    slots = sites["blocks.0.states.hook_slots"]
    assert slots.layout == ("batch", "update", "slot", "d_state") and slots.kind == "state"
    assert slots.step_axis == 1
    assert sites["blocks.0.attn.hook_q_features"].step_axis == 2  # per head: [B, H, T, d]
    assert sites["blocks.0.attn.hook_decay"].step_axis is None  # per parameter
    assert sites["blocks.0.states.hook_update_positions"].kind == "positions"
    assert sites["blocks.0.states.hook_routing"].kind == "routing"
    # hook_sites drops the causal-LM wrapper's prefix; hook_points keeps the raw module path
    assert list(sites) == [n.removeprefix("model.") for n, _ in hook_points(model)]


def test_hookpoint_requires_a_known_layout_and_kind():
    with pytest.raises(TypeError):
        HookPoint()
    with pytest.raises(ValueError, match="unknown axis 'time'"):
        HookPoint(layout=("batch", "time"), kind="state")
    with pytest.raises(ValueError, match="twice"):
        HookPoint(layout=("slot", "slot"), kind="attention")
    with pytest.raises(ValueError, match="not a hook kind"):
        HookPoint(layout=("batch",), kind="vibes")
    with pytest.raises(TypeError, match="sequence of axis names"):
        HookPoint(layout="batch", kind="state")
    hp = HookPoint(layout=["batch", "pos"], kind="gate")
    assert hp.layout == ("batch", "pos") and "kind='gate'" in repr(hp)
    assert step_axis(("batch", "update", "slot")) == 1 and step_axis(("head",)) is None and step_axis(None) is None


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.hook_a = HookPoint(layout=("batch", "d_model"), kind="output")
        self.hook_b = HookPoint(layout=("batch", "d_model"), kind="output")

    def forward(self, x):
        return self.hook_b(self.hook_a(self.lin(x)) * 2)


def _n_hooks(model):
    return sum(len(hp._forward_hooks) + len(hp._forward_pre_hooks) for _, hp in hook_points(model)) + \
        len(model._forward_pre_hooks)


def test_installed_hooks_are_removed_when_the_block_raises():
    model = _Toy()
    calls = []
    with pytest.raises(RuntimeError, match="boom"):
        with installed_hooks(model, {"hook_a": lambda v, n: calls.append(n)},
                             pre_forward=lambda args, kwargs: calls.append("pre")):
            assert _n_hooks(model) == 2
            model(torch.ones(1, 3))
            raise RuntimeError("boom")
    assert calls == ["pre", "hook_a"]
    assert _n_hooks(model) == 0


def test_installed_hooks_are_removed_when_a_hook_raises():
    model = _Toy()

    def fail(value, name):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        with installed_hooks(model, [("hook_a", lambda v, n: None), ("hook_b", fail)]):
            model(torch.ones(1, 3))
    assert _n_hooks(model) == 0


def test_installed_hooks_refuse_unknown_names_before_installing():
    model = _Toy()
    with pytest.raises(ValueError, match="'hook_c' is not a hook site"):
        with installed_hooks(model, [("hook_a", lambda v, n: None), ("hook_c", lambda v, n: None)]):
            pass
    assert _n_hooks(model) == 0


def test_replacements_flow_on_in_order():
    model = _Toy()
    x = torch.ones(1, 3)
    ref = model(x)
    seen = []
    hooks = [("hook_a", lambda v, n: torch.zeros_like(v)),  # the value that flows on
             ("hook_a", lambda v, n: seen.append(v.clone())),  # sees the replacement; None keeps it
             ("model.hook_b", lambda v, n: v + 1)]  # raw names work too
    with installed_hooks(model, hooks) as sites:
        out = model(x)
    assert set(sites) == {"hook_a", "hook_b"}
    assert torch.equal(seen[0], torch.zeros(1, 3)) and torch.equal(out, torch.ones(1, 3))
    assert torch.equal(model(x), ref)


@torch.no_grad()
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hooked_and_unhooked_forwards_agree_exactly(family):
    torch.manual_seed(0)
    model = FAMILIES[family]().eval()
    ids = torch.randint(1, 40, (B, T))
    mask = torch.ones(B, T)
    mask[1, :3] = 0
    for kwargs in ({}, {"attention_mask": mask}):
        plain = model(ids, **kwargs)["logits"]
        keep = {n: (lambda v, name: v) for n in hook_sites(model)}  # return the value itself
        with installed_hooks(model, keep):
            hooked = model(ids, **kwargs)["logits"]
        assert torch.equal(plain, hooked), family


def _nsm_modules():
    from pulse.nsm.allocator import AdaptiveStateAllocator
    from pulse.nsm.hierarchical import HierarchicalStateManager
    from pulse.nsm.layers import HybridAttention, NSMLayer, SparseStateAttention
    from pulse.nsm.propagator import StatePropagator
    from pulse.nsm.simple import SimpleNSM

    tokens, states = torch.randn(B, 9, 8), torch.randn(B, 5, 8)
    return {
        "nsm_layer": (NSMLayer(8, 8, num_heads=2, num_states=5), (tokens,)),
        "hybrid_attention": (HybridAttention(8, 8, num_heads=2), (tokens, states)),
        "sparse_state_attention": (SparseStateAttention(8, 8, top_k=2), (tokens, states)),
        "simple_nsm": (SimpleNSM(8, 8, num_states=5, output_dim=3, num_heads=2), (tokens,)),
        "hierarchical": (HierarchicalStateManager(8, 8, chunk_size=4, num_chunk_states=3, num_global_states=2,
                                                  num_heads=2), (tokens,)),
        "allocator": (AdaptiveStateAllocator(8), (tokens,)),
        "propagator_lstm": (StatePropagator(8, "lstm", num_heads=2), (states, torch.randn(B, 5, 8))),
    }


@torch.no_grad()
@pytest.mark.parametrize("name", ["nsm_layer", "hybrid_attention", "sparse_state_attention", "simple_nsm",
                                  "hierarchical", "allocator", "propagator_lstm"])
def test_nsm_modules_declare_their_layouts(name):
    torch.manual_seed(0)
    module, args = _nsm_modules()[name]
    sites = hook_sites(module)
    seen = {}

    def record(value, site):
        seen.setdefault(site, tuple(value.shape))  # returns None: the value flows on unchanged

    with installed_hooks(module, {n: record for n in sites}):
        module(*args)
    assert seen, name
    for n, shape in seen.items():
        layout = sites[n].layout
        assert len(shape) == len(layout), f"{name}.{n}: layout {layout}, shape {shape}"
        if "batch" in layout:
            assert shape[layout.index("batch")] == B, f"{name}.{n}"
