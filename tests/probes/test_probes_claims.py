import numpy as np
import torch

from probes import (importance_predicts_ablation, pruning_beats_random, run_with_trace, slot_specialisation,
                    slower_decay_attends_further)
from probes.claims import _correlation_verdict, mutual_information

VERDICTS = {"supported", "not supported", "inconclusive"}


def check(res, claim):
    assert res["claim"] == claim and res["verdict"] in VERDICTS
    assert set(res) == {"claim", "statistic", "value", "verdict", "details"}


def test_claims_on_tiny_bank_model(bank_model):
    ids = torch.randint(1, 50, (1, 17))
    with torch.no_grad():
        for _, bank in bank_model.state_banks():
            bank.importance_logits.copy_(torch.tensor([2.0, -1.0, 0.5, 1.0]))
    r = importance_predicts_ablation(bank_model, ids)
    check(r, "importance_predicts_ablation")
    assert r["details"]["n"] == 8 and len(r["details"]["points"]) == 8
    r = pruning_beats_random(bank_model, ids, n_random=2)
    check(r, "pruning_beats_random")
    assert r["details"]["lowest"] == {0: [1, 2], 1: [1, 2]}
    assert all(b.alive.all() for _, b in bank_model.state_banks())  # restored
    _, tr = run_with_trace(bank_model, ids)
    slot = tr["blocks.0.states.hook_routing"].argmax(-1)
    r = slot_specialisation(tr, slot.numpy(), layer=0, n_shuffles=50)
    check(r, "slot_specialisation")
    if len(np.unique(slot)) > 1:
        assert r["verdict"] == "supported" and r["value"] > r["details"]["shuffled_mean"]
    r = slower_decay_attends_further(tr)
    check(r, "slower_decay_attends_further")
    assert r["details"]["n"] == 4 and r["verdict"] == "inconclusive"  # 4 heads < 5 points


def test_pruning_with_equal_importance_is_inconclusive(bank_model):
    ids = torch.randint(1, 50, (1, 9))
    assert pruning_beats_random(bank_model, ids, n_random=1)["verdict"] == "inconclusive"


def test_rules():
    assert _correlation_verdict(0.9, 0.001, 10) == "supported"
    assert _correlation_verdict(-0.9, 0.001, 10) == "not supported"
    assert _correlation_verdict(0.3, 0.4, 6) == "inconclusive"
    assert _correlation_verdict(0.3, 0.4, 20) == "not supported"
    assert _correlation_verdict(0.99, 0.0, 4) == "inconclusive"
    a = np.array([0, 0, 1, 1])
    assert abs(mutual_information(a, a) - np.log(2)) < 1e-12
    assert mutual_information(a, np.array([0, 1, 0, 1])) == 0.0
