import pytest
import torch

from probes import run_with_trace, trace


def test_frames_match_tensors(full_model, ids):
    mask = torch.ones_like(ids, dtype=torch.float32)
    mask[1, :4] = 0  # left padding on row 1
    _, tr = run_with_trace(full_model, ids, attention_mask=mask)
    r = tr.frame("routing")
    assert list(r.columns) == ["sample", "layer", "pos", "slot", "weight"]
    assert len(r) == (ids.numel() - 4) * 2 * 4  # pads left out
    row = r[(r["sample"] == 1) & (r.layer == 1) & (r.pos == 7) & (r.slot == 2)]
    assert row.weight.item() == tr["blocks.1.states.hook_routing"][1, 7, 2].item()
    rw = tr.frame("read_weights")
    assert abs(rw.groupby(["sample", "layer", "pos"]).weight.sum() - 1).max() < 1e-5

    g = tr.frame("gates")
    upd = tr["blocks.0.states.hook_update_gate"]  # [B, U, S, Ds]
    sel = g[(g.gate == "update") & (g.layer == 0) & (g["sample"] == 0) & (g["update"] == 0) & (g.slot == 1)]
    assert abs(sel.value.item() - upd[0, 0, 1].mean().item()) < 1e-6
    assert (g.pos >= 0).all()
    assert len(tr.frame("gates", per_dim=True)) == len(g) * 16

    imp = tr.frame("importance")
    assert len(imp) == 8 and imp.alive.all()
    m = tr.frame("memory_reads")
    assert (m.slot >= 0).all() and {"score", "weight", "rank"} <= set(m.columns)
    d = tr.frame("decay")
    torch.testing.assert_close(torch.tensor(d[d.layer == 1].gamma.values, dtype=torch.float32),
                               full_model.blocks[1].attn.decay().detach())
    tl = tr.frame("token_loss")
    assert len(tl) == ids.numel() - 4 and (tl.token_id.values == ids[mask.bool()].numpy()).all()
    assert len(tr.frame("predictions")) == (ids.numel() - 4) * 5
    assert len(tr.frame("fusion_gate")) == (ids.numel() - 4) * 2
    assert len(tr.frame("recurrent")) == (ids.numel() - 4) * 2
    da = tr.frame("decay_attention", layer=1, head=0, window=(5, 9), sample=0)
    assert da.t.min() == 5 and da.t.max() == 8 and (da.s <= da.t).all()


def test_pruning_events_frame(bank_model, ids):
    bank_model.blocks[0].states.prune_states([1, 3], step=7)
    _, tr = run_with_trace(bank_model, ids)
    ev = tr.frame("pruning_events")
    assert ev.slot.tolist() == [1, 3] and (ev.kind == "prune").all() and (ev.step == 7).all()
    imp = tr.frame("importance")
    assert imp[imp.layer == 0].alive.tolist() == [True, False, True, False]


def test_unknown_and_unavailable_kinds(plain_model, ids):
    with trace(plain_model, names="blocks.*.attn.*") as tr:
        plain_model(ids)
    with pytest.raises(ValueError, match="known kinds"):
        tr.frame("nonsense")
    with pytest.raises(KeyError, match="available in this trace"):
        tr.frame("routing")
    assert "decay" in tr.available_frames()
