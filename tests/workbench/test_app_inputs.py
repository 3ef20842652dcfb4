"""Issue 14, the workbench as a teacher and a researcher use it: every page with 1, 2 and the
most tokens, text normalised as the tokenizer was trained, a comparable run by default,
usual sampling controls, no stale results, cached interventions. AppTest on the page
scripts (see test_app.py's module doc), on tiny random checkpoints and on the shipped ones."""

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from workbench_paths import REPO

TIMEOUT = 300
PAGES_DIR = REPO / "workbench" / "pages"
PAGES = sorted(p.stem for p in PAGES_DIR.glob("*.py"))
SHIPPED = REPO / "checkpoints"

STORY = "mary went to the kitchen . where is mary ? kitchen ."  # 12 tokens
STORY_MAX = " ".join([STORY] * 170 + ["john went to the garden . mary went"])  # 2,048 tokens: core.MAX_TOKENS
RECALL = "k1 v2 k3 v4 |"  # 5 tokens
RECALL_MAX = " ".join([RECALL] * 409 + ["k1 v2 k3"])  # 2,048 tokens
TEXTS = {"story": {"1": "mary", "2": "mary went", "max": STORY_MAX},
         "recall": {"1": "k1", "2": "k1 v2", "max": RECALL_MAX}}


def page(name: str, text: str | None = None, model: str | None = None, **session) -> AppTest:
    """The page script run once, on free ``text`` (default: the example story)."""
    at = AppTest.from_file(str(PAGES_DIR / f"{name}.py"), default_timeout=TIMEOUT)
    if model is not None:
        at.session_state["wb_model"] = model
    if text is not None:
        at.session_state["wb_source"] = "Free text"
        at.session_state["wb_text"] = text
    at.session_state["attr_steps"] = 8  # one cheap integration per attribution: the walk tests widgets
    at.session_state["attr_max_steps"] = 8
    for k, v in session.items():
        at.session_state[k] = v
    at.run()
    return at


def no_exception(at: AppTest, what: str = "") -> None:
    assert not at.exception, (what, [e.value for e in at.exception])


def assert_ok(at: AppTest, what: str = "") -> None:
    no_exception(at, what)
    assert not at.error, (what, [e.value for e in at.error])


def chart(at: AppTest, key: str) -> dict:
    for el in at.get("plotly_chart"):
        if el.proto.id.endswith(f"-{key}"):
            return json.loads(el.proto.spec)
    raise AssertionError(f"no chart {key}; have {[el.proto.id for el in at.get('plotly_chart')]}")


def charts_shown(at: AppTest) -> set[str]:
    return {el.proto.id.rsplit("-", 1)[-1] for el in at.get("plotly_chart")}


def n_tokens(at: AppTest) -> int:
    return int(next(m.value for m in at.metric if m.label == "Tokens"))


def walk(texts: dict[str, str], model: str | None = None) -> None:
    """Every page on every text: no exception and no error message; on the longest text the
    window's sliders are also pushed to their ends (the widest window, the last start)."""
    for length, text in texts.items():
        for name in PAGES:
            what = f"{model or 'tiny-a'} / {name} / {length} token(s)"
            at = page(name, text, model)
            assert_ok(at, what)
            widths = [w for w in at.number_input if w.key and w.key.endswith("_width")]
            for w in widths:
                w.set_value(w.max).run()
                assert_ok(at, what + " / widest window")
                starts = [s for s in at.slider if s.key and s.key.endswith("_start")]
                for s in starts:
                    s.set_value(s.max).run()
                    assert_ok(at, what + " / last window start")


# ------------------------------------------------------------------ 1. every page, 1 / 2 / max tokens
@pytest.mark.parametrize("length", ["1", "2", "max"])
def test_every_page_handles_one_two_and_the_most_tokens(app_env, length):
    walk({length: TEXTS["story"][length]})


@pytest.mark.parametrize("name,kind", [("story-world-bank", "story"), ("story-world-pulse", "story"),
                                       ("recall-pulse", "recall")])
def test_every_page_on_the_shipped_checkpoints(monkeypatch, name, kind):
    if not (SHIPPED / name / "model.safetensors").is_file():
        pytest.skip(f"{name} is not in {SHIPPED}")
    monkeypatch.delenv("PULSE_WORKBENCH_CHECKPOINT_DIR", raising=False)
    walk(TEXTS[kind], model=name)


def test_one_token_on_overview_and_memory(app_env):
    for name in ("overview", "memory"):
        at = page(name, "mary")
        no_exception(at, name)
        assert any("the only one" in c.value for c in at.caption), name  # the one position, said in words


