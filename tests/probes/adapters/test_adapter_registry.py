"""probes.adapters: the registry, adapt(), and load_pretrained() on save_pretrained folders."""
import json

import pytest
import torch

pytest.importorskip("transformers", reason="the adapters need transformers (pip install 'pulse-workbench[adapters]')")

from conftest import BUILDERS, tiny_mamba  # noqa: E402

from probes.adapters import adapt, load_pretrained, register_adapter, registered_adapters  # noqa: E402
from probes.adapters import _ADAPTERS  # noqa: E402
from probes.adapters.base import FamilyAdapter  # noqa: E402
from pulse.hooks import hook_sites  # noqa: E402
from pulse.io import CheckpointError  # noqa: E402


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_load_pretrained_opens_a_save_pretrained_folder(tmp_path, tokens, family):
    model = BUILDERS[family]()
    want = model(tokens).logits
    adapter = adapt(model)
    keys = set(model.state_dict())
    model.save_pretrained(tmp_path / family)  # an adapted model saves as the plain one
    adapter.remove()
    assert set(model.state_dict()) == keys
    loaded = load_pretrained(tmp_path / family)
    assert type(loaded) is type(model) and not loaded.training
    assert isinstance(adapt(loaded), FamilyAdapter) and adapt(loaded) is loaded._pulse_adapter
    assert "blocks.0.mixer.hook_decay" in hook_sites(loaded)
    assert torch.equal(loaded(tokens).logits, want)
    plain = load_pretrained(tmp_path / family, hooked=False)
    assert not hook_sites(plain) and torch.equal(plain(tokens).logits, want)


def test_load_pretrained_refuses_bad_folders(tmp_path):
    with pytest.raises(CheckpointError, match="not a folder"):
        load_pretrained(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_pretrained(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_pretrained(bad)
    (bad / "config.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        load_pretrained(bad)
    (bad / "config.json").write_text(json.dumps({"hidden_size": 16}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="no 'model_type'"):
        load_pretrained(bad)
    (bad / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"model_type 'llama' is not one of \[.*'mamba'.*'rwkv'"):
        load_pretrained(bad)
    # a known family with its weights missing: the error names the folder and the family
    model = tiny_mamba()
    model.save_pretrained(tmp_path / "noweights")
    for f in (tmp_path / "noweights").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(CheckpointError, match=r"noweights: could not load the 'mamba' model"):
        load_pretrained(tmp_path / "noweights")


def test_load_pretrained_opens_a_pulse_folder_too(tmp_path, tokens):
    from factories import tiny_config

    from pulse import PulseForCausalLM

    model = PulseForCausalLM(tiny_config()).eval()
    model.save_pretrained(tmp_path / "pulse")
    loaded = load_pretrained(tmp_path / "pulse")
    assert type(loaded) is PulseForCausalLM
    with pytest.raises(ValueError, match="PULSE model; its hook sites are built in"):
        adapt(loaded)


def test_registry_adapt_and_registration():
    assert {"mamba", "mamba2", "rwkv"} <= set(registered_adapters())
    model = tiny_mamba()
    first = adapt(model)
    assert adapt(model) is first
    with pytest.raises(ValueError, match="other options"):
        adapt(model, full_state=True)
    with pytest.raises(ValueError, match="already adapted"):
        type(first)(model)
    first.remove()
    assert adapt(model, full_state=True).full_state

    class Other(torch.nn.Module):
        class config:  # noqa: N801
            model_type = "tiny-other"

    with pytest.raises(ValueError, match=r"no adapter for model_type 'tiny-other'; registered: \["):
        adapt(Other())
    seen = []
    register_adapter("tiny-other", lambda m, **kw: seen.append(m) or "adapter")  # the one line a family needs
    try:
        other = Other()
        assert adapt(other) == "adapter" and seen == [other]
    finally:
        _ADAPTERS.pop("tiny-other")
    with pytest.raises(ValueError, match="non-empty string"):
        register_adapter("", lambda m: None)
    with pytest.raises(TypeError, match="not callable"):
        register_adapter("x", None)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_trace_and_parquet_record_the_adapter_sites(tmp_path, tokens, family):
    """probes.trace sees the adapter's sites with their declared layouts; two calls join along pos."""
    from probes import Trace, trace

    model = BUILDERS[family]()
    adapt(model)
    with trace(model) as tr:
        model(tokens[:, :5], use_cache=False)
        model(tokens[:, 5:], use_cache=False)
    sites = hook_sites(model)
    assert set(tr.names) == set(sites)
    for name, site in sites.items():
        assert tr.metadata["hook_sites"][name] == site.record()
        value = tr[name]
        assert value.ndim == len(site.layout), name
        if "pos" in site.layout:
            assert value.shape[site.layout.index("pos")] == 12, name
    tr.to_parquet(tmp_path / "trace")
    back = Trace.from_parquet(tmp_path / "trace")
    for name in sites:
        assert torch.equal(back[name], tr[name]), name
