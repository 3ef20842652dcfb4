import pytest
import torch

from pulse import ConfigError, LegacyPulseConfig, LegacyPulseForCausalLM, load_pretrained


def tiny(**kw):
    values = dict(vocab_size=30, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, num_states=4,
                  state_dim=16, state_num_heads=2, state_chunk_size=4)
    values.update(kw)
    return LegacyPulseForCausalLM(LegacyPulseConfig(**values)).eval()


@torch.no_grad()
@pytest.mark.parametrize("gate", ["gru", "lstm"])
def test_pieces_generation_and_causality(gate):
    model = tiny(state_gate_type=gate)
    ids = torch.randint(1, 30, (2, 19))
    full = model(ids)["logits"]
    a = model(ids[:, :7])
    b = model(ids[:, 7:], state=a["state"])
    torch.testing.assert_close(torch.cat([a["logits"], b["logits"]], 1), full, atol=2e-5, rtol=1e-5)
    changed = ids.clone()
    changed[:, 10] = (changed[:, 10] % 29) + 1
    torch.testing.assert_close(model(changed)["logits"][:, :10], full[:, :10], atol=1e-6, rtol=1e-6)
    out = model.generate(ids[:, :5], max_new_tokens=9)
    seq = ids[:, :5]
    for _ in range(9):
        seq = torch.cat([seq, model(seq)["logits"][:, -1:].argmax(-1)], 1)
    torch.testing.assert_close(out, seq)


def test_round_trip_keeps_importance_and_alive(tmp_path):
    model = tiny()
    bank = model.blocks[0].states
    with torch.no_grad():
        bank.importance_logits[:2] = -5.0
    assert bank.prune_low_importance_states() == 2
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert isinstance(loaded, LegacyPulseForCausalLM)
    assert loaded.blocks[0].states.alive.tolist() == bank.alive.tolist()
    ids = torch.randint(1, 30, (1, 12))
    torch.testing.assert_close(loaded(ids)["logits"], model(ids)["logits"], atol=0, rtol=0)


def test_loss_and_gradients():
    model = tiny().train()
    ids = torch.randint(1, 30, (2, 16))
    out = model(ids, labels=ids)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_config_errors_named():
    with pytest.raises(ConfigError, match="num_kv_heads"):
        LegacyPulseConfig(num_heads=8, num_kv_heads=3)
    with pytest.raises(ConfigError, match="state_gate_type"):
        LegacyPulseConfig(state_gate_type="rnn")


@torch.no_grad()
def test_max_position_embeddings_limits_the_kv_cache():
    model = tiny(max_position_embeddings=10)
    ids = torch.randint(1, 30, (2, 10))
    first = model(ids[:, :6])
    model(ids[:, 6:], state=first["state"])  # 6 in the cache + 4 new = 10: allowed
    with pytest.raises(ValueError, match="6 positions in the state .* max_position_embeddings=10"):
        model(ids[:, :5], state=first["state"])
    with pytest.raises(ValueError, match="max_position_embeddings=10"):
        model(torch.randint(1, 30, (1, 11)))
    assert model.generate(ids[:, :3], max_length=10).shape == (2, 10)
    assert tiny()(torch.randint(1, 30, (1, 40)))["logits"].shape == (1, 40, 30)  # default: no limit
    assert LegacyPulseConfig.from_dict(model.config.to_dict()).max_position_embeddings == 10
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        LegacyPulseConfig(max_position_embeddings=-1)