def test_window_as_wide_as_the_text(app_env):
    text = " ".join([STORY] * 14 + ["mary went"])  # 170 tokens: just over the 160-token default window
    at = page("routing", text)
    assert_ok(at)
    at.number_input(key="routing_width").set_value(170).run()  # the whole text: no start to choose
    assert_ok(at)
    assert len(chart(at, "routing_heatmap")["data"][0]["x"]) == 170
    assert any("covers the whole text" in c.value for c in at.caption)


def test_patch_activation_with_a_one_token_source(app_env):
    at = page("interventions")
    at.selectbox(key="iv_kind").set_value("Patch activation").run()
    at.text_input(key="iv_patch_text").set_value("mary").run()
    assert_ok(at)
    at.button(key="iv_apply").click().run()
    assert_ok(at)
    assert "Mean loss after (answer-token loss, n=2)" in {m.label for m in at.metric}
    at = page("interventions", "mary")  # a one-token run, and its own text as the source
    at.selectbox(key="iv_kind").set_value("Patch activation").run()
    at.text_input(key="iv_patch_text").set_value("john").run()
    assert_ok(at)


@pytest.fixture
def bank_only(tmp_path_factory, checkpoint_factory, monkeypatch):
    """A folder with one bank-only model (no linear attention, memory or recurrent state), as the
    shipped default story-world-bank."""
    root = tmp_path_factory.mktemp("bank")
    checkpoint_factory(root / "tiny-bank", use_linear_attention=False, use_memory=False,
                       use_recurrent_state=False)
    monkeypatch.setenv("PULSE_WORKBENCH_CHECKPOINT_DIR", str(root))
    return root


def test_bank_only_model_says_what_it_lacks(bank_only):
    at = page("attention")
    assert_ok(at)
    assert "no linear attention" in at.info[0].value and not at.get("plotly_chart")
    at = page("memory")
    assert_ok(at)
    assert "no key-value memory" in at.info[0].value and not at.get("plotly_chart")
    at = page("gates")
    assert_ok(at)
    assert "gates_fusion" not in charts_shown(at) and any("No fusion gate" in i.value for i in at.info)
    at = page("interventions")
    assert "Set decay" not in at.selectbox(key="iv_kind").options  # there is no decay to set


def test_shipped_default_says_what_it_lacks(monkeypatch):
    if not (SHIPPED / "story-world-bank" / "model.safetensors").is_file():
        pytest.skip("story-world-bank is not shipped here")
    monkeypatch.delenv("PULSE_WORKBENCH_CHECKPOINT_DIR", raising=False)
    for name, lacks in (("attention", "no linear attention"), ("memory", "no key-value memory")):
        at = page(name)
        assert_ok(at, name)
        assert lacks in at.info[0].value and "story-world-pulse" in at.info[0].value  # and who has it


# ------------------------------------------------------------------ 2. text as the tokenizer was trained
def test_ordinary_text_has_no_unknown_words(app_env):
    at = page("overview", "Mary went to the kitchen.")
    assert_ok(at)
    assert not at.warning, [w.value for w in at.warning]
    assert n_tokens(at) == 6
    assert any(c.value == "Read as: mary went to the kitchen ." for c in at.sidebar.caption)
    vocab = [e for e in at.sidebar.expander if e.label.startswith("Vocabulary")]
    assert vocab and vocab[0].label == "Vocabulary (36 words)"
    words = vocab[0].markdown[0].value
    assert "`mary`" in words and "`kitchen`" in words and "`?`" in words and "<pad>" not in words
    assert "lower-cased" in vocab[0].caption[0].value


def test_shipped_story_model_reads_ordinary_text(monkeypatch):
    if not (SHIPPED / "story-world-bank" / "model.safetensors").is_file():
        pytest.skip("story-world-bank is not shipped here")
    monkeypatch.delenv("PULSE_WORKBENCH_CHECKPOINT_DIR", raising=False)
    at = page("overview", "Mary went to the kitchen.")
    assert_ok(at)
    assert not at.warning, [w.value for w in at.warning]  # was: 3 word(s) are not in this model's vocabulary
    assert n_tokens(at) == 6


def test_a_tokenizer_without_lower_casing_is_not_lower_cased(tmp_path, checkpoint_factory):
    from pulse.data import WordTokenizer, load_tokenizer
    from workbench import core

    folder = checkpoint_factory(tmp_path / "cased")
    vocab = load_tokenizer(folder).vocab[4:]
    WordTokenizer.from_vocabulary(vocab).save(folder)  # declares: no lower-casing, no punctuation split
    ckpt = core.load_checkpoint(folder)
    assert ckpt.task is not None  # the same vocabulary as its task
    enc = core.encode_text(ckpt.tokenizer, "Mary went to the kitchen .")
    assert enc.ids[0] == ckpt.tokenizer.unk_token_id and "'Mary'" in enc.warnings[0]


