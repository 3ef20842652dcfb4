"""Every workbench page renders for the shipped Mamba (checkpoints/story-world-mamba, trained by
pulse.train with model.type mamba), the only checkpoint of the picker here."""

import shutil

import pytest

from test_app_inputs import PAGES, SHIPPED, assert_ok, page

FOLDER = SHIPPED / "story-world-mamba"


@pytest.fixture
def shipped_mamba(tmp_path, monkeypatch):
    pytest.importorskip("transformers", reason="the shipped Mamba needs transformers: pip install -e '.[adapters]'")
    if not (FOLDER / "model.safetensors").is_file():
        pytest.skip("checkpoints/story-world-mamba is not shipped here")
    shutil.copytree(FOLDER, tmp_path / FOLDER.name)
    monkeypatch.setenv("PULSE_WORKBENCH_CHECKPOINT_DIR", str(tmp_path))
    return tmp_path / FOLDER.name


def test_core_answers_with_the_shipped_mamba(shipped_mamba):
    from workbench import core

    ckpt = core.load_checkpoint(shipped_mamba)
    assert ckpt.config.model_type == "mamba"
    run, _ = core.trace_text(ckpt, "mary went to the kitchen . where is mary ?")
    assert run.T == 10


@pytest.mark.parametrize("name", PAGES)
def test_every_page_on_the_shipped_mamba(shipped_mamba, name):
    at = page(name, "mary went to the kitchen . where is mary ?")
    assert_ok(at, name)


def test_claims_button_on_the_shipped_mamba_says_none_applies(shipped_mamba):
    """The NSM claims are about attention heads and state-bank slots: on a Mamba the button gives
    an info box, not a failure (found by the browser walk)."""
    at = page("claims")
    at.button(key="claims_run").click().run()
    assert_ok(at, "claims after the button")
    assert any("None of the Neural State Machine claims applies" in i.value for i in at.info), \
        [i.value for i in at.info]


def test_run_claim_checks_returns_nothing_for_a_model_without_heads_or_slots(shipped_mamba):
    from probes.adapters import load_pretrained
    from probes.claims import run_claim_checks
    from pulse.data import load_task

    task, _ = load_task(shipped_mamba)
    calls = []
    assert run_claim_checks(load_pretrained(shipped_mamba), task, n=8,
                            progress=lambda *a: calls.append(a)) == []
    assert calls == [(1, 1, "no claim applies to this model")]
