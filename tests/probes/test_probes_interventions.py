import copy
import math

import pytest
import torch

from probes import (Trace, ablate_slot, clamp_gate, compare, intervene, memory_off, patch_activation, prune_slots,
                    set_decay, trace)
from pulse.hooks import hook_points


def logits(model, ids, **kw):
    with torch.no_grad():
        return model(ids, **kw)["logits"]


def no_hooks(model):
    return all(not hp._forward_hooks for _, hp in hook_points(model))


def test_set_decay(plain_model, ids):
    base = logits(plain_model, ids)
    g = float(plain_model.blocks[1].attn.decay().detach()[0])
    with intervene(plain_model, set_decay(1, 0, g)):
        same = logits(plain_model, ids)
    assert torch.equal(same, base)
    ref = copy.deepcopy(plain_model)
    with torch.no_grad():
        ref.blocks[1].attn.decay_logit[0] = math.log(0.3 / 0.7)
    with intervene(plain_model, set_decay(1, 0, 0.3)):
        changed = logits(plain_model, ids)
    torch.testing.assert_close(changed, logits(ref, ids), atol=1e-5, rtol=1e-5)
    assert (changed - base).abs().max() > 1e-4
    assert no_hooks(plain_model) and torch.equal(logits(plain_model, ids), base)


def test_memory_off_equals_zeroed_out_proj():
    from probe_models import make_model

    model = make_model(use_memory=True)
    ids = torch.randint(1, 50, (2, 17))
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for b in ref.blocks:
            b.memory.out_proj.weight.zero_()
    with intervene(model, memory_off()):
        got = logits(model, ids)
    torch.testing.assert_close(got, logits(ref, ids), atol=1e-6, rtol=1e-6)
    ref1 = copy.deepcopy(model)
    with torch.no_grad():
        ref1.blocks[0].memory.out_proj.weight.zero_()
    with intervene(model, memory_off(0)):
        torch.testing.assert_close(logits(model, ids), logits(ref1, ids), atol=1e-6, rtol=1e-6)
    assert no_hooks(model)


def test_ablate_slot_zero_equals_zero_importance(bank_model, ids):
    ref = copy.deepcopy(bank_model)
    with torch.no_grad():
        ref.blocks[1].states.importance_logits[2] = -float("inf")  # sigmoid -> 0: slot 2 adds nothing to reads
    with intervene(bank_model, ablate_slot(1, 2)):
        got = logits(bank_model, ids)
    torch.testing.assert_close(got, logits(ref, ids), atol=1e-6, rtol=1e-6)
    assert (got - logits(bank_model, ids)).abs().max() > 1e-6


def test_ablate_slot_mean(bank_model, ids):
    with trace(bank_model, names="blocks.0.states.hook_read_weights") as tr:
        bank_model(ids)
    r = tr["blocks.0.states.hook_read_weights"]
    want = r.clone()
    want[..., 3] = r[..., 3].mean()
    with intervene(bank_model, ablate_slot(0, 3, "mean")), trace(bank_model, names="blocks.0.states.hook_read*") as t2:
        got = logits(bank_model, ids)
    # the read weights that flowed on are exactly the specified ones; reference: patch them in directly
    src = Trace()
    src.add("blocks.0.states.hook_read_weights", want)
    assert torch.equal(t2["blocks.0.states.hook_read_weights"], want)
    with intervene(bank_model, patch_activation("blocks.0.states.hook_read_weights", src)):
        torch.testing.assert_close(got, logits(bank_model, ids), atol=0, rtol=0)


def test_prune_slots_equals_bank_pruning(bank_model, ids):
    base = logits(bank_model, ids)
    ref = copy.deepcopy(bank_model)
    ref.blocks[0].states.prune_states([0, 2])
    with intervene(bank_model, prune_slots(0, [0, 2])):
        assert bank_model.blocks[0].states.alive.tolist() == [False, True, False, True]
        got = logits(bank_model, ids)
    torch.testing.assert_close(got, logits(ref, ids), atol=0, rtol=0)
    assert bank_model.blocks[0].states.alive.all() and bank_model.blocks[0].states.events == []
    assert torch.equal(logits(bank_model, ids), base)


