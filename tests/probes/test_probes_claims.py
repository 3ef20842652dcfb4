"""Every branch of every claim verdict, on planted models and traces whose truth is known.

* ``Oracle``: a model with one state bank whose slots carry known shares of the answer. The
  answer logit margin of example ``b`` is ``offset + S * sum_s U[b, s] * r[b, s]`` where ``r``
  are the read weights (``alive / S``, through ``blocks.0.states.hook_read_weights``), so
  ablating or pruning slot ``s`` costs example ``b`` an amount that grows with ``U[b, s]``.
  Importance is set to match that usefulness, set against it, or made uninformative.
* planted traces: routing one-hot on a chosen slot (by category, by chunk, at random) and
  linear-attention features whose measured distance follows (or opposes) the decay.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from probes import (Trace, importance_predicts_ablation, pruning_beats_random, run_with_trace, slot_specialisation,
                    slower_decay_attends_further)
from probes.claims import (MIN_EXAMPLES, NEGLIGIBLE_NATS, example_losses, interval_verdict, mutual_information,
                           run_claim_checks, story_ground_truth)
from pulse.hooks import HookPoint

VERDICTS = {"supported", "not supported", "inconclusive"}
FAST = dict(n_boot=200, seeds=(0, 1, 2))


def check(res, claim, verdict):
    assert res["claim"] == claim
    assert set(res) == {"claim", "statistic", "value", "verdict", "details"}
    assert res["verdict"] == verdict, (res["verdict"], res["value"], res["details"]["ci_low"],
                                       res["details"]["ci_high"], res["details"]["precondition_failed"])
    d = res["details"]
    if d["precondition_failed"] is None:
        assert d["seeds"] == [0, 1, 2] and len(d["per_seed"]) == 3
        assert d["ci_low"] <= d["ci_high"]
        assert d["ci_low"] == min(p["ci_low"] for p in d["per_seed"])  # the union of the seeds' intervals
        assert d["ci_high"] == max(p["ci_high"] for p in d["per_seed"])
        if verdict != "inconclusive":  # a verdict holds for every seed; seeds may disagree otherwise
            assert all(p["verdict"] == verdict for p in d["per_seed"])
    return d


# ------------------------------------------------------------------ the oracle model
class OracleBank(nn.Module):
    def __init__(self, importance):
        super().__init__()
        self.register_buffer("alive", torch.ones(len(importance), dtype=torch.bool))
        self.importance = torch.tensor(importance, dtype=torch.float32)
        self.events = []
        self.hook_read_weights = HookPoint(layout=("batch", "pos", "slot"), kind="memory_read")

    def get_importance_scores(self):
        return self.importance.clone()

    def prune_states(self, slots, step=None):
        with torch.no_grad():
            self.alive[list(slots)] = False
        self.events.append({"kind": "prune", "slots": list(slots)})
        return len(slots)


class Block(nn.Module):
    def __init__(self, bank):
        super().__init__()
        self.states = bank


class Oracle(nn.Module):
    """Inputs: ``ids[:, 0]`` = example index into ``U`` [N, S]; the answer is label 0 at t = 1."""

    def __init__(self, U, importance, offset=-1.0):
        super().__init__()
        self.U = torch.as_tensor(U, dtype=torch.float32)
        self.offset = offset
        self.blocks = nn.ModuleList([Block(OracleBank(importance))])

    def state_banks(self):
        yield 0, self.blocks[0].states

    def forward(self, input_ids, attention_mask=None):
        B, T = input_ids.shape
        bank = self.blocks[0].states
        S = bank.alive.numel()
        r = bank.hook_read_weights((bank.alive.float() / S).expand(B, T, S).clone())
        z = self.offset + S * (self.U[input_ids[:, 0]] * r[:, 0]).sum(-1)
        logits = torch.zeros(B, T, 2)
        logits[:, 0, 0] = z
        return {"logits": logits}


def oracle_batch(n):
    ids = torch.zeros(n, 3, dtype=torch.long)
    ids[:, 0] = torch.arange(n)
    labels = torch.full((n, 3), -100)
    labels[:, 1] = 0
    return ids, labels


W = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 1.1])  # mean usefulness of the 6 slots


def usefulness(n, seed=0, scale=1.0, iid=False):
    rng = np.random.default_rng(seed)
    if iid:  # no slot more useful than another on average
        return rng.uniform(0.0, 1.2, size=(n, len(W))) * scale
    return W[None] * rng.uniform(0.9, 1.1, size=(n, len(W))) * scale


def test_example_losses_are_answer_token_losses():
    U = usefulness(8)
    model = Oracle(U, W)
    ids, labels = oracle_batch(8)
    z = -1.0 + U.sum(1)
    np.testing.assert_allclose(example_losses(model, ids, labels), np.log1p(np.exp(-z)), rtol=1e-5)
    labels[3, 1] = -100  # an example without a trained-on token is left out (NaN)
    assert np.isnan(example_losses(model, ids, labels)[3])


# ------------------------------------------------------------------ importance_predicts_ablation
def test_importance_matching_damage_is_supported():
    ids, labels = oracle_batch(40)
    model = Oracle(usefulness(40), W)
    d = check(importance_predicts_ablation(model, ids, labels, **FAST), "importance_predicts_ablation", "supported")
    assert d["ci_low"] > 0.9 and d["n"] == 6 and d["n_examples"] == 40 and not d["no_slot_matters"]
    dmg = [p["delta_loss"] for p in d["points"]]
    assert all(a < b for a, b in zip(dmg, dmg[1:]))  # the planted order of damage
    assert "labels != -100" in d["loss_on"]


def test_importance_against_damage_is_not_supported():
    ids, labels = oracle_batch(40)
    model = Oracle(usefulness(40), W[::-1].copy())
    d = check(importance_predicts_ablation(model, ids, labels, **FAST), "importance_predicts_ablation", "not supported")
    assert d["ci_high"] < -0.9 and not d["no_slot_matters"]


def test_importance_when_no_slot_matters_is_not_supported():
    ids, labels = oracle_batch(40)
    model = Oracle(usefulness(40, scale=1e-4), W)  # importance matches, but no slot changes the loss
    r = importance_predicts_ablation(model, ids, labels, **FAST)
    d = check(r, "importance_predicts_ablation", "not supported")
    assert d["no_slot_matters"] and d["max_damage_ci_high"] < NEGLIGIBLE_NATS
    assert d["ci_low"] > 0.9  # the ranking is right: only the "nothing to predict" rule says no


def test_importance_with_noisy_damage_is_inconclusive():
    ids, labels = oracle_batch(40)
    model = Oracle(usefulness(40, seed=0, iid=True), W)
    d = check(importance_predicts_ablation(model, ids, labels, **FAST), "importance_predicts_ablation", "inconclusive")
    assert d["precondition_failed"] is None and d["ci_low"] < 0 and d["ci_high"] > 0.1


@pytest.mark.parametrize("case", ["few slots", "equal importance", "few examples"])
def test_importance_preconditions_are_inconclusive(case):
    n = MIN_EXAMPLES - 1 if case == "few examples" else 40
    ids, labels = oracle_batch(n)
    U, imp = usefulness(n), W.copy()
    if case == "few slots":
        U, imp = U[:, :4], imp[:4]
    if case == "equal importance":
        imp = np.full(6, 0.5)
    d = check(importance_predicts_ablation(Oracle(U, imp), ids, labels, **FAST), "importance_predicts_ablation",
              "inconclusive")
    assert d["precondition_failed"]
    n_ok = importance_predicts_ablation(Oracle(usefulness(MIN_EXAMPLES), W), *oracle_batch(MIN_EXAMPLES), **FAST)
    assert n_ok["verdict"] == "supported"  # the sample-size boundary: MIN_EXAMPLES is enough


# ------------------------------------------------------------------ pruning_beats_random
def test_pruning_by_matching_importance_is_supported():
    ids, labels = oracle_batch(40)
    model = Oracle(usefulness(40), W)
    d = check(pruning_beats_random(model, ids, labels, **FAST), "pruning_beats_random", "supported")
    assert d["lowest"] == {0: [0, 1, 2]} and d["ci_low"] > 0.05
    assert d["delta_lowest"] <= min(d["delta_random"]) < np.mean(d["delta_random"])  # a draw may be the lowest half
    assert model.blocks[0].states.alive.all() and len(d["delta_random"]) == 3 * 8  # restored; 8 halves a seed


def test_pruning_by_opposed_importance_is_not_supported():
    ids, labels = oracle_batch(40)
    model = Oracle(usefulness(40), W[::-1].copy())
    d = check(pruning_beats_random(model, ids, labels, **FAST), "pruning_beats_random", "not supported")
    assert sorted(d["lowest"][0]) == [3, 4, 5] and d["ci_high"] < 0


def test_pruning_that_changes_nothing_is_not_supported():
    ids, labels = oracle_batch(40)
    model = Oracle(usefulness(40, scale=1e-4), W)
    d = check(pruning_beats_random(model, ids, labels, **FAST), "pruning_beats_random", "not supported")
    assert 0 < d["ci_low"] and d["ci_high"] < NEGLIGIBLE_NATS  # right direction, negligible size


def test_pruning_with_noisy_damage_is_inconclusive():
    ids, labels = oracle_batch(40)
    model = Oracle(usefulness(40, seed=1, iid=True), W)
    d = check(pruning_beats_random(model, ids, labels, **FAST), "pruning_beats_random", "inconclusive")
    assert d["ci_low"] < 0 < NEGLIGIBLE_NATS < d["ci_high"]


@pytest.mark.parametrize("case", ["equal importance", "few examples"])
def test_pruning_preconditions_are_inconclusive(case):
    n = MIN_EXAMPLES - 1 if case == "few examples" else 40
    ids, labels = oracle_batch(n)
    imp = np.full(6, 0.5) if case == "equal importance" else W
    d = check(pruning_beats_random(Oracle(usefulness(n), imp), ids, labels, **FAST), "pruning_beats_random",
              "inconclusive")
    assert d["precondition_failed"]


# ------------------------------------------------------------------ slot_specialisation
def routing_trace(slots, S, mask=None, chunk_size=4):
    B, T = slots.shape
    tr = Trace({"config": {"chunk_size": chunk_size}})
    routing = torch.nn.functional.one_hot(torch.as_tensor(np.array(slots)), S).float()
    if mask is not None:
        routing = routing * torch.as_tensor(mask)[..., None]
    tr.add("blocks.0.states.hook_routing", routing)
    tr.set_tokens(torch.zeros(B, T, dtype=torch.long), None if mask is None else torch.as_tensor(mask))
    return tr


def test_slots_routed_by_category_are_supported():
    rng = np.random.default_rng(0)
    cats = rng.integers(0, 4, size=(60, 16))
    mask = np.ones((60, 16), dtype=np.float32)
    mask[:, 12:] = 0  # padding: garbage slots, skipped
    slots = np.where(mask > 0, cats, rng.integers(0, 4, size=cats.shape))
    r = slot_specialisation(routing_trace(slots, 4, mask), cats, **FAST)
    d = check(r, "slot_specialisation", "supported")
    assert d["n_tokens"] == 60 * 12 and d["n_examples"] == 60
    assert abs(d["mi"] - math.log(4)) < 0.02 and d["ci_low"] > 0.95  # the slot names the category
    assert d["probe"]["accuracy"] > 0.95 and d["probe"]["verdict"] == "supported"
    assert d["probe"]["shuffled_accuracy"] < 0.5


def test_slots_routed_by_position_are_not_supported_and_position_is_reported():
    rng = np.random.default_rng(1)
    B, T = 200, 16
    cats = rng.integers(0, 4, size=(B, T))
    slots = np.broadcast_to(np.arange(T) // 4, (B, T))  # the slot is the chunk index
    d = check(slot_specialisation(routing_trace(slots, 4), cats, **FAST), "slot_specialisation", "not supported")
    assert d["ci_high"] < 0.01
    assert d["position"]["chunk"]["ci_low"] > 0.95  # routing follows the chunk, fully
    assert d["position"]["chunk_probe"]["value"] > 0.5
    assert abs(d["probe"]["value"]) < 0.05 and d["probe"]["accuracy"] < 0.35  # the probe finds no entity either


def test_slots_at_random_are_not_supported():
    rng = np.random.default_rng(2)
    cats = rng.integers(0, 4, size=(200, 16))
    slots = rng.integers(0, 4, size=(200, 16))
    d = check(slot_specialisation(routing_trace(slots, 4), cats, probe=False, **FAST), "slot_specialisation",
              "not supported")
    assert d["ci_low"] < 0.01 and d["ci_high"] < 0.01 and d["probe"] is None


def test_slots_weakly_routed_by_category_are_inconclusive():
    rng = np.random.default_rng(5)
    B, T = 40, 6
    cats = rng.integers(0, 4, size=(B, T))
    slots = np.where(rng.random((B, T)) < 0.2, cats, rng.integers(0, 4, size=(B, T)))
    d = check(slot_specialisation(routing_trace(slots, 4), cats, probe=False, **FAST), "slot_specialisation",
              "inconclusive")
    assert d["precondition_failed"] is None and d["ci_low"] < 0 and d["ci_high"] > 0.05
    # the seeds disagree (one seed's interval excludes 0): no verdict but inconclusive holds for all
    assert len({p["verdict"] for p in d["per_seed"]}) > 1


def test_slot_specialisation_sample_size_rule():
    rng = np.random.default_rng(3)
    for B, verdict in ((MIN_EXAMPLES - 1, "inconclusive"), (MIN_EXAMPLES, "supported")):
        cats = rng.integers(0, 4, size=(B, 16))
        d = check(slot_specialisation(routing_trace(cats, 4), cats, probe=False, **FAST), "slot_specialisation", verdict)
        assert d["n_examples"] == B
    cats = np.zeros((40, 16), dtype=int)  # one category: nothing to specialise on
    d = check(slot_specialisation(routing_trace(cats, 4), cats, **FAST), "slot_specialisation", "inconclusive")
    assert "categor" in d["precondition_failed"]


def test_slot_specialisation_skips_unlabelled_tokens_and_reports_other_grids():
    rng = np.random.default_rng(4)
    B, T = 40, 10
    ent = np.full((B, T), None, dtype=object)
    loc = np.full((B, T), None, dtype=object)
    ent[:, :5] = rng.choice(["mary", "john", "apple"], size=(B, 5))
    loc[:, 5:] = rng.choice(["kitchen", "garden"], size=(B, 5))
    slots = np.zeros((B, T), dtype=int)
    codes = {"mary": 0, "john": 1, "apple": 2, "kitchen": 3, "garden": 3}
    for b in range(B):
        for t in range(T):
            slots[b, t] = codes[ent[b, t] if t < 5 else loc[b, t]]  # locations all share slot 3
    d = check(slot_specialisation(routing_trace(slots, 4), ent, also={"location": loc}, probe=False, **FAST),
              "slot_specialisation", "supported")
    assert d["n_tokens"] == B * 5 and d["n_categories"] == 3
    assert d["also"]["location"]["ci_high"] < 0.05  # one slot for both places: no location MI


# ------------------------------------------------------------------ slower_decay_attends_further
def decay_trace(gammas, k):
    """gammas [L][H]; k [B, L, H, T] positive key features (d = 1), q = 1."""
    B, L, H, T = k.shape
    tr = Trace({"config": {"linear_attn_eps": 1e-6}})
    for l in range(L):
        g = torch.tensor(gammas[l], dtype=torch.float64)
        kk = torch.as_tensor(k[:, l], dtype=torch.float64)  # [B, H, T]
        t = torch.arange(T, dtype=torch.float64)
        w = (g[:, None, None] ** (t[:, None] - t[None, :]).clamp_min(0)) * (t[None, :] <= t[:, None])  # [H, T, T]
        n = torch.einsum("hts,bhs->bht", w, kk)
        tr.add(f"blocks.{l}.attn.hook_q_features", torch.ones(B, H, T, 1))
        tr.add(f"blocks.{l}.attn.hook_k_features", kk[..., None].float())
        tr.add(f"blocks.{l}.attn.hook_normalizer", n.float())
        tr.add(f"blocks.{l}.attn.hook_decay", g.float())
    tr.set_tokens(torch.zeros(B, T, dtype=torch.long))
    return tr


GAMMAS = [[0.5, 0.6, 0.7], [0.8, 0.9, 0.95]]


def test_distance_following_decay_is_supported():
    tr = decay_trace(GAMMAS, np.ones((40, 2, 3, 24)))
    d = check(slower_decay_attends_further(tr, **FAST), "slower_decay_attends_further", "supported")
    assert d["ci_low"] == pytest.approx(1.0) and d["n"] == 6 and d["n_examples"] == 40
    dist = [h["mean_distance"] for h in d["heads"]]
    assert all(a < b for a, b in zip(dist, dist[1:]))


def test_distance_against_decay_is_not_supported():
    ratio = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5])  # effective per-step weight gamma / beta
    beta = np.array(GAMMAS).reshape(-1) / ratio
    k = beta.reshape(1, 2, 3, 1) ** np.arange(24)[None, None, None]
    tr = decay_trace(GAMMAS, np.broadcast_to(k, (40, 2, 3, 24)))
    d = check(slower_decay_attends_further(tr, **FAST), "slower_decay_attends_further", "not supported")
    assert d["ci_high"] == pytest.approx(-1.0)


def test_distance_unrelated_to_decay_is_inconclusive():
    rng = np.random.default_rng(0)
    ratio = rng.uniform(0.5, 0.95, size=(40, 2, 3, 1))
    beta = np.array(GAMMAS).reshape(1, 2, 3, 1) / ratio
    tr = decay_trace(GAMMAS, beta ** np.arange(24))
    d = check(slower_decay_attends_further(tr, **FAST), "slower_decay_attends_further", "inconclusive")
    assert d["precondition_failed"] is None and d["ci_low"] < 0 and d["ci_high"] > 0.1


@pytest.mark.parametrize("case", ["four heads", "equal decay", "few examples", "one sample"])
def test_decay_preconditions_are_inconclusive(case):
    gammas, B = GAMMAS, 40
    if case == "four heads":
        gammas = [[0.5, 0.6], [0.7, 0.8]]
    if case == "equal decay":
        gammas = [[0.7] * 3] * 2
    if case == "few examples":
        B = MIN_EXAMPLES - 1
    tr = decay_trace(gammas, np.ones((B, 2, len(gammas[0]), 24)))
    kw = {"sample": 0} if case == "one sample" else {}
    d = check(slower_decay_attends_further(tr, **kw, **FAST), "slower_decay_attends_further", "inconclusive")
    assert d["precondition_failed"]


# ------------------------------------------------------------------ rules and the real model
def test_interval_rule():
    assert interval_verdict(0.01, 0.5, 0.1) == "supported"
    assert interval_verdict(-0.5, 0.09, 0.1) == "not supported"  # excludes every effect >= 0.1
    assert interval_verdict(0.01, 0.09, 0.1) == "not supported"  # real but negligible
    assert interval_verdict(-0.9, -0.5, 0.1) == "not supported"
    assert interval_verdict(-0.01, 0.5, 0.1) == "inconclusive"
    assert interval_verdict(0.0, 0.5, 0.1) == "inconclusive"  # lo must be > 0
    assert interval_verdict(float("nan"), 0.5, 0.1) == "inconclusive"
    a = np.array([0, 0, 1, 1])
    assert abs(mutual_information(a, a) - np.log(2)) < 1e-12
    assert mutual_information(a, np.array([0, 1, 0, 1])) == 0.0


def test_ablation_points_are_the_answer_loss_change_of_a_real_model(bank_model):
    from probes import ablate_slot, compare

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (MIN_EXAMPLES, 17), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, -3:] = ids[:, -3:]  # train on the last 3 tokens only
    with torch.no_grad():
        for _, bank in bank_model.state_banks():
            bank.importance_logits.copy_(torch.tensor([2.0, -1.0, 0.5, 1.0]))
    r = importance_predicts_ablation(bank_model, ids, labels, n_boot=50)
    assert r["details"]["n"] == 8 and r["verdict"] in VERDICTS
    p = r["details"]["points"][5]
    res = compare(bank_model, ids, [ablate_slot(p["layer"], p["slot"])], labels=labels)
    per_ex = torch.nanmean(res.loss_after, 1) - torch.nanmean(res.loss_before, 1)
    assert p["delta_loss"] == pytest.approx(float(per_ex.mean()), abs=1e-6)
    other = labels.clone()
    other[:, :5] = ids[:, :5]  # a different set of trained-on tokens: a different measurement
    assert importance_predicts_ablation(bank_model, ids, other, n_boot=50)["details"]["points"][5]["delta_loss"] != \
        pytest.approx(p["delta_loss"], abs=1e-9)


def test_run_claim_checks_on_a_story_world_task():
    from probe_models import BANK, make_model
    from pulse.data import StoryWorldTask

    task = StoryWorldTask(train_on="answers")
    model = make_model(vocab_size=task.vocab_size, **BANK)
    with torch.no_grad():
        for _, bank in model.state_banks():
            bank.importance_logits.copy_(torch.linspace(-2, 2, 4))
    calls = []
    res = run_claim_checks(model, task, n=MIN_EXAMPLES, n_boot=50, n_random=2, n_shuffles=20,
                           progress=lambda done, total, msg: calls.append((done, total, msg)))
    assert [d for d, _, _ in calls] == list(range(len(calls) - 1)) + [calls[0][1]]  # 0, 1, ... then total
    assert calls[-1] == (calls[0][1], calls[0][1], "done") and len(calls) == calls[0][1] + 1
    assert [m for _, _, m in calls[2:-1]] == ["slot_specialisation (layer 0)", "slot_specialisation (layer 1)",
                                             "importance_predicts_ablation (one forward per slot)",
                                             "pruning_beats_random"]
    assert [r["claim"] for r in res] == ["slower_decay_attends_further", "slot_specialisation (layer 0)",
                                         "slot_specialisation (layer 1)", "importance_predicts_ablation",
                                         "pruning_beats_random"]
    assert all(r["verdict"] in VERDICTS and r["details"]["held_out_examples"] == MIN_EXAMPLES for r in res)
    assert res[3]["details"]["n_examples"] == MIN_EXAMPLES and "labels != -100" in res[3]["details"]["loss_on"]
    stories = task.stories("test", 3)
    gt = story_ground_truth(stories, 200)
    s = stories[0]
    i = s.roles.index("place")
    assert gt["location"][0, i] == s.entities[i] and gt["entity"][0, i] is None
    assert gt["entity"][0, 0] == s.tokens[0] and gt["role"][0, len(s)] is None
