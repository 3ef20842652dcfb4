"""One causal-LM skeleton (issue 13): every family is a block definition on pulse.causal_lm,
a new family is a block plus two small classes, and the v1 README's small models exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

from pulse import (CausalLM, CausalLMBackbone, LegacyPulseConfig, LegacyPulseForCausalLM, LegacyPulseModel,
                   PulseConfig, PulseForCausalLM, PulseModel, SequencePulse, SimplePulse, TransformerConfig,
                   TransformerForCausalLM, load_pretrained, register_model)
from pulse.config import ConfigBase, _positive_int
from pulse.hooks import HookPoint, hook_sites
from pulse.pretrained import MODEL_REGISTRY, model_class, registered_models


def test_every_family_is_a_block_definition_on_the_skeleton():
    for cls, backbone in ((PulseForCausalLM, PulseModel), (LegacyPulseForCausalLM, LegacyPulseModel),
                          (TransformerForCausalLM, CausalLMBackbone)):
        assert issubclass(cls, CausalLM) and issubclass(cls, backbone) and issubclass(backbone, CausalLMBackbone)
        # the skeleton (embed, blocks loop, norm, head, loss) is written once: no family defines
        # __init__, and only PULSE re-declares forward (to name its attn_mode argument)
        family = [k for k in cls.__mro__ if k.__module__ in ("pulse.model", "pulse.legacy", "pulse.transformer")]
        assert family
        for klass in family:
            assert "__init__" not in vars(klass), klass
            assert "forward" not in vars(klass) or klass in (PulseForCausalLM, PulseModel), klass
    assert {model_class(t) for t in ("pulse", "legacy_pulse", "transformer")} == {
        PulseForCausalLM, LegacyPulseForCausalLM, TransformerForCausalLM}
    assert {"pulse", "legacy_pulse", "transformer"} <= set(registered_models())
    with pytest.raises(KeyError, match="registered"):
        model_class("gpt9")


def test_old_import_paths_still_work():
    from pulse.legacy import LegacyBlock  # noqa: F401
    from pulse.model import _map_nested, _validate_inputs, causal_lm_loss
    from pulse.transformer import TransformerBlock  # noqa: F401
    import pulse.causal_lm as skeleton

    assert _validate_inputs is skeleton.validate_inputs and causal_lm_loss is skeleton.causal_lm_loss
    assert _map_nested is skeleton.map_nested


@torch.no_grad()
def test_same_output_keys_and_untied_head():
    ids = torch.randint(1, 30, (2, 9))
    models = [PulseForCausalLM(PulseConfig(vocab_size=30, hidden_size=16, num_layers=1, num_heads=2,
                                           tie_word_embeddings=False)),
              LegacyPulseForCausalLM(LegacyPulseConfig(vocab_size=30, hidden_size=16, num_layers=1, num_heads=2,
                                                       num_kv_heads=1, num_states=2, state_dim=8, state_num_heads=2)),
              TransformerForCausalLM(TransformerConfig(vocab_size=30, hidden_size=16, num_layers=1, num_heads=2))]
    for model in models:
        model.eval()
        assert set(model(ids)) == {"logits", "state"}
        keys = set(model(ids, labels=ids))
        assert keys == {"logits", "state", "loss", "lm_loss"} | ({"aux_loss"} if model.reports_aux_loss else set())
    pulse = models[0]
    assert pulse.output_weight() is pulse.lm_head.weight
    assert not torch.equal(pulse.lm_head.weight, pulse.embed_tokens.weight)
    assert [i for i, _ in models[1].state_banks()] == [0] and list(models[2].state_banks()) == []


# ---- a new family: one block definition and two small classes
@dataclass
class ShiftMixConfig(ConfigBase):
    model_type: ClassVar[str] = "shift_mix_test"

    vocab_size: int = 20
    hidden_size: int = 8
    num_layers: int = 2
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    pad_token_id: int = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def validate(self) -> None:
        _positive_int(self, "vocab_size", "hidden_size", "num_layers")


class ShiftMixBlock(nn.Module):
    """x + down_proj([x_t, x_{t-1}]): token mixing with the previous position; the state is
    the last input column."""

    def __init__(self, config: ShiftMixConfig) -> None:
        super().__init__()
        self.down_proj = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)
        self.hook_resid_post = HookPoint(layout=("batch", "pos", "d_model"), kind="residual")

    def forward(self, x, mask=None, state=None):
        prev = state if state is not None else x.new_zeros(x.shape[0], 1, x.shape[2])
        shifted = torch.cat([prev, x[:, :-1]], 1)
        return self.hook_resid_post(x + self.down_proj(torch.cat([x, shifted], -1))), x[:, -1:]


class ShiftMixModel(CausalLMBackbone):
    config_class = ShiftMixConfig

    def make_block(self, config, index):
        return ShiftMixBlock(config)


class ShiftMixForCausalLM(CausalLM, ShiftMixModel):
    config_class = ShiftMixConfig
    residual_projections = ("down_proj.weight",)
    reports_aux_loss = False


@pytest.fixture
def registered_shift_mix():
    register_model(ShiftMixForCausalLM)
    try:
        yield ShiftMixForCausalLM
    finally:
        MODEL_REGISTRY.pop(ShiftMixConfig.model_type, None)


def test_a_new_family_gets_the_whole_skeleton(registered_shift_mix, tmp_path):
    torch.manual_seed(0)
    model = ShiftMixForCausalLM(ShiftMixConfig()).eval()
    std = model.blocks[0].down_proj.weight.std().item()
    assert 0.5 * 0.02 / 2 < std < 1.5 * 0.02 / 2  # residual writer: 0.02 / sqrt(2 * 2 layers)
    ids = torch.randint(1, 20, (2, 11))
    with torch.no_grad():
        out = model(ids, labels=ids)
        assert set(out) == {"logits", "state", "loss", "lm_loss"} and out["logits"].shape == (2, 11, 20)
        a = model(ids[:, :4])
        b = model(ids[:, 4:], state=a["state"])
        torch.testing.assert_close(torch.cat([a["logits"], b["logits"]], 1), out["logits"], atol=1e-6, rtol=1e-6)
        assert model.generate(ids[:, :3], max_new_tokens=4).shape == (2, 7)
    assert list(hook_sites(model)) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert type(loaded) is ShiftMixForCausalLM
    torch.testing.assert_close(loaded(ids)["logits"], out["logits"], atol=0, rtol=0)
    with pytest.raises(ValueError, match="state: has 1 layers, the model has 2"):
        model(ids, state=[a["state"][0]])


# ---- the v1 README's small models
def test_simple_pulse_is_simple_nsm_under_v1s_name():
    from pulse.nsm import SimpleNSM

    model = SimplePulse(input_dim=12, state_dim=16, num_states=4, output_dim=3, gate_type="lstm")
    assert isinstance(model, SimpleNSM) and model(torch.randn(5, 12)).shape == (5, 3)
    assert model(torch.randn(5, 7, 12)).shape == (5, 3)


@torch.no_grad()
def test_sequence_pulse_modes_pieces_and_padding():
    torch.manual_seed(0)
    model = SequencePulse(input_dim=6, state_dim=16, num_states=4, output_dim=3, output_mode="all",
                          num_heads=2, state_num_heads=2, chunk_size=4).eval()
    x = torch.randn(2, 13, 6)
    every = model(x)
    assert every.shape == (2, 13, 3)
    first, state = model(x[:, :5], return_state=True)
    second = model(x[:, 5:], state=state)
    torch.testing.assert_close(torch.cat([first, second], 1), every, atol=1e-5, rtol=1e-5)
    changed = x.clone()
    changed[:, 8] += 1.0
    torch.testing.assert_close(model(changed)[:, :8], every[:, :8], atol=1e-6, rtol=1e-6)  # causal
    mask = torch.ones(2, 13)
    mask[1, 9:] = 0  # right padding
    padded = model(x, attention_mask=mask)
    model.output_mode = "last"
    last = model(x, attention_mask=mask)
    torch.testing.assert_close(last, torch.stack([padded[0, -1], padded[1, 8]]))
    model.output_mode = "mean"
    torch.testing.assert_close(model(x, attention_mask=mask),
                               torch.stack([padded[0].mean(0), padded[1, :9].mean(0)]), atol=1e-6, rtol=1e-6)
    assert model.get_state_info() == {"num_states": 4, "state_dim": 16, "gate_type": "gru", "output_mode": "mean"}
    assert "blocks.0.states.hook_routing" in hook_sites(model)
    with pytest.raises(ValueError, match="output_mode"):
        SequencePulse(6, 16, 4, 3, output_mode="first")
    with pytest.raises(ValueError, match="x: expected"):
        model(torch.randn(2, 13, 5))


# ---- pulse.train builds any registered model from the YAML's model.type
def _run(model: dict, **train):
    from pulse.training.config import load_run_config

    return load_run_config(None, data={
        "model": model,
        "task": {"name": "mqar", "num_pairs": 2, "num_queries": 2, "num_keys": 4, "num_values": 4, "eval_size": 8},
        "train": {"steps": 3, "batch_size": 4, "lr": 0.01, "warmup": 1, "eval_size": 8, "log_every": 1,
                  "device": "cpu", "seed": 3, **train},
    })


def test_trainer_builds_a_new_family_by_its_registered_name(registered_shift_mix, tmp_path):
    import json

    from pulse.train import build_model, build_run_task, train

    run = _run({"type": "shift_mix_test", "hidden_size": 8, "num_layers": 1})
    model = build_model(run, build_run_task(run))
    assert type(model) is ShiftMixForCausalLM and model.config.pad_token_id == 0  # ids from the tokenizer
    summary = train(run, tmp_path, progress=False)
    assert summary["model_type"] == "shift_mix_test" and summary["finished"]
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "shift_mix_test"
    assert type(load_pretrained(tmp_path)) is ShiftMixForCausalLM
    from pulse.config import ConfigError

    with pytest.raises(ConfigError, match=r"model\.num_heads: unknown field for ShiftMixConfig"):
        _run({"type": "shift_mix_test", "num_heads": 2})


def test_trainer_trains_legacy_v1_with_its_state_bank_schedule(tmp_path):
    from pulse.train import train

    run = _run({"type": "legacy_pulse", "hidden_size": 16, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1,
                "num_states": 3, "state_dim": 8, "state_num_heads": 2, "state_chunk_size": 4},
               prune_at=[2], prune_lowest=1, importance_reg=0.05)
    assert run.model_config(40, {}).importance_reg == 0.05
    summary = train(run, tmp_path, progress=False)
    assert summary["active_states"] == 2 and [e["layer"] for e in summary["state_bank_events"]] == [0]
    loaded = load_pretrained(tmp_path)
    assert isinstance(loaded, LegacyPulseForCausalLM) and loaded.blocks[0].states.alive.sum().item() == 2


def test_unknown_model_type_names_the_registered_ones():
    from pulse.config import ConfigError

    with pytest.raises(ConfigError, match=r"model\.type: unknown model type 'rnn'; registered: .*legacy_pulse, (mamba, )?"
                                          r"pulse, transformer"):
        _run({"type": "rnn"})


def test_the_trainer_names_no_family():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "pulse"
    family_names = ({c.__name__ for c in MODEL_REGISTRY.values()}
                    | {c.config_class.__name__ for c in MODEL_REGISTRY.values()})
    for path in [root / "train.py", *sorted((root / "training").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module not in ("pulse.model", "pulse.legacy", "pulse.transformer"), (path, node.module)
                assert not family_names & {a.name for a in node.names}, (path, node.module)
            if isinstance(node, ast.Name):
                assert node.id not in family_names, (path, node.id)
            if isinstance(node, ast.Constant) and node.value in ("transformer", "legacy_pulse"):
                raise AssertionError(f"{path}: names the family {node.value!r}")