def test_clamp_update_gate_freezes_bank():
    from probe_models import BANK, make_model

    model = make_model(state_communication=False, **BANK)
    ids = torch.randint(1, 50, (1, 30))
    with intervene(model, clamp_gate("blocks.*.states.hook_update_gate", 0.0)), \
            trace(model, names="blocks.*.states.hook_slots") as tr:
        model(ids)
    init = model.blocks[0].states.slot_values.detach()
    slots = tr["blocks.0.states.hook_slots"]  # [1, U, S, Ds]
    assert slots.shape[1] == 3
    torch.testing.assert_close(slots[0], init.expand_as(slots[0]), atol=1e-6, rtol=0)
    assert no_hooks(model)


def test_patch_activation(plain_model):
    a = torch.randint(1, 50, (1, 12))
    b = a.clone()
    b[0, 4] = (a[0, 4] + 7) % 49 + 1
    # patching the embedding at the one differing position turns run a into run b
    with intervene(plain_model, patch_activation("hook_embed", b, positions=[4])):
        got = logits(plain_model, a)
    torch.testing.assert_close(got, logits(plain_model, b), atol=0, rtol=0)
    # from a trace, a per-head hook at all positions
    with trace(plain_model, names="blocks.1.attn.hook_out") as tr:
        plain_model(b)
    with intervene(plain_model, patch_activation("blocks.1.attn.hook_out", tr, positions=slice(0, 12))):
        got = logits(plain_model, a)
    with trace(plain_model, names="blocks.1.attn.hook_out") as ta:
        plain_model(a)
    assert not torch.equal(ta["blocks.1.attn.hook_out"], tr["blocks.1.attn.hook_out"])
    with trace(plain_model, names="hook_final") as tf:
        plain_model(b)
    with intervene(plain_model, patch_activation("hook_final", tf)):
        torch.testing.assert_close(logits(plain_model, a), logits(plain_model, b), atol=0, rtol=0)
    assert no_hooks(plain_model)


def test_compare_and_cleanup_on_error(bank_model, ids):
    res = compare(bank_model, ids, [ablate_slot(0, 1), set_decay(0, 1, 0.5)])
    assert res.loss_before.shape == ids.shape and torch.isnan(res.loss_before[:, 0]).all()
    torch.testing.assert_close(res.delta_loss, res.loss_after - res.loss_before, equal_nan=True)
    assert (res.kl >= -1e-6).all() and res.max_abs_logit_change.max() > 0
    s = res.summary()
    assert set(s) >= {"mean_delta_loss", "mean_kl", "top1_changed_fraction"}
    assert len(res.frame()) == ids.numel()
    same = compare(bank_model, ids, set_decay(0, 0, float(bank_model.blocks[0].attn.decay().detach()[0])))
    assert same.max_abs_logit_change.max() == 0 and not same.top1_changed.any()
    with pytest.raises(RuntimeError, match="inside"):
        with intervene(bank_model, prune_slots(1, [3]), clamp_gate("blocks.0.hook_fusion_gate", 0.5)):
            raise RuntimeError("inside")
    assert no_hooks(bank_model) and bank_model.blocks[1].states.alive.all()
    with pytest.raises(ValueError, match="matches no hook site"):
        with intervene(bank_model, memory_off()):
            pass
    assert bank_model.blocks[1].states.events == []


