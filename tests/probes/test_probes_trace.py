import pytest
import torch
import torch.nn.functional as F

from probes import Trace, run_with_trace, trace
from pulse.hooks import hook_points


def n_hooks(model):
    return sum(len(hp._forward_hooks) + len(hp._forward_pre_hooks) for _, hp in hook_points(model)) + \
        len(model._forward_pre_hooks)


def test_records_all_sites_detached_cpu(full_model, ids):
    with trace(full_model) as tr:
        out = full_model(ids)
    assert len(tr) == sum(1 for _ in hook_points(full_model))
    assert "blocks.0.states.hook_routing" in tr and "model.blocks.0.states.hook_routing" in tr
    r = tr["blocks.0.states.hook_routing"]
    assert r.shape == (2, 21, 4) and not r.requires_grad and r.device.type == "cpu"
    assert torch.equal(tr["hook_final"], out.get("hidden", tr["hook_final"]))
    assert torch.equal(tr.tokens, ids)
    assert tr.metadata["schema_version"] == 2 and tr.metadata["config"]["num_states"] == 4
    assert isinstance(tr.metadata["weights_hash"], str)
    assert n_hooks(full_model) == 0


def test_names_filter(full_model, ids):
    with trace(full_model, names="blocks.*.attn.hook_decay") as tr:
        full_model(ids)
    assert tr.names == ["blocks.0.attn.hook_decay", "blocks.1.attn.hook_decay"]
    with trace(full_model, names=["hook_embed", "blocks.1.states.*"]) as tr:
        full_model(ids)
    assert tr.names[0] == "hook_embed" and all(n.startswith("blocks.1.states.") for n in tr.names[1:])
    with trace(full_model, names=lambda n: n.endswith("hook_resid_post")) as tr:
        full_model(ids)
    assert tr.names == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    with pytest.raises(ValueError, match="names"):
        with trace(full_model, names="nope.*"):
            pass
    assert n_hooks(full_model) == 0


def test_hooks_removed_when_block_raises(full_model, ids):
    with pytest.raises(RuntimeError, match="boom"):
        with trace(full_model):
            full_model(ids)
            raise RuntimeError("boom")
    assert n_hooks(full_model) == 0


def test_hooks_removed_when_forward_raises(full_model, ids):
    site = dict(hook_points(full_model))["blocks.1.attn.hook_v"]

    def failing(mod, inp, out):
        raise RuntimeError("hook failed")

    h = site.register_forward_hook(failing)
    try:
        with pytest.raises(RuntimeError, match="hook failed"):
            with trace(full_model) as tr:
                full_model(ids)
    finally:
        h.remove()
    assert n_hooks(full_model) == 0
    assert "blocks.0.attn.hook_v" in tr  # recorded before the failure


def test_several_calls_concatenate_along_step_axis(full_model, ids):
    with trace(full_model) as one:
        full_model(ids)
    with trace(full_model) as two:
        out = full_model(ids[:, :13])
        full_model(ids[:, 13:], state=out["state"])
    assert torch.equal(two.tokens, ids)
    for name in ["hook_embed", "blocks.0.attn.hook_q_features", "blocks.1.states.hook_routing",
                 "blocks.0.memory.hook_read_scores", "blocks.1.states.hook_slots"]:
        torch.testing.assert_close(two[name], one[name], atol=1e-5, rtol=1e-4)
    # update positions are absolute
    assert torch.equal(two["blocks.0.states.hook_update_positions"], one["blocks.0.states.hook_update_positions"])
    assert len(two.records("blocks.0.attn.hook_decay")) == 2
    assert two["blocks.0.attn.hook_decay"].shape == (2,)


