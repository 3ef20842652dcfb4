"""Each chart builder returns a Figure with the expected traces, built from a real trace."""

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from workbench import charts, core


@pytest.fixture(scope="module")
def run_and_ckpt(checkpoint_dir):
    ckpt = core.load_checkpoint(checkpoint_dir / "tiny-a")
    ex = core.examples(ckpt, n=1)[0]
    run, warnings = core.trace_text(ckpt, ex.text, ex.categories)
    assert warnings == []
    return run, ckpt


def test_loss_strip_and_predictions(run_and_ckpt):
    run, ckpt = run_and_ckpt
    loss = run.loss()
    fig = charts.loss_strip(range(run.T), run.tokens, loss)
    assert isinstance(fig, go.Figure) and [t.type for t in fig.data] == ["heatmap"]
    z = np.array(fig.data[0].z[0], dtype=float)
    assert z.shape == (run.T,) and np.isnan(z[0]) and np.allclose(z[1:], loss[1:], atol=1e-6, equal_nan=True)
    assert np.isfinite(z).sum() == 2  # answers-only model: only its two answer tokens carry a loss
    assert list(fig.data[0].x) == list(range(run.T))
    pos = 5
    ids = run.trace["predictions.top_ids"][0, pos].tolist()
    probs = run.trace["predictions.top_probs"][0, pos].tolist()
    fig = charts.top_predictions([ckpt.tokenizer.decode([i]) for i in ids], probs, actual=run.tokens[pos + 1])
    assert fig.data[0].type == "bar" and np.allclose(fig.data[0].x, probs)
    assert list(fig.data[0].x) == sorted(fig.data[0].x, reverse=True)


def test_routing_heatmap_and_sankey(run_and_ckpt):
    run, _ = run_and_ckpt
    w = run.trace["blocks.1.states.hook_routing"][0].numpy()  # [T, S]
    fig = charts.slot_heatmap(w[:20], range(20), run.tokens[:20])
    assert fig.data[0].type == "heatmap"
    np.testing.assert_allclose(np.array(fig.data[0].z), w[:20].T, rtol=1e-6)
    assert list(fig.layout.xaxis.ticktext) == run.tokens[:20]  # token labels, positions as x
    fig = charts.routing_sankey(run.categories, w)
    sk = fig.data[0]
    assert sk.type == "sankey"
    cats = sorted(set(run.categories))
    assert list(sk.node.label) == cats + [f"slot {s}" for s in range(w.shape[1])]
    # link values are the summed weights: they add up to the number of tokens (rows sum to 1)
    assert sum(sk.link.value) == pytest.approx(float(w.sum()), rel=1e-6)
    assert sum(sk.link.value) == pytest.approx(run.T, rel=1e-4)


def test_gates_and_token_lines(run_and_ckpt):
    run, _ = run_and_ckpt
    df = run.trace.frame("gates")
    d = df[(df["layer"] == 0) & (df["gate"] == "update")]
    fig = charts.gates_over_time(d["pos"].to_numpy(), d["slot"].to_numpy(), d["value"].to_numpy())
    assert [t.type for t in fig.data] == ["scatter"] * d["slot"].nunique()
    s0 = d[d["slot"] == 0].sort_values("pos")
    np.testing.assert_allclose(fig.data[0].y, s0["value"].to_numpy(), rtol=1e-6)
    assert all(0.0 <= v <= 1.0 for t in fig.data for v in t.y)
    fg = run.trace["blocks.0.hook_fusion_gate"][0].mean(-1).numpy()
    fig = charts.token_lines(range(run.T), run.tokens, {"layer 0": fg})
    assert fig.data[0].name == "layer 0" and np.allclose(fig.data[0].y, fg)


def test_importance_bars(run_and_ckpt):
    run, ckpt = run_and_ckpt
    imp = run.trace.frame("importance")
    d = imp[imp["layer"] == 0]
    fig = charts.importance_bars(d["importance"].to_numpy(), d["alive"].to_numpy(), ckpt.config.prune_threshold)
    assert fig.data[0].type == "bar"
    expected = torch.sigmoid(ckpt.model.blocks[0].states.importance_logits).detach().numpy()
    np.testing.assert_allclose(fig.data[0].y, expected, rtol=1e-6)
    assert fig.layout.shapes and fig.layout.shapes[0].y0 == ckpt.config.prune_threshold


