"""Issue 13 in the workbench: pages decide what to show from the frames a trace has (never a
config flag or a family name), and a Hugging Face Mamba ``save_pretrained`` folder opens
through :func:`probes.adapters.load_pretrained` with every page rendering (those that do
not apply say why in an info box). AppTest, as in test_app_inputs.py."""

import re
import shutil

import pytest

from test_app_inputs import PAGES, SHIPPED, STORY_MAX, assert_ok, chart, charts_shown, page
from workbench_paths import REPO

WORKBENCH = REPO / "workbench"
# a config flag or slot count used to pick what a page shows (family switches)
SWITCH = re.compile(r"config\.use_|\bcfg\.use_|\.num_states\b|\bnum_states\b|checkpoints_with\(\"use_")
FAMILY = re.compile(r"isinstance\([^)]*(Pulse|Mamba|Rwkv|Transformer)\w*|model_type\s*==|"
                    r"\"(mamba|mamba2|rwkv|transformer)\"", re.IGNORECASE)


def test_no_family_switches_in_the_workbench():
    found = []
    for f in sorted(WORKBENCH.rglob("*.py")):
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if SWITCH.search(line) or FAMILY.search(line):
                found.append(f"{f.relative_to(REPO)}:{i}: {line.strip()}")
    assert not found, "pages must use the trace's frames, not config flags or family names:\n" + "\n".join(found)


def _hf_folder(tmp_path, monkeypatch, family: str):
    """A tiny random Hugging Face ``family`` model saved with ``save_pretrained`` in
    ``tmp_path/tiny-<family>``, the story tokenizer beside it, as the only checkpoint."""
    transformers = pytest.importorskip("transformers")
    import torch

    tok = SHIPPED / "story-world-bank" / "tokenizer.json"
    if not tok.is_file():
        pytest.skip("story-world-bank is not shipped here")
    from pulse.data import load_tokenizer

    vocab = load_tokenizer(tok.parent).vocab_size
    torch.manual_seed(0)
    if family == "mamba":
        model = transformers.MambaForCausalLM(transformers.MambaConfig(
            vocab_size=vocab, hidden_size=16, num_hidden_layers=2, state_size=4, expand=2, conv_kernel=4))
    else:
        model = transformers.RwkvForCausalLM(transformers.RwkvConfig(
            vocab_size=vocab, hidden_size=16, num_hidden_layers=2, attention_hidden_size=16, intermediate_size=32,
            context_length=4096))
    folder = tmp_path / f"tiny-{family}"
    model.save_pretrained(folder)
    shutil.copy(tok, folder / "tokenizer.json")
    monkeypatch.setenv("PULSE_WORKBENCH_CHECKPOINT_DIR", str(tmp_path))
    return folder


@pytest.fixture
def mamba_dir(tmp_path, monkeypatch):
    return _hf_folder(tmp_path, monkeypatch, "mamba")


@pytest.fixture
def rwkv_dir(tmp_path, monkeypatch):
    return _hf_folder(tmp_path, monkeypatch, "rwkv")


def test_core_loads_a_mamba_folder(mamba_dir):
    from workbench import core

    ckpt = core.load_checkpoint(mamba_dir)
    assert ckpt.config.model_type == "mamba" and ckpt.bank_layers() == []
    run, _ = core.trace_text(ckpt, "mary went to the kitchen . where is mary ?")
    assert run.T == 10 and run.trace["loss.per_token"].shape == (1, 10)


@pytest.mark.parametrize("name", PAGES)
def test_every_page_on_a_mamba_folder(mamba_dir, name):
    at = page(name, "mary went to the kitchen . where is mary ?")
    assert_ok(at, name)


def test_mamba_pages_that_do_not_apply_say_why(mamba_dir):
    for name, lacks in (("memory", "no key-value memory"),
                        ("routing", "no state bank"), ("importance", "no state bank")):
        at = page(name, "mary went to the kitchen .")
        assert_ok(at, name)
        assert at.info and lacks in at.info[0].value and "its trace has no" in at.info[0].value, name


@pytest.mark.parametrize("name", PAGES)
def test_every_page_on_an_rwkv_folder(rwkv_dir, name):
    at = page(name, "mary went to the kitchen . where is mary ?")
    assert_ok(at, name)


@pytest.mark.parametrize("text", ["mary", STORY_MAX])
def test_mamba_overview_one_and_the_most_tokens(mamba_dir, text):
    at = page("overview", text)
    assert_ok(at)


def test_generated_text_on_a_mamba_folder(mamba_dir):
    at = page("overview", "mary went", wb_prompt="mary went to the")  # no task.json: no example to start from
    assert_ok(at)
    at.sidebar.radio(key="wb_source").set_value("Generated text").run()
    assert_ok(at)
    at.sidebar.number_input(key="wb_new_tokens").set_value(5).run()
    assert_ok(at)
    assert int(next(m.value for m in at.metric if m.label == "Tokens")) == 4 + 5
    at.sidebar.slider(key="wb_temperature").set_value(1.0).run()  # sampled with a seed: no generator argument
    assert_ok(at)


def test_checkpoints_with_a_frame_are_found_by_their_hook_sites(monkeypatch):
    from workbench import core

    if not (SHIPPED / "story-world-bank" / "model.safetensors").is_file():
        pytest.skip("the shipped checkpoints are not here")
    monkeypatch.delenv("PULSE_WORKBENCH_CHECKPOINT_DIR", raising=False)
    memory = core.checkpoints_with("memory_reads")
    assert "story-world-pulse" in memory and "story-world-bank" not in memory
    assert "story-world-bank" in core.checkpoints_with("routing")


@pytest.fixture(params=["mamba", "rwkv"])
def hf_dir(request, tmp_path, monkeypatch):
    return _hf_folder(tmp_path, monkeypatch, request.param)


def test_attention_shows_the_exact_implicit_attention(hf_dir):
    import numpy as np
    import torch

    from probes.adapters import implicit_attention
    from workbench import core

    text = "mary went to the kitchen . where is mary ?"
    at = page("attention", text)
    assert_ok(at, "attention")
    at.selectbox(key="attention_layer").set_value(1).run()
    at.selectbox(key="attention_channel").set_value(3).run()
    assert_ok(at, "attention")
    assert {"attention_implicit", "attention_halflife"} <= charts_shown(at)
    z = np.array(chart(at, "attention_implicit")["data"][0]["z"], dtype=float)
    ckpt = core.load_checkpoint(hf_dir)
    run, _ = core.trace_text(ckpt, text)
    want = implicit_attention(ckpt.model, run.input_ids(), 1, 3)
    A = want.matrix[0, 0].numpy()
    assert z.shape == A.shape and np.allclose(np.nan_to_num(z), np.tril(A), rtol=1e-6, atol=1e-9)
    assert want.residual < 1e-5
    residual = next(m for m in at.metric if m.label == "Reconstruction residual")
    assert float(residual.value) < 1e-5 and abs(float(residual.value) - want.residual) <= 0.01 * want.residual + 1e-12
    assert torch.is_tensor(want.matrix)


def test_gates_show_the_mixer_gates_and_state_norms(hf_dir):
    at = page("gates", "mary went to the kitchen . where is mary ?")
    assert_ok(at, "gates")
    assert {"gates_channel", "gates_channel_state"} <= charts_shown(at)


def test_free_text_without_a_task_asks_for_text(mamba_dir):
    at = page("overview", "")
    assert not at.exception and not at.error
    assert any("Type a text" in i.value for i in at.info)
