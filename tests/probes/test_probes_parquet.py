import json
import os

import duckdb
import pandas as pd
import pytest
import torch

from probes import Trace, TraceFormatError, run_with_trace, trace, trace_to_parquet_streaming


def bits(t):
    t = t.contiguous()
    return t if t.dtype == torch.bool else t.view(torch.uint8)


def assert_bitwise(a: Trace, b: Trace):
    assert a.names == b.names
    for n in a.names:
        x, y = a[n], b[n]
        assert x.dtype == y.dtype and x.shape == y.shape, n
        assert torch.equal(bits(x), bits(y)), n


def test_exact_round_trip(full_model, ids, tmp_path):
    mask = torch.ones_like(ids, dtype=torch.float32)
    mask[0, :3] = 0
    _, tr = run_with_trace(full_model, ids, attention_mask=mask, prompt="hello")
    tr.add("extra.half", torch.randn(2, 5, 3).half())
    tr.add("extra.bf16", torch.randn(2, 5).bfloat16())
    tr.add("extra.bool", torch.rand(2, 5, 2) > 0.5)
    tr.add("extra.int32", torch.randint(-5, 5, (2, 5), dtype=torch.int32))
    path = tr.to_parquet(tmp_path / "trace")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp folder left
    back = Trace.from_parquet(path)
    assert_bitwise(tr, back)
    assert torch.equal(back.tokens, ids) and torch.equal(back.attention_mask, mask)
    assert back.metadata["prompt"] == "hello" and back.metadata["weights_hash"] == tr.metadata["weights_hash"]
    for kind in ["routing", "gates", "token_loss", "memory_reads", "importance"]:
        pd.testing.assert_frame_equal(back.frame(kind), tr.frame(kind))
    # overwrite in place works and stays exact
    tr.to_parquet(path)
    assert_bitwise(tr, Trace.from_parquet(path))


def test_duckdb_reads_tables(bank_model, ids, tmp_path):
    _, tr = run_with_trace(bank_model, ids)
    d = tr.to_parquet(tmp_path / "trace")
    got = duckdb.sql(f"select layer, avg(weight) as w from '{d}/routing.parquet' group by layer order by layer").df()
    ref = tr.frame("routing").groupby("layer").weight.mean()
    assert got.layer.tolist() == [0, 1]
    assert abs(got.w.values - ref.values).max() < 1e-6
    n = duckdb.sql(f"select count(*) from read_parquet('{d}/tensors/*.parquet', union_by_name=true) "
                   f"where name = 'blocks.0.states.hook_routing'").fetchall()[0][0]
    assert n == tr["blocks.0.states.hook_routing"].numel()
    assert len(pd.read_parquet(d / "token_loss.parquet")) == ids.numel()


def test_refuses_bad_folders(plain_model, ids, tmp_path):
    with trace(plain_model, names="blocks.0.*") as tr:
        plain_model(ids)
    d = tr.to_parquet(tmp_path / "t")
    with pytest.raises(TraceFormatError, match="missing"):
        Trace.from_parquet(tmp_path / "nothing")
    meta = json.loads((d / "metadata.json").read_text())
    meta["schema_version"] = 999
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(TraceFormatError, match="schema_version 999"):
        Trace.from_parquet(d)
    d = tr.to_parquet(tmp_path / "t")
    files = sorted((d / "tensors").glob("*.parquet"))
    files[0].write_bytes(files[0].read_bytes()[:-40] + b"garbage" * 5)
    with pytest.raises(TraceFormatError, match="not a readable Parquet"):
        Trace.from_parquet(d)
    files[1].unlink()
    d2 = tr.to_parquet(tmp_path / "t2")
    next((d2 / "tensors").glob("*.parquet")).unlink()
    with pytest.raises(TraceFormatError, match="file missing"):
        Trace.from_parquet(d2)
    (d2 / "metadata.json").write_text("{not json")
    with pytest.raises(TraceFormatError, match="not valid JSON"):
        Trace.from_parquet(d2)
    assert issubclass(TraceFormatError, ValueError)


def test_failed_write_leaves_nothing(plain_model, ids, tmp_path):
    with trace(plain_model, names="hook_embed") as tr:
        plain_model(ids)
    tr.add("bad", torch.zeros(2, 3, dtype=torch.complex64))
    with pytest.raises(TypeError):
        tr.to_parquet(tmp_path / "t")
    assert os.listdir(tmp_path) == []


