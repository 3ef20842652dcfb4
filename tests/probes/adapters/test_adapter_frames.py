"""Issue 13: the per-channel recurrences' frames (channel_decay, channel_state, channel_gates) on
the adapters' hook sites, read by declared kind and layout, and the implicit attention that
the workbench reads through probes.adapters."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from conftest import tiny_mamba, tiny_rwkv  # noqa: E402

from probes import run_with_trace  # noqa: E402
from probes.adapters import adapt, has_implicit_attention, implicit_attention  # noqa: E402
from probes.frames import frame_hooks  # noqa: E402


def _traced(build, tokens):
    torch.manual_seed(0)
    model = build()
    adapt(model)
    _, tr = run_with_trace(model, tokens, names=frame_hooks(), top_k=3)
    return model, tr


@pytest.mark.parametrize("family", ["mamba", "rwkv"])
def test_the_channel_frames_apply_and_keep_the_sites_values(family, tokens):
    model, tr = _traced({"mamba": tiny_mamba, "rwkv": tiny_rwkv}[family], tokens)
    assert {"channel_decay", "channel_state", "channel_gates", "token_loss", "predictions"} == set(
        tr.available_frames())
    B, T = tokens.shape
    cs = tr.frame("channel_state")
    labels = {"mamba": ["state_norm"], "rwkv": ["state_num", "state_den"]}[family]
    assert list(dict.fromkeys(cs.state)) == labels and len(cs) == len(labels) * 2 * B * T
    name = f"blocks.1.mixer.hook_{labels[0]}"
    row = cs[(cs.layer == 1) & (cs["sample"] == 1) & (cs.pos == 7) & (cs.state == labels[0])]
    assert abs(row.norm.item() - tr[name][1, 7].float().norm().item()) < 1e-6
    cg = tr.frame("channel_gates")
    gates = {"mamba": {"gate", "dt"}, "rwkv": {"receptance"}}[family]
    assert set(cg.gate) == gates and cg.value.notna().all()
    per = tr.frame("channel_gates", per_channel=True)
    assert "channel" in per.columns and len(per) == len(cg) * tr[f"blocks.0.mixer.hook_{sorted(gates)[-1]}"].shape[-1]


def test_mamba_half_lives_are_those_of_its_parameters(tokens):
    model, tr = _traced(tiny_mamba, tokens)
    dec = tr.frame("channel_decay")
    for layer, m in enumerate(model.backbone.layers):
        A = -torch.exp(m.mixer.A_log.detach().double())  # [channel, d_k]
        want = (math.log(2.0) / -A).numpy()  # exp(A) per unit step: ln 2 / -A
        d = dec[dec.layer == layer].sort_values(["unit", "state"])
        assert np.allclose(d.half_life.to_numpy().reshape(A.shape), want, rtol=1e-6)
        assert np.allclose(d.decay.to_numpy().reshape(A.shape), torch.exp(A).numpy(), rtol=1e-6)


def test_rwkv_half_lives_are_those_of_its_parameters(tokens):
    model, tr = _traced(tiny_rwkv, tokens)
    dec = tr.frame("channel_decay")
    table = adapt(model).decay_table()
    for layer, block in enumerate(model.rwkv.blocks):
        w = torch.exp(block.attention.time_decay.detach().double())  # decay e^{-w} per token
        d = dec[dec.layer == layer].sort_values("unit")
        assert (d.state == 0).all()
        # the trace holds the decay in fp32: ln of a decay near 1 keeps ~1e-6 of its relative precision
        assert np.allclose(d.half_life.to_numpy(), (math.log(2.0) / w).numpy(), rtol=1e-5, atol=0)
        assert np.allclose(d.half_life.to_numpy(), table[layer]["half_life"].numpy(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("family", ["mamba", "rwkv"])
def test_implicit_attention_of_one_channel(family, tokens):
    model = {"mamba": tiny_mamba, "rwkv": tiny_rwkv}[family]()
    assert not has_implicit_attention(model)
    with pytest.raises(ValueError, match="no adapter"):
        implicit_attention(model, tokens[:1], 0, 0)
    adapter = adapt(model)
    assert has_implicit_attention(model)
    one = implicit_attention(model, tokens[:1], 1, 5)
    full = adapter.implicit_attention(tokens[:1], layers=[1])[0]
    assert one.matrix.shape == (1, 1, 12, 12) and one.residual < 1e-5
    assert torch.equal(one.matrix[0, 0], full.matrix[0, 5])
