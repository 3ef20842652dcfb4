"""model.type mamba (pulse/hf_mamba.py): a Hugging Face MambaForCausalLM trained by pulse.train,
saved as a plain Hugging Face folder, opened by probes.adapters.load_pretrained."""

import json

import pytest
import torch

pytest.importorskip("transformers", reason="model.type mamba needs transformers: pip install -e '.[adapters]'")


def _run(tmp_path, **train):
    from pulse.training.config import load_run_config

    return load_run_config(None, data={
        "model": {"type": "mamba", "hidden_size": 16, "num_layers": 2, "state_size": 4},
        "task": {"name": "story_world", "eval_size": 4, "p_object_question": 0.5, "train_on": "answers"},
        "train": {"steps": 3, "batch_size": 2, "seq_len": 88, "lr": 0.01, "warmup": 1, "eval_size": 4,
                  "log_every": 1, "device": "cpu", "seed": 0, "num_workers": 0, **train},
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from pulse.train import train

    out = tmp_path_factory.mktemp("mamba-run")
    run = _run(out)
    result = train(run, out, progress=False)
    return out, run, result


def test_trains_and_saves_a_hugging_face_folder(trained):
    out, _, result = trained
    assert result["step"] == 3 and result["finished"] and result["model_type"] == "mamba"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "mamba" and cfg["num_hidden_layers"] == 2 and cfg["hidden_size"] == 16
    for name in ("model.safetensors", "tokenizer.json", "task.json", "training.json", "metrics.json"):
        assert (out / name).is_file(), name


def test_probes_adapters_reopen_it_with_the_same_logits(trained):
    from probes.adapters import load_pretrained as load_adapted
    from pulse.pretrained import load_pretrained

    out, _, _ = trained
    ours = load_pretrained(out)
    hf = load_adapted(out)
    assert type(hf).__name__ == "MambaForCausalLM" and hf.config.model_type == "mamba"
    ids = torch.randint(0, ours.config.vocab_size, (2, 40))
    with torch.no_grad():
        a = ours(ids)["logits"]
        b = hf(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_loss_is_on_the_task_labels_only(trained):
    from pulse.causal_lm import causal_lm_loss
    from pulse.pretrained import load_pretrained
    from pulse.train import build_run_task

    out, run, _ = trained
    model = load_pretrained(out)
    data = build_run_task(run).make_split("eval", n=2, seq_len=88)
    assert (data["labels"] == -100).float().mean() > 0.5  # answers only
    with torch.no_grad():
        got = model(data["input_ids"], attention_mask=data["attention_mask"], labels=data["labels"])
    want = causal_lm_loss(got["logits"], data["labels"], data["attention_mask"])["lm_loss"]
    assert torch.equal(got["loss"], want) and torch.equal(got["lm_loss"], want)


def test_missing_transformers_is_a_config_error_naming_the_extra(monkeypatch):
    import builtins

    from pulse.config import ConfigError
    from pulse.hf_mamba import HFMambaConfig, HFMambaForCausalLM

    real = builtins.__import__

    def no_transformers(name, *a, **k):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("no transformers")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[adapters\]'"):
        HFMambaForCausalLM(HFMambaConfig(vocab_size=32))


def test_usage_switches_off_each_mixer_of_the_trained_folder(trained):
    from probes.usage import checkpoint_usage

    out, _, _ = trained
    u = checkpoint_usage(out, n=8, n_boot=20, write=False, use_cache=False)
    assert "mixer" in u.mechanisms()
    for layer in ("0", "1", "all"):
        row = u.row("mixer", layer)
        assert row is not None and row["max_abs_logit_change"] > 0, layer


def test_init_from_starts_from_another_runs_weights(trained, tmp_path):
    from pulse.train import train

    out, _, first = trained
    result = train(_run(tmp_path, steps=1, init_from=str(out)), tmp_path / "stage2", progress=False)
    assert result["initial_weights_hash"] == first["weights_hash"]