def test_compare_summary_is_on_the_labels_only():
    """With a story-world task's labels (answers only) every summary number is on the answer
    tokens: checked against a hand computation from the logits at the answer positions."""
    from pulse.data import build_task
    from probe_models import BANK, make_model

    task = build_task("story_world", train_on="answers")
    model = make_model(vocab_size=task.vocab_size, use_memory=True, **BANK)
    b = task.make_split("test", n=3)
    ids, mask = b["input_ids"], b["attention_mask"]
    labels = task.labels_for(ids, mask)
    iv = [ablate_slot(0, 1), memory_off(), set_decay(0, 0, 0.2)]
    res = compare(model, ids, iv, labels=labels, attention_mask=mask, loss_name=task.loss_name)
    s = res.summary()
    rows, cols = torch.nonzero(b["answer_mask"], as_tuple=True)
    assert s["loss"] == "answer-token loss" and s["n_label_tokens"] == len(rows) == 3 * 2

    def hand(lg):
        lp = lg.log_softmax(-1)[rows, cols - 1]
        return -lp.gather(-1, ids[rows, cols][:, None]).squeeze(-1)

    lb, la = hand(res.logits_before), hand(res.logits_after)
    assert s["mean_loss_before"] == pytest.approx(float(lb.mean()), rel=1e-5)
    assert s["mean_loss_after"] == pytest.approx(float(la.mean()), rel=1e-5)
    assert s["mean_delta_loss"] == pytest.approx(float((la - lb).mean()), rel=1e-4, abs=1e-7)
    top_b, top_a = res.logits_before.argmax(-1)[rows, cols - 1], res.logits_after.argmax(-1)[rows, cols - 1]
    assert s["accuracy_before"] == pytest.approx(float((top_b == ids[rows, cols]).float().mean()))
    assert s["top1_changed_fraction"] == pytest.approx(float((top_b != top_a).float().mean()))
    lpb, lpa = res.logits_before.log_softmax(-1), res.logits_after.log_softmax(-1)
    kl = (lpb.exp() * (lpb - lpa)).sum(-1)[rows, cols - 1]
    assert s["mean_kl"] == pytest.approx(float(kl.mean()), rel=1e-4)
    # the all-token mean is a different number: a summary that fell back to it would fail above
    all_tok = compare(model, ids, iv, attention_mask=mask).summary()
    assert all_tok["loss"] == "all-token loss" and all_tok["n_label_tokens"] == int(mask[:, 1:].sum())
    assert abs(all_tok["mean_loss_before"] - s["mean_loss_before"]) > 1e-3
    assert res.frame()["scored"].sum() == 6
    with pytest.raises(ValueError, match="labels: shape"):
        compare(model, ids, iv, labels=labels[:, :-1], attention_mask=mask)


@pytest.mark.parametrize("name", ["blocks.0.hook_resid_post", "blocks.1.attn.hook_out"])
def test_patch_activation_over_a_slice_takes_the_source_values(plain_model, name):
    """Over a slice of positions the patched hook carries the source run's values, and every
    other position keeps the value of the unpatched run (this hook's own value: downstream
    positions of later layers may change)."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.randint(1, 50, (2, 1, 12), generator=g)
    with trace(plain_model, names=name) as tr_a:
        plain_model(a)
    with trace(plain_model, names=name) as tr_b:
        plain_model(b)
    src, orig = tr_b[name], tr_a[name]
    axis = 2 if ".attn." in name else 1
    with intervene(plain_model, patch_activation(name, tr_b, positions=slice(3, 7))):
        with trace(plain_model, names=name) as tr_p:
            plain_model(a)
    got = tr_p[name]
    inside = torch.zeros(12, dtype=torch.bool)
    inside[3:7] = True
    assert torch.equal(got.index_select(axis, torch.nonzero(inside).flatten()),
                       src.index_select(axis, torch.nonzero(inside).flatten()))
    assert torch.equal(got.index_select(axis, torch.nonzero(~inside).flatten()),
                       orig.index_select(axis, torch.nonzero(~inside).flatten()))
    assert not torch.equal(src.index_select(axis, torch.nonzero(inside).flatten()),
                           orig.index_select(axis, torch.nonzero(inside).flatten()))  # the patch changed something
    assert no_hooks(plain_model)