# ------------------------------------------------------------------ 3. a comparable run by default
@pytest.fixture
def mixed_vocabularies(tmp_path_factory, checkpoint_factory, monkeypatch):
    """tiny-a and tiny-z (story world) with tiny-m (recall: another vocabulary) between them."""
    import torch

    from pulse import PulseConfig, PulseForCausalLM
    from pulse.data import build_task
    from pulse.data.task_record import TASK_FILE, task_record_json

    root = tmp_path_factory.mktemp("mixed")
    checkpoint_factory(root / "tiny-a", seed=0)
    checkpoint_factory(root / "tiny-z", seed=2)
    kwargs = {"num_pairs": 2, "num_queries": 2, "num_keys": 4, "num_values": 4, "train_on": "answers"}
    task = build_task("mqar", **kwargs)
    torch.manual_seed(0)
    model = PulseForCausalLM(PulseConfig(vocab_size=task.tokenizer.vocab_size, hidden_size=32, num_layers=1,
                                         num_heads=2, chunk_size=8, conv_kernel_size=3, use_memory=True,
                                         memory_capacity=8, memory_top_k=2))
    folder = root / "tiny-m"
    model.save_pretrained(folder)
    task.tokenizer.save(folder)
    (folder / TASK_FILE).write_text(task_record_json("mqar", kwargs, task))
    monkeypatch.setenv("PULSE_WORKBENCH_CHECKPOINT_DIR", str(root))
    return root


def test_compare_defaults_to_a_checkpoint_that_reads_the_text(mixed_vocabularies):
    at = page("compare")
    assert_ok(at)
    assert at.radio(key="cmp_mode").value == "Same text, another checkpoint"
    assert at.selectbox(key="cmp_ckpt").value == "tiny-z"  # tiny-m comes first by name, but cannot read it
    assert not at.warning, [w.value for w in at.warning]
    lines = chart(at, "cmp_loss")["data"]
    assert [ln["name"] for ln in lines] == ["tiny-a", "tiny-z"] and lines[0]["y"] != lines[1]["y"]
    at.selectbox(key="cmp_ckpt").set_value("tiny-m").run()
    assert_ok(at)
    assert not at.warning and "another vocabulary" in at.info[0].value and "cmp_loss" not in charts_shown(at)
    at.selectbox(key="cmp_ckpt").set_value("Other folder…").run()
    assert_ok(at)
    assert "Type the path" in at.info[0].value and not at.get("plotly_chart")  # not a blank area
    at.text_input(key="cmp_path").set_value(str(mixed_vocabularies / "tiny-z")).run()
    assert_ok(at)
    assert [ln["name"] for ln in chart(at, "cmp_loss")["data"]] == ["tiny-a", "tiny-z"]


def test_compare_without_a_comparable_checkpoint_compares_texts(mixed_vocabularies):
    at = page("compare", model="tiny-m")
    assert_ok(at)
    assert at.radio(key="cmp_mode").value == "Same checkpoint, another text"
    assert {"cmp_loss_a", "cmp_loss_b"} <= charts_shown(at)


# ------------------------------------------------------------------ 4. generation
def test_generation_controls(app_env):
    from workbench import core

    at = page("overview", wb_source="Generated text")
    assert_ok(at)
    temp = at.sidebar.slider(key="wb_temperature")
    assert temp.label == "Temperature (0 = greedy)" and temp.min == 0.0 and temp.value == 0.0
    assert at.sidebar.number_input(key="wb_top_k").value == 0 and at.sidebar.slider(key="wb_top_p").value == 1.0
    assert any("trained on answers only" in c.value for c in at.sidebar.caption)
    prompt = at.sidebar.text_input(key="wb_prompt").value
    assert prompt.endswith("?")  # an answers-only story model answers questions: the prompt asks one
    ckpt = core.load_checkpoint(app_env / "tiny-a")
    greedy = core.generate_text(ckpt, prompt, 40, 0.0)
    shown = [e for e in at.sidebar.expander if e.label == "Generated text"][0].markdown[0].value
    assert shown == greedy and any("Greedy decoding" in c.value for c in at.sidebar.caption)
    at.sidebar.slider(key="wb_temperature").set_value(1.0).run()
    at.sidebar.number_input(key="wb_top_k").set_value(5).run()
    assert_ok(at)
    sampled = [e for e in at.sidebar.expander if e.label == "Generated text"][0].markdown[0].value
    assert sampled == core.generate_text(ckpt, prompt, 40, 1.0, seed=0, top_k=5)
    draws = {core.generate_text(ckpt, prompt, 40, 1.0, seed=s, top_k=5) for s in range(4)}
    assert len(draws) > 1  # sampling: the seed changes the text


