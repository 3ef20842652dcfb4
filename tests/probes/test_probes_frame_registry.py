"""The frame registry: every tidy table registered once, everything else derived from it.

Every registered frame builds on a PULSE model with every option on (GRU and LSTM banks), on
the bank-only model and on the Transformer, or says it does not apply; the Parquet kinds, the
names filter of the workbench and ``available_kinds`` follow the registry (also a frame
registered later); frames pick their entries by declared kind and layout, not by name.
"""

import pandas as pd
import pytest
import torch

import probes
from probes import Trace, run_with_trace, select_hooks
from probes import frames as fr
from probes import parquet
from probes.frames import FRAME_KINDS, FrameHooks, Need, frame_hooks, frame_specs, register_frame, stored_kinds
from pulse import PulseConfig, PulseForCausalLM
from pulse.hooks import hook_sites, step_axis
from pulse.transformer import TransformerConfig, TransformerForCausalLM

BANK = dict(num_states=4, state_dim=16, state_num_heads=2, max_states=5)
SMALL = dict(vocab_size=50, hidden_size=32, num_layers=2, num_heads=2, chunk_size=4, conv_kernel_size=3,
             memory_capacity=6, memory_top_k=2)


def _pulse(**kw):
    torch.manual_seed(0)
    return PulseForCausalLM(PulseConfig(**{**SMALL, **kw})).eval()


MODELS = {
    "pulse_everything_gru": lambda: _pulse(use_memory=True, use_recurrent_state=True, **BANK),
    "pulse_everything_lstm": lambda: _pulse(use_memory=True, use_recurrent_state=True, state_gate_type="lstm",
                                            **BANK),
    "pulse_bank_only": lambda: _pulse(use_linear_attention=False, state_communication=False, **BANK),
    "transformer": lambda: (torch.manual_seed(0), TransformerForCausalLM(TransformerConfig(
        vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2)).eval())[1],
}
BANK_KINDS = {"routing", "read_weights", "gates", "importance", "pruning_events", "token_loss", "predictions"}
# the per-channel recurrences' frames read the family adapters' sites (tests/probes/adapters), never PULSE's
CHANNEL_KINDS = {"channel_decay", "channel_state", "channel_gates"}
EXPECTED = {
    "pulse_everything_gru": set(FRAME_KINDS) - CHANNEL_KINDS,
    "pulse_everything_lstm": set(FRAME_KINDS) - CHANNEL_KINDS,
    "pulse_bank_only": BANK_KINDS,
    "transformer": {"token_loss", "predictions"},
}
OPTIONS = {"decay_attention": dict(layer=1, head=1, window=(3, 10), sample=1)}


def _trace(model):
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(1, 50, (2, 13), generator=g)
    mask = torch.ones_like(ids, dtype=torch.float32)
    mask[1, :3] = 0  # left padding on row 1
    if hasattr(model, "state_banks"):
        for _, bank in model.state_banks():
            bank.prune_states([1], step=3)  # one event, so pruning_events has rows
    return run_with_trace(model, ids, attention_mask=mask)[1]


@pytest.fixture(scope="module", params=sorted(MODELS))
def traced(request):
    model = MODELS[request.param]()
    return request.param, model, _trace(model)


def test_every_registered_frame_builds_or_says_it_does_not_apply(traced):
    family, _, tr = traced
    assert set(tr.available_frames()) == EXPECTED[family]
    for spec in frame_specs():
        if spec.kind in EXPECTED[family]:
            df = tr.frame(spec.kind, **OPTIONS.get(spec.kind, {}))
            assert isinstance(df, pd.DataFrame) and list(df.columns) == list(spec.columns), spec.kind
            assert len(df) > 0, f"{family}: {spec.kind} applies but has no rows"
        else:
            with pytest.raises(KeyError, match="does not apply") as err:
                tr.frame(spec.kind, **OPTIONS.get(spec.kind, {}))
            assert "available in this trace" in str(err.value)
            assert spec.missing(tr) and spec.missing(tr)[0].describe() in str(err.value)


