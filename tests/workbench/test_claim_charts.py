"""The claim-check charts: each statistic on its own chart, drawn from the results it shows."""

import numpy as np
import pytest
import torch

from workbench.charts import claim_checks as cc


@pytest.fixture(scope="module")
def results():
    from probes.claims import run_claim_checks
    from pulse import PulseConfig, PulseForCausalLM
    from pulse.data import StoryWorldTask

    task = StoryWorldTask(train_on="answers")
    torch.manual_seed(0)
    model = PulseForCausalLM(PulseConfig(vocab_size=task.vocab_size, hidden_size=48, num_layers=2, num_heads=3,
                                         chunk_size=8, conv_kernel_size=3, num_states=4, state_dim=16,
                                         state_num_heads=2)).eval()
    with torch.no_grad():
        for _, bank in model.state_banks():
            bank.importance_logits.copy_(torch.linspace(-2, 2, 4))
    return run_claim_checks(model, task, n=30, n_boot=50, n_random=2, n_shuffles=10)


def test_overview_and_effect_charts(results):
    fig = cc.verdict_overview(results)
    assert list(fig.data[0].y) == [r["claim"] for r in results] and list(fig.data[0].x) == [r["verdict"] for r in results]
    for r in results:
        f = cc.effect_intervals(r, "axis")
        assert f.layout.xaxis.title.text == "axis" and r["verdict"] in f.layout.title.text
        if r["details"]["per_seed"]:
            assert np.allclose(f.data[0].x, [p["value"] for p in r["details"]["per_seed"]])
            hi = np.array(f.data[0].x) + np.array(f.data[0].error_x.array)
            assert np.allclose(hi, [p["ci_high"] for p in r["details"]["per_seed"]])


def test_statistic_charts(results):
    by = {r["claim"]: r for r in results}
    imp = by["importance_predicts_ablation"]
    f = cc.ablation_scatter(imp)
    assert np.allclose(f.data[0].y, [p["delta_loss"] for p in imp["details"]["points"]])
    pr = by["pruning_beats_random"]
    f = cc.pruning_bars(pr)
    assert f.data[0].y[0] == pytest.approx(pr["details"]["delta_lowest"]) and len(f.data[1].y) == 6
    slots = [r for r in results if r["claim"].startswith("slot_specialisation")]
    f = cc.specialisation_bars(slots)
    assert [t.name for t in f.data] == ["entity", "place", "chunk index", "position"]
    assert np.allclose(f.data[0].y, [s["value"] for s in slots])
    f = cc.probe_bars(slots)
    assert np.allclose(f.data[0].y, [s["details"]["probe"]["accuracy"] for s in slots])
    dec = by["slower_decay_attends_further"]
    f = cc.decay_scatter(dec)
    assert len(f.data[0].x) == 6 and f.layout.xaxis.type == "log"