def test_generate_text_temperature_zero_is_greedy(checkpoint_dir):
    import torch

    from workbench import core

    ckpt = core.load_checkpoint(checkpoint_dir / "tiny-a")
    prompt = "mary went to the kitchen . where is mary ?"
    ids = torch.tensor([core.encode_text(ckpt.tokenizer, prompt).ids])
    want = ckpt.model.generate(ids, max_new_tokens=6, do_sample=False)[0].tolist()
    got = core.generate_text(ckpt, prompt, 6, 0.0, seed=3)
    assert got.split()[: len(want)] == [ckpt.tokenizer.decode([i]) for i in want][: len(got.split())]
    assert core.generate_text(ckpt, prompt, 6, 0.0, seed=1) == core.generate_text(ckpt, prompt, 6, 0.0, seed=2)
    assert len({core.generate_text(ckpt, prompt, 6, 1.5, seed=s) for s in range(6)}) > 1  # 1.5 samples
    with pytest.raises(core.WorkbenchError, match="top-p"):
        core.generate_text(ckpt, prompt, 6, 1.0, top_p=0.0)


# ------------------------------------------------------------------ 5. stale state
def test_intervention_result_belongs_to_its_settings(app_env):
    at = page("interventions")
    at.selectbox(key="iv_kind").set_value("Memory off").run()
    at.button(key="iv_apply").click().run()
    assert_ok(at)
    assert "iv_before" in charts_shown(at)
    at.selectbox(key="iv_kind").set_value("Set decay").run()  # new controls: the old result goes
    assert_ok(at)
    assert not charts_shown(at) & {"iv_before", "iv_after", "iv_delta"} and not at.metric
    at.selectbox(key="iv_kind").set_value("Patch activation").run()
    at.button(key="iv_apply").click().run()
    assert "iv_before" in charts_shown(at)
    at.text_input(key="iv_patch_text").set_value("qqq zzz").run()  # a source that cannot be read
    no_exception(at)
    assert "Source text" in at.error[0].value and not at.metric and not charts_shown(at) & {"iv_before"}


def test_prune_result_belongs_to_its_settings(app_env):
    at = page("importance")
    at.multiselect(key="prune_slots").set_value([0, 1]).run()
    at.button(key="prune_button").click().run()
    assert_ok(at)
    assert "prune_delta" in charts_shown(at)
    at.multiselect(key="prune_slots").set_value([2]).run()
    assert_ok(at)
    assert "prune_delta" not in charts_shown(at) and not [m for m in at.metric if m.label == "Slots pruned"]


def test_window_start_is_kept_when_the_width_changes(app_env):
    text = " ".join([STORY] * 111)
    at = page("routing", text)
    at.slider(key="routing_start").set_value(1000).run()
    at.number_input(key="routing_width").set_value(320).run()
    assert_ok(at)
    assert at.slider(key="routing_start").value == 1000
    x = chart(at, "routing_heatmap")["data"][0]["x"]
    assert x[0] == 1000 and len(x) == 320
    at.number_input(key="routing_width").set_value(400).run()  # T - 400 = 932 < 1000: clamped, not reset
    assert at.slider(key="routing_start").value == len(text.split()) - 400


# ------------------------------------------------------------------ 6. cached results
def test_interventions_are_cached_by_their_inputs(app_env, monkeypatch):
    import probes

    calls = []
    real = probes.compare
    monkeypatch.setattr(probes, "compare", lambda *a, **k: calls.append(1) or real(*a, **k))
    at = page("interventions")
    at.selectbox(key="iv_kind").set_value("Clamp a gate").run()
    at.slider(key="iv_value").set_value(0.35).run()  # settings no other test uses: not cached yet
    at.button(key="iv_apply").click().run()
    assert_ok(at)
    before = chart(at, "iv_after")["data"][0]["z"]
    at.selectbox(key="iv_kind").set_value("Prune slots").run()
    at.selectbox(key="iv_kind").set_value("Clamp a gate").run()
    at.slider(key="iv_value").set_value(0.35).run()
    at.button(key="iv_apply").click().run()  # the same settings again: from the cache
    assert_ok(at)
    assert len(calls) == 1 and chart(at, "iv_after")["data"][0]["z"] == before
    assert np.isfinite(np.array(before, dtype=float)).any()


def test_claims_on_a_folder_without_a_task_says_why(tmp_path, monkeypatch):
    """A bare save_pretrained folder (no task.json) has no held-out set: the Claims page says so in
    an info box, not as a failure after the button (found by the browser walk)."""
    import shutil

    bare = tmp_path / "ck" / "third-party"
    bare.mkdir(parents=True)
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy2(SHIPPED / "story-world-bank" / f, bare / f)
    monkeypatch.setenv("PULSE_WORKBENCH_CHECKPOINT_DIR", str(tmp_path / "ck"))
    at = page("claims", "mary went to the kitchen", model="third-party")
    assert_ok(at, "claims without task.json")
    assert any("no task.json" in i.value for i in at.info), [i.value for i in at.info]
    assert not [b for b in at.button if b.key == "claims_run"], "the button would only lead to a failure"