def test_frames_keep_their_values(traced):
    family, model, tr = traced
    if family == "transformer":
        assert len(tr.frame("token_loss")) == 2 * 13 - 3 and len(tr.frame("predictions")) == (2 * 13 - 3) * 5
        return
    r = tr.frame("routing")
    row = r[(r["sample"] == 1) & (r.layer == 1) & (r.pos == 7) & (r.slot == 2)]
    assert row.weight.item() == tr["blocks.1.states.hook_routing"][1, 7, 2].item()
    g = tr.frame("gates")
    labels = {"gru": ["reset", "update"], "lstm": ["input", "forget", "output"]}[model.config.state_gate_type]
    assert list(dict.fromkeys(g.gate)) == labels  # gate by gate, each over the layers
    assert list(dict.fromkeys(zip(g.gate, g.layer))) == [(x, l) for x in labels for l in (0, 1)]
    name = f"blocks.0.states.hook_{labels[-1]}_gate"
    sel = g[(g.gate == labels[-1]) & (g.layer == 0) & (g["sample"] == 0) & (g["update"] == 1) & (g.slot == 3)]
    assert abs(sel.value.item() - tr[name][0, 1, 3].mean().item()) < 1e-6
    imp = tr.frame("importance")
    assert imp[imp.layer == 0].alive.tolist() == [True, False, True, True, False]  # slot 1 pruned, 5th free
    if family != "pulse_bank_only":
        rec = tr.frame("recurrent")
        gate = tr["blocks.1.recurrent.hook_input_gate"][0, 5].float().mean().item()
        assert abs(rec[(rec.layer == 1) & (rec["sample"] == 0) & (rec.pos == 5)].input_gate_mean.item() - gate) < 1e-6
        m = tr.frame("memory_reads")
        assert m.score.notna().all() and m.weight.notna().all()
        fg = tr.frame("fusion_gate")
        assert abs(fg[(fg.layer == 0) & (fg["sample"] == 1) & (fg.pos == 4)].gate.item()
                   - tr["blocks.0.hook_fusion_gate"][1, 4].float().mean().item()) < 1e-6


def test_the_lists_of_kinds_derive_from_the_registry():
    kinds = tuple(s.kind for s in frame_specs())
    assert FRAME_KINDS == kinds and tuple(FRAME_KINDS) == kinds and list(probes.FRAME_KINDS) == list(kinds)
    piece = {s.kind for s in frame_specs() if s.stored and s.per_piece}
    param = {s.kind for s in frame_specs() if s.stored and not s.per_piece}
    assert set(parquet.PIECE_KINDS) == piece and set(parquet.PARAM_KINDS) == param and not piece & param
    assert param == {"importance", "decay", "pruning_events", "channel_decay"}
    assert {s.kind for s in frame_specs() if not s.stored} == {"decay_attention"}
    from workbench.core import TRACE_NAMES

    assert isinstance(TRACE_NAMES, FrameHooks) and TRACE_NAMES.kinds is None


def test_per_piece_follows_the_step_axes_of_what_a_frame_needs():
    for spec in frame_specs():
        laid = [n.layout for n in spec.required if n.layout is not None]
        has_steps = any(step_axis(layout) is not None for layout in laid)
        assert spec.per_piece == has_steps, spec.kind


def test_frame_hooks_choose_sites_by_kind():
    model = MODELS["pulse_everything_gru"]()
    chosen = list(select_hooks(model, frame_hooks()))
    expected = ["attn.hook_q_features", "attn.hook_k_features", "attn.hook_decay", "attn.hook_normalizer",
                "recurrent.hook_input_gate", "recurrent.hook_state", "memory.hook_read_scores",
                "memory.hook_read_weights", "memory.hook_read_slots", "states.hook_importance", "states.hook_alive",
                "states.hook_routing", "states.hook_reset_gate", "states.hook_update_gate",
                "states.hook_update_positions", "states.hook_read_weights", "hook_fusion_gate"]
    assert chosen == [f"blocks.{i}.{s}" for i in (0, 1) for s in expected]
    assert list(select_hooks(model, frame_hooks(["importance"]))) == [
        f"blocks.{i}.states.hook_{s}" for i in (0, 1) for s in ("importance", "alive")]
    # the recurrent layer's input gate comes with its state, the bank's positions with its gates
    assert list(select_hooks(model, frame_hooks(["recurrent"]))) == [
        f"blocks.{i}.recurrent.hook_{s}" for i in (0, 1) for s in ("input_gate", "state")]
    assert select_hooks(MODELS["transformer"](), frame_hooks()) == {}  # nothing to read: no error
    with pytest.raises(ValueError, match="not a frame kind"):
        frame_hooks(["nonsense"])
    _, tr = run_with_trace(model, torch.randint(1, 50, (1, 9)), names=frame_hooks())
    assert tr.available_frames() == [k for k in FRAME_KINDS if k not in CHANNEL_KINDS] and set(tr.names) - {
        "loss.per_token", "predictions.top_ids", "predictions.top_probs"} == set(chosen)
    assert tr.metadata["names_filter"] == "frame_hooks()"


