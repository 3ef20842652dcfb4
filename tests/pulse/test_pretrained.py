import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from factories import tiny_config
from pulse import CheckpointError, PulseForCausalLM, TransformerConfig, TransformerForCausalLM, load_pretrained


def test_round_trip_is_exact(tmp_path, variant_config):
    model = PulseForCausalLM(variant_config).eval()
    ids = torch.randint(1, 40, (2, 20))
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = PulseForCausalLM.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    torch.testing.assert_close(loaded(ids)["logits"], model(ids)["logits"], atol=0, rtol=0)
    again = load_pretrained(tmp_path / "m")
    assert isinstance(again, PulseForCausalLM)


def test_transformer_round_trip(tmp_path):
    model = TransformerForCausalLM(TransformerConfig(vocab_size=30, hidden_size=16, num_layers=1, num_heads=2)).eval()
    model.save_pretrained(tmp_path)
    ids = torch.randint(0, 30, (1, 7))
    torch.testing.assert_close(load_pretrained(tmp_path)(ids)["logits"], model(ids)["logits"])


@pytest.fixture
def saved(tmp_path):
    PulseForCausalLM(tiny_config()).save_pretrained(tmp_path)
    return tmp_path


def test_missing_tensor_refused(saved):
    tensors = load_file(saved / "model.safetensors")
    tensors.pop("blocks.0.attn.decay_logit")
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing.*blocks.0.attn.decay_logit"):
        PulseForCausalLM.from_pretrained(saved)


def test_wrong_shape_refused(saved):
    tensors = load_file(saved / "model.safetensors")
    tensors["norm.weight"] = torch.ones(7)
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match="norm.weight has shape"):
        PulseForCausalLM.from_pretrained(saved)


def test_extra_tensor_refused(saved):
    tensors = load_file(saved / "model.safetensors")
    tensors["surprise"] = torch.ones(1)
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match="unexpected.*surprise"):
        PulseForCausalLM.from_pretrained(saved)


def test_unknown_config_field_refused(saved):
    data = json.loads((saved / "config.json").read_text())
    data["flux_capacitor"] = 1
    (saved / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="flux_capacitor"):
        PulseForCausalLM.from_pretrained(saved)


def test_damaged_or_absent_files_refused(saved, tmp_path):
    (saved / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        PulseForCausalLM.from_pretrained(saved)
    with pytest.raises(CheckpointError, match="config.json"):
        load_pretrained(tmp_path / "nowhere")
    (saved / "config.json").write_text(json.dumps({"model_type": "gpt9"}))
    with pytest.raises(CheckpointError, match="gpt9"):
        load_pretrained(saved)
    for damaged, message in (("{half", "not valid JSON"), ("[]", "expected a JSON object")):
        (saved / "config.json").write_text(damaged)
        with pytest.raises(CheckpointError, match=message):
            load_pretrained(saved)


def test_no_pickle_anywhere():
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2]
    for package in ("pulse", "probes", "workbench"):
        for path in (root / package).rglob("*.py"):
            text = path.read_text()
            assert "import pickle" not in text, path
            for line in text.splitlines():
                if "torch.load(" in line:
                    assert "weights_only=True" in line, f"{path}: {line}"


def test_round_trip_keeps_importance_and_alive_mask(tmp_path):
    model = PulseForCausalLM(tiny_config(num_states=4, state_dim=16, state_num_heads=2)).eval()
    bank = model.blocks[1].states
    with torch.no_grad():
        bank.importance_logits.copy_(torch.tensor([2.0, -3.0, 0.5, -4.0]))
    assert model.prune_low_importance_states() == 2
    model.save_pretrained(tmp_path)
    loaded = PulseForCausalLM.from_pretrained(tmp_path)
    lb = loaded.blocks[1].states
    assert lb.alive.tolist() == [True, False, True, False]
    torch.testing.assert_close(lb.get_importance_scores(), bank.get_importance_scores())
    ids = torch.randint(1, 40, (1, 30))
    torch.testing.assert_close(loaded(ids)["logits"], model(ids)["logits"], atol=0, rtol=0)