def test_decay_attention_and_half_lives(run_and_ckpt):
    from probes import decay_attention_matrix

    run, _ = run_and_ckpt
    A, ts, ss = decay_attention_matrix(run.trace, 1, 0, window=(10, 30), s_start=10)
    fig = charts.decay_attention_heatmap(A.numpy(), ts, ss, [run.tokens[i] for i in ts], [run.tokens[i] for i in ss])
    z = np.array(fig.data[0].z)
    assert fig.data[0].type == "heatmap" and z.shape == (20, 20)
    assert np.allclose(np.triu(z, 1), 0)  # causal: nothing above the diagonal
    dec = run.trace.frame("decay")
    fig = charts.half_life_bars(dec["layer"], dec["head"], dec["half_life"])
    assert [t.type for t in fig.data] == ["bar", "bar"]  # one trace per head
    np.testing.assert_allclose(fig.data[0].y, dec[dec["head"] == 0]["half_life"], rtol=1e-9)
    assert fig.layout.yaxis.type == "log"


def test_memory_heatmap(run_and_ckpt):
    run, ckpt = run_and_ckpt
    C = ckpt.config.memory_capacity
    slots = run.trace["blocks.0.memory.hook_read_slots"][0].numpy()
    w = run.trace["blocks.0.memory.hook_read_weights"][0].numpy()
    M = np.zeros((C, run.T))
    for t in range(run.T):
        for r in range(slots.shape[1]):
            if slots[t, r] >= 0:
                M[slots[t, r], t] = w[t, r]
    fig = charts.memory_reads_heatmap(M, range(run.T), run.tokens)
    z = np.array(fig.data[0].z)
    assert z.shape == (C, run.T) and np.allclose(z.sum(0)[1:], 1.0, atol=1e-5)  # every later token reads
    assert np.allclose(z[:, 0], 0)  # the first token has nothing to read


def test_attribution_charts(run_and_ckpt):
    from probes.attribution import slot_attributions, token_attributions

    run, ckpt = run_and_ckpt
    ids = run.input_ids()[:, :12]
    res = token_attributions(ckpt.model, ids, position=11, target=int(ids[0, 11]), n_steps=8)
    fig = charts.token_attribution_bars(range(12), run.tokens[:12], res.attributions.numpy(), target_pos=11)
    assert fig.data[0].type == "bar" and np.allclose(fig.data[0].y, res.attributions.numpy())
    colors = fig.data[0].marker.color
    assert all((c == "#2ca02c") == (v >= 0) for c, v in zip(colors, fig.data[0].y))
    sres = slot_attributions(ckpt.model, ids, layer=0, position=11, target=int(ids[0, 11]), n_steps=8)
    fig = charts.slot_attribution(sres.attributions.numpy(), range(12), run.tokens[:12])
    assert fig.data[0].zmid == 0 and np.allclose(np.array(fig.data[0].z), sres.attributions.numpy().T)
    fig = charts.per_slot_bars(sres.per_slot.numpy())
    assert np.allclose(fig.data[0].y, sres.per_slot.numpy())


def test_intervention_charts(run_and_ckpt):
    import copy

    from probes import compare, prune_slots

    run, ckpt = run_and_ckpt
    res = compare(copy.deepcopy(ckpt.model), run.input_ids(), [prune_slots(0, [0, 1])])
    before, after = res.loss_before[0].numpy(), res.loss_after[0].numpy()
    fig = charts.loss_comparison(range(run.T), run.tokens, before, after)
    assert [t.name for t in fig.data] == ["before", "after"]
    assert fig.data[0].y[0] is None and np.allclose(np.array(fig.data[1].y[1:], float), after[1:])
    fig = charts.loss_delta_bars(range(run.T), run.tokens, after - before)
    y = np.array(fig.data[0].y[1:], float)
    assert np.allclose(y, (after - before)[1:]) and np.abs(y).max() > 0  # pruning really changed the loss


def test_claim_verdicts(run_and_ckpt):
    from probes import slot_specialisation, slower_decay_attends_further

    run, _ = run_and_ckpt
    results = [slower_decay_attends_further(run.trace), slot_specialisation(run.trace, run.categories, n_shuffles=20)]
    fig = charts.claim_verdicts(results)
    assert list(fig.data[0].y) == [r["claim"] for r in results]
    assert all(r["verdict"] in t for r, t in zip(results, fig.data[0].text))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="weights"):
        charts.slot_heatmap(np.zeros(5), range(5), ["a"] * 5)
    with pytest.raises(ValueError, match="weights"):
        charts.routing_sankey(["a", "b"], np.zeros((3, 2)))