def test_frames_read_declared_kinds_not_names():
    tr = Trace()
    w = torch.rand(1, 6, 3)
    tr.add("blocks.2.bank.hook_w", w, layout=("batch", "pos", "slot"), kind="routing")
    # a site named like the routing hook but declared as something else is not routing
    tr.add("blocks.0.states.hook_routing", torch.rand(1, 6, 3), layout=("batch", "pos", "slot"), kind="score")
    assert tr.available_frames() == ["routing"]
    r = tr.frame("routing")
    assert set(r.layer) == {2} and r.weight.tolist() == w.reshape(-1).tolist()
    tr.add("blocks.2.bank.hook_decide_gate", torch.rand(1, 2, 3, 4), layout=("batch", "update", "slot", "d_state"),
           kind="gate")
    tr.add("blocks.2.bank.hook_when", torch.tensor([[3, -1]]), layout=("batch", "update"), kind="positions")
    g = tr.frame("gates")
    assert set(g.gate) == {"decide"} and g.pos.tolist() == [3, 3, 3]  # update 1 did not happen


def test_a_registered_frame_reaches_everything(tmp_path):
    assert "final_norm" not in FRAME_KINDS

    @register_frame("final_norm", needs=[Need("residual", ("batch", "pos", "d_model"), name="hook_final")],
                    per_piece=True, columns=("sample", "pos", "norm"))
    def final_norm(tr):
        """Norm of the final hidden state per token."""
        name = Need("residual", name="hook_final").found(tr)[0]
        return fr._token_table(tr, name, {"norm": fr._np(tr[name].norm(dim=-1))}, [])[["sample", "pos", "norm"]]

    try:
        with pytest.raises(ValueError, match="registered already"):
            register_frame("final_norm", needs=[Need("residual")], per_piece=True)(final_norm)
        assert "final_norm" in FRAME_KINDS and "final_norm" in parquet.PIECE_KINDS
        assert "final_norm" in stored_kinds(per_piece=True) and "final_norm" not in stored_kinds(per_piece=False)
        model = MODELS["pulse_bank_only"]()
        assert "hook_final" in select_hooks(model, frame_hooks())
        _, tr = run_with_trace(model, torch.randint(1, 50, (2, 8)), names=frame_hooks(["final_norm"]))
        assert set(tr.available_frames()) == {"pruning_events", "token_loss", "predictions", "final_norm"}
        assert tr.available_frames()[-1] == "final_norm"  # registration order
        d = tr.to_parquet(tmp_path / "t")
        pd.testing.assert_frame_equal(pd.read_parquet(d / "final_norm.parquet"), tr.frame("final_norm"))
        assert fr.frame_spec("final_norm").doc == "Norm of the final hidden state per token."
    finally:
        fr._REGISTRY.pop("final_norm", None)
    assert "final_norm" not in FRAME_KINDS and "final_norm" not in parquet.PIECE_KINDS


def test_register_frame_refuses_bad_declarations():
    with pytest.raises(TypeError, match="Need"):
        register_frame("x_frame", needs=["routing"], per_piece=True)
    with pytest.raises(ValueError, match="required"):
        register_frame("x_frame", needs=[Need("routing", optional=True)], per_piece=True)
    with pytest.raises(ValueError, match="unknown axis"):
        Need("routing", ("batch", "tokens"))
    with pytest.raises(ValueError, match="metadata"):
        Need("routing", metadata="state_bank_events")
    assert "x_frame" not in FRAME_KINDS


def test_every_hook_a_frame_reads_is_declared_by_some_model():
    """No need names a kind/layout no model declares (a typo would leave a frame never applying)."""
    sites = [s for build in MODELS.values() for s in hook_sites(build()).values()]
    transformers = pytest.importorskip("transformers")
    from probes.adapters import adapt

    for model in (transformers.MambaForCausalLM(transformers.MambaConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, state_size=4, expand=2)),
            transformers.RwkvForCausalLM(transformers.RwkvConfig(
                vocab_size=50, hidden_size=16, num_hidden_layers=2, attention_hidden_size=16,
                intermediate_size=32, context_length=64))):
        adapt(model)
        sites += list(hook_sites(model).values())
    entries = {"loss", "prediction"}  # the trace's own entries (probes.trace.ENTRY_LAYOUTS)
    for spec in frame_specs():
        for need in spec.needs:
            if need.metadata is None and need.kind not in entries:
                assert any(need.matches_site(s) for s in sites), f"{spec.kind}: {need.describe()}"
