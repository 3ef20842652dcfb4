"""Issue 13 in the workbench: pages decide what to show from the frames a trace has (never a
config flag or a family name), and a Hugging Face Mamba ``save_pretrained`` folder opens
through :func:`probes.adapters.load_pretrained` with every page rendering (those that do
not apply say why in an info box). AppTest, as in test_app_inputs.py."""

import re
import shutil

import pytest

from test_app_inputs import PAGES, SHIPPED, STORY_MAX, assert_ok, page
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
    for name, lacks in (("attention", "no linear attention"), ("memory", "no key-value memory"),
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