def test_streaming_matches_one_shot(tmp_path):
    from probe_models import BANK, make_model

    model = make_model(use_memory=True, num_layers=1, chunk_size=64, **BANK)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 50, (5000,), generator=g)
    names = ["blocks.0.states.hook_routing", "blocks.0.states.hook_slots", "blocks.0.states.hook_update_positions",
             "blocks.0.attn.hook_out", "blocks.0.attn.hook_decay", "blocks.0.memory.*", "hook_final",
             "blocks.0.states.hook_update_gate", "blocks.0.states.hook_importance"]
    d = trace_to_parquet_streaming(model, ids, tmp_path / "stream", chunk_len=777, names=names)
    streamed = Trace.from_parquet(d)
    _, one = run_with_trace(model, ids[None], names=names)
    assert streamed.names == one.names
    for n in one.names:
        assert streamed[n].shape == one[n].shape and streamed[n].dtype == one[n].dtype, n
        if streamed[n].dtype.is_floating_point:
            torch.testing.assert_close(streamed[n], one[n], atol=2e-4, rtol=1e-3, equal_nan=True, msg=n)
        else:
            assert torch.equal(streamed[n], one[n]), n
    assert torch.equal(streamed.tokens, ids[None])
    tl = duckdb.sql(f"select max(pos), count(*) from '{d}/token_loss.parquet'").fetchall()[0]
    assert tl == (4999, 5000)
    r = pd.read_parquet(d / "routing.parquet")
    pd.testing.assert_frame_equal(r.reset_index(drop=True), one.frame("routing"), atol=2e-4, check_exact=False)


def test_layouts_are_stored_in_the_metadata(bank_model, ids, tmp_path):
    import pyarrow.parquet as pq

    _, tr = run_with_trace(bank_model, ids)
    d = tr.to_parquet(tmp_path / "trace")
    doc = json.loads((d / "metadata.json").read_text())
    assert doc["schema_version"] == 2
    entries = {e["name"]: e for e in doc["tensors"]}
    slots, decay = entries["blocks.0.states.hook_slots"], entries["blocks.0.attn.hook_decay"]
    assert slots["layout"] == ["batch", "update", "slot", "d_state"] and slots["kind"] == "state"
    assert slots["step_axis"] == 1
    assert decay["layout"] == ["head"] and decay["kind"] == "decay" and decay["step_axis"] is None
    assert doc["metadata"]["hook_sites"]["blocks.1.states.hook_routing"] == {"layout": ["batch", "pos", "slot"],
                                                                             "kind": "routing"}
    # each tensor file's own Parquet schema metadata names its layout and kind
    meta = pq.read_schema(d / entries["blocks.0.attn.hook_q_features"]["file"]).metadata
    assert meta[b"pulse.name"] == b"blocks.0.attn.hook_q_features"
    assert json.loads(meta[b"pulse.layout"]) == ["batch", "head", "pos", "d_k"]
    assert json.loads(meta[b"pulse.kind"]) == "attention_input"
    back = Trace.from_parquet(d)
    for name in tr.names:
        assert back.layout(name) == tr.layout(name) and back.kind(name) == tr.kind(name), name


@pytest.mark.parametrize("gate_type", ["gru", "lstm"])
def test_round_trip_keeps_every_registered_frame(gate_type, ids, tmp_path):
    """Every frame of the registry reads back the same from the folder's tensors, and every
    stored kind's table in the folder is that frame."""
    from probe_models import BANK, make_model

    from probes.frames import FRAME_KINDS, frame_specs

    model = make_model(use_memory=True, use_recurrent_state=True, state_gate_type=gate_type, max_states=5, **BANK)
    model.blocks[1].states.prune_states([2], step=4)
    mask = torch.ones_like(ids, dtype=torch.float32)
    mask[0, :3] = 0
    _, tr = run_with_trace(model, ids, attention_mask=mask)
    # every frame but the per-channel recurrences' (the family adapters' sites: tests/probes/adapters)
    assert tr.available_frames() == [k for k in FRAME_KINDS if not k.startswith("channel_")]
    d = tr.to_parquet(tmp_path / "trace")
    back = Trace.from_parquet(d)
    options = {"decay_attention": dict(layer=1, head=1, window=(4, 12), sample=0)}
    stored = []
    for spec in frame_specs():
        if spec.kind.startswith("channel_"):
            assert not (d / f"{spec.kind}.parquet").exists()
            continue
        want = tr.frame(spec.kind, **options.get(spec.kind, {}))
        assert len(want), spec.kind
        pd.testing.assert_frame_equal(back.frame(spec.kind, **options.get(spec.kind, {})), want, obj=spec.kind)
        if spec.stored:
            stored.append(spec.kind)
            got = pd.read_parquet(d / f"{spec.kind}.parquet")
            for col in got.columns:  # text columns read back as pandas strings (missing: NaN)
                if pd.api.types.is_string_dtype(got[col]) and want[col].dtype == object:
                    got[col] = got[col].astype(object).where(got[col].notna(), None)
            pd.testing.assert_frame_equal(got, want, obj=spec.kind)
        else:
            assert not (d / f"{spec.kind}.parquet").exists()
    assert json.loads((d / "metadata.json").read_text())["tables"] == sorted(stored)
