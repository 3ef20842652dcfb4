import json

import pytest

from pulse import ConfigError, PulseConfig
from pulse.transformer import TransformerConfig

BAD_FIELDS = [
    ("vocab_size", 0), ("hidden_size", -1), ("num_layers", 0), ("num_heads", 0),
    ("num_heads", 3), ("intermediate_size", 0), ("conv_kernel_size", 0), ("chunk_size", 0),
    ("decay_half_life_min", 0.0), ("linear_attn_eps", 0.0), ("rms_norm_eps", -1.0),
    ("dropout", 1.0), ("initializer_range", 0.0), ("memory_capacity", 0), ("memory_top_k", 0),
    ("num_states", -1), ("state_dim", 0), ("state_gate_type", "rnn"), ("state_num_heads", 0),
    ("prune_threshold", 1.5), ("importance_reg", -0.1), ("pad_token_id", 300),
    ("eos_token_id", -1), ("bos_token_id", 256), ("vocab_size", True),
]


@pytest.mark.parametrize("field,value", BAD_FIELDS)
def test_every_bad_field_is_named(field, value):
    with pytest.raises(ConfigError, match=field):
        PulseConfig(**{field: value})


def test_cross_field_errors_are_named():
    with pytest.raises(ConfigError, match="max_states"):
        PulseConfig(num_states=8, max_states=4)
    with pytest.raises(ConfigError, match="state_num_heads"):
        PulseConfig(num_states=4, state_dim=10, state_num_heads=4)
    with pytest.raises(ConfigError, match="decay_half_life_min"):
        PulseConfig(decay_half_life_min=10, decay_half_life_max=5)


def test_dict_and_json_round_trip(tmp_path):
    cfg = PulseConfig(vocab_size=100, num_states=8, use_memory=True)
    assert PulseConfig.from_dict(cfg.to_dict()) == cfg
    cfg.to_json_file(tmp_path / "config.json")
    assert PulseConfig.from_json_file(tmp_path / "config.json") == cfg
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "pulse"


def test_unknown_field_and_wrong_type_refused(tmp_path):
    data = PulseConfig().to_dict()
    data["hiden_size"] = 3
    with pytest.raises(ConfigError, match="hiden_size"):
        PulseConfig.from_dict(data)
    with pytest.raises(ConfigError, match="model_type"):
        PulseConfig.from_dict(TransformerConfig().to_dict())
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="JSON"):
        PulseConfig.from_json_file(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="config"):
        PulseConfig.from_dict([1, 2])


def test_transformer_matches_width_and_depth():
    cfg = PulseConfig(hidden_size=64, num_layers=3, num_heads=4)
    t = TransformerConfig.matching(cfg)
    assert (t.hidden_size, t.num_layers, t.num_heads, t.resolved_intermediate_size) == (64, 3, 4, cfg.resolved_intermediate_size)
    with pytest.raises(ConfigError, match="mixer"):
        TransformerConfig(mixer="conv")