def test_run_with_trace_loss_and_predictions(plain_model, ids):
    out, tr = run_with_trace(plain_model, ids, top_k=3)
    logits = out["logits"]
    ref = torch.full(ids.shape, float("nan"))
    for b in range(2):
        for t in range(1, ids.shape[1]):
            ref[b, t] = F.cross_entropy(logits[b, t - 1][None], ids[b, t][None])
    torch.testing.assert_close(tr["loss.per_token"], ref, equal_nan=True)
    probs = logits.softmax(-1)
    top = probs.topk(3, -1)
    assert torch.equal(tr["predictions.top_ids"], top.indices)
    torch.testing.assert_close(tr["predictions.top_probs"], top.values)
    assert abs(torch.nanmean(tr["loss.per_token"]).item() - plain_model(ids, labels=ids)["loss"].item()) < 1e-5


def test_trace_mapping_errors(plain_model, ids):
    with trace(plain_model, names="hook_embed") as tr:
        plain_model(ids)
    with pytest.raises(KeyError, match="not in this trace"):
        tr["blocks.0.hook_resid_post"]
    assert isinstance(tr, Trace) and len(tr) == 1 and list(tr) == ["hook_embed"]


def test_metadata_records_the_declared_layouts(full_model, ids):
    from pulse.hooks import hook_sites

    _, tr = run_with_trace(full_model, ids, top_k=2)
    sites = hook_sites(full_model)
    recorded = tr.metadata["hook_sites"]
    assert {n: recorded[n] for n in sites} == {n: s.record() for n, s in sites.items()}
    assert recorded["loss.per_token"] == {"layout": ["batch", "pos"], "kind": "loss"}
    assert tr.layout("predictions.top_ids") == ("batch", "pos", "rank")
    assert tr.layout("model.blocks.0.attn.hook_v") == ("batch", "head", "pos", "d_v")
    assert tr.kind("blocks.1.states.hook_update_gate") == "gate"
    for name in tr.names:  # what was recorded has as many axes as its layout names
        assert tr[name].dim() == len(tr.layout(name)), name
    assert tr.step_axis("blocks.0.attn.hook_q_features") == 2 and tr.step_axis("blocks.0.states.hook_slots") == 1
    assert tr.step_axis("blocks.0.states.hook_importance") is None
    tr.add("extra.unlaid", torch.zeros(2, 3))  # no layout given: [B, T, ...] assumed
    assert tr.layout("extra.unlaid") is None and tr.step_axis("extra.unlaid") == 1
    with pytest.raises(ValueError, match="layout"):
        tr.add("extra.bad", torch.zeros(2, 3), layout=("batch",))


class _Misnamed(torch.nn.Module):
    """Names that the old name rules read wrongly: the declared layouts decide."""

    def __init__(self, bad_layout=False):
        super().__init__()
        from pulse.hooks import HookPoint

        self.attn = torch.nn.Module()
        self.attn.hook_out = HookPoint(layout=("batch", "pos", "d_model"), kind="output")  # not per head
        self.hook_decay = HookPoint(layout=("batch", "pos") if not bad_layout else ("pos",), kind="decay")
        self.hook_table = HookPoint(layout=("batch", "slot"), kind="importance")  # no step axis

    def forward(self, ids):
        x = ids.float()[..., None].expand(*ids.shape, 3)
        self.attn.hook_out(x)
        self.hook_decay(ids.float())
        self.hook_table(ids.float()[:, :2])
        return x


def test_several_calls_join_along_the_declared_step_axis():
    model = _Misnamed()
    ids = torch.arange(10).view(2, 5)
    with trace(model) as tr:
        model(ids[:, :2])
        model(ids[:, 2:])
    assert torch.equal(tr["attn.hook_out"][..., 0], ids.float())  # joined along pos (axis 1), not axis 2
    assert torch.equal(tr["hook_decay"], ids.float())  # joined along pos: not a per-parameter value
    assert torch.equal(tr["hook_table"], ids[:, 2:4].float()) and len(tr.records("hook_table")) == 2


def test_a_layout_that_does_not_fit_its_value_is_refused(ids):
    model = _Misnamed(bad_layout=True)
    with pytest.raises(ValueError, match="declares layout"):
        with trace(model):
            model(ids)
    assert n_hooks(model) == 0
