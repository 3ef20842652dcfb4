"""Every page under Streamlit's AppTest: no exception, and changing a control changes what is shown.
The app is pointed at tiny random checkpoints through PULSE_WORKBENCH_CHECKPOINT_DIR.

Each page file also runs on its own (``state.context()`` then draws the sidebar itself), which
is how most tests drive it: AppTest (Streamlit 1.67) drops the entrypoint's sidebar elements
from its element tree on reruns of an ``st.navigation`` app, so widget interactions are
tested on the page scripts; ``test_navigation_reaches_every_page`` covers the entrypoint."""

import io
import json
import zipfile

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from workbench_paths import APP, REPO

TIMEOUT = 90


PAGES_DIR = REPO / "workbench" / "pages"
PAGES = sorted(p.stem for p in PAGES_DIR.glob("*.py"))


def start(page: str = "overview") -> AppTest:
    at = AppTest.from_file(str(PAGES_DIR / f"{page}.py"), default_timeout=TIMEOUT)
    at.run()
    assert_ok(at)
    return at


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def chart(at: AppTest, key: str) -> dict:
    for el in at.get("plotly_chart"):
        if el.proto.id.endswith(f"-{key}"):
            return json.loads(el.proto.spec)
    raise AssertionError(f"no chart {key}; have {[el.proto.id for el in at.get('plotly_chart')]}")


def z_of(at: AppTest, key: str) -> np.ndarray:
    return np.array(chart(at, key)["data"][0]["z"], dtype=float)


def test_navigation_reaches_every_page(app_env):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["attr_steps"] = 8
    at.run()
    assert_ok(at)
    assert at.title[0].value == "Overview" and at.sidebar.selectbox(key="wb_model").value == "tiny-a"
    titles = {}
    for page in PAGES:
        at.switch_page(f"pages/{page}.py")
        at.run()
        assert_ok(at)
        titles[page] = at.title[0].value
    assert len(set(titles.values())) == len(PAGES) == 11


def test_opens_on_a_traced_example(app_env):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert_ok(at)
    assert at.title[0].value == "Overview"
    assert at.sidebar.selectbox(key="wb_model").value == "tiny-a"
    assert at.sidebar.radio(key="wb_source").value == "Example story"
    labels = {m.label for m in at.metric}
    assert "Tokens" in labels and "Mean answer-token loss, n=2 (nats)" in labels  # 2 questions per story
    strip = chart(at, "overview_loss")["data"][0]
    assert strip["type"] == "heatmap" and len(strip["z"][0]) == int(at.metric[0].value)
    top = chart(at, "overview_top")["data"][0]["x"]
    at = start("overview")  # widgets: on the page script (see the module doc)
    at.slider(key="overview_pos").set_value(3).run()
    assert_ok(at)
    assert chart(at, "overview_top")["data"][0]["x"] != top
    at.sidebar.selectbox(key="wb_example").set_value(2).run()  # another story: another trace
    assert_ok(at)
    assert chart(at, "overview_loss")["data"][0]["z"] != strip["z"]


def test_routing_layer_and_kind(app_env):
    at = start("routing")
    z0 = z_of(at, "routing_heatmap")
    assert chart(at, "routing_sankey")["data"][0]["type"] == "sankey"
    at.selectbox(key="routing_layer").set_value(1).run()
    assert_ok(at)
    z1 = z_of(at, "routing_heatmap")
    assert z0.shape == z1.shape and not np.allclose(z0, z1)
    assert np.allclose(z1.sum(0), 1.0, atol=1e-5)  # each token's routing weights sum to 1
    at.radio(key="routing_kind").set_value("read").run()
    assert_ok(at)
    assert not np.allclose(z_of(at, "routing_heatmap"), z1)


def test_gates_layer_and_kind(app_env):
    at = start("gates")
    y0 = chart(at, "gates_bank")["data"][0]["y"]
    assert chart(at, "gates_fusion")["data"][0]["type"] == "scatter"
    assert "gates_recurrent" in [el.proto.id.rsplit("-", 1)[-1] for el in at.get("plotly_chart")]
    at.selectbox(key="gates_layer").set_value(1).run()
    assert_ok(at)
    y1 = chart(at, "gates_bank")["data"][0]["y"]
    assert y0 != y1
    at.selectbox(key="gates_kind").set_value("reset").run()
    assert_ok(at)
    assert chart(at, "gates_bank")["data"][0]["y"] != y1


def test_prune_really_prunes_and_shows_the_loss_change(app_env):
    at = start("importance")
    bars = chart(at, "importance_bars")["data"][0]
    assert len(bars["y"]) == 4
    assert not [m for m in at.metric if m.label == "Slots pruned"]
    at.multiselect(key="prune_slots").set_value([0, 1]).run()
    at.button(key="prune_button").click().run()
    assert_ok(at)
    metrics = {m.label: m for m in at.metric}
    assert metrics["Slots pruned"].value == "2"
    assert metrics["Mean loss after"].value != metrics["Mean loss before"].value
    delta = np.array(chart(at, "prune_delta")["data"][0]["y"][1:], dtype=float)
    assert np.nanmax(np.abs(delta)) > 0
    assert np.isfinite(delta).sum() == 2  # the two answer tokens of the story, nothing else is scored
    at.radio(key="prune_how").set_value("Everything below a threshold").run()
    at.slider(key="prune_threshold").set_value(0.5).run()
    at.button(key="prune_button").click().run()
    assert_ok(at)
    assert {m.label: m.value for m in at.metric}["Slots pruned"] == "4"  # two per layer below 0.5


def test_attention_head_and_layer(app_env):
    at = start("attention")
    z0 = z_of(at, "attention_heatmap")
    assert z0.shape[0] == z0.shape[1] and np.allclose(np.triu(np.nan_to_num(z0), 1), 0)
    at.selectbox(key="attention_head").set_value(1).run()
    assert_ok(at)
    z1 = z_of(at, "attention_heatmap")
    assert not np.allclose(z0, z1)
    at.selectbox(key="attention_layer").set_value(1).run()
    assert_ok(at)
    assert not np.allclose(z_of(at, "attention_heatmap"), z1)
    assert len(chart(at, "attention_halflife")["data"]) == 2


def test_memory_layer_value_and_position(app_env):
    at = start("memory")
    z0 = np.nan_to_num(z_of(at, "memory_heatmap"))
    at.selectbox(key="memory_layer").set_value(1).run()
    assert_ok(at)
    z1 = np.nan_to_num(z_of(at, "memory_heatmap"))
    assert not np.allclose(z0, z1)
    table = at.dataframe[0].value
    assert list(table["rank"]) == [0, 1] and set(table.columns) >= {"score", "written by token"}
    at.slider(key="memory_pos").set_value(5).run()
    assert_ok(at)
    assert not at.dataframe[0].value.equals(table)
    at.radio(key="memory_value").set_value("score").run()
    assert_ok(at)


def test_attribution_position(app_env):
    at = AppTest.from_file(str(PAGES_DIR / "attribution.py"), default_timeout=TIMEOUT)
    at.session_state["attr_steps"] = 8
    at.run()
    assert_ok(at)
    y0 = chart(at, "attr_tokens")["data"][0]["y"]
    assert chart(at, "attr_slot_heatmap")["data"][0]["type"] == "heatmap"
    at.slider(key="attr_pos").set_value(10).run()
    assert_ok(at)
    y1 = chart(at, "attr_tokens")["data"][0]["y"]
    assert len(y1) == 11 and y1 != y0


@pytest.mark.parametrize("kind", ["Ablate a slot", "Prune slots", "Clamp a gate", "Memory off", "Set decay",
                                  "Patch activation"])
def test_interventions_before_after(app_env, kind):
    at = start("interventions")
    at.selectbox(key="iv_kind").set_value(kind).run()
    at.button(key="iv_apply").click().run()
    assert_ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert "Mean loss after (answer-token loss, n=2)" in metrics
    before, after = z_of(at, "iv_before"), z_of(at, "iv_after")
    assert before.shape == after.shape and not np.allclose(np.nan_to_num(before), np.nan_to_num(after))
    z_b, z_a = z_of(at, "iv_rw_before"), z_of(at, "iv_rw_after")
    if kind in ("Ablate a slot", "Prune slots"):
        assert np.allclose(z_a[0], 0)  # slot 0 of layer 0 reads nothing any more
        assert not np.allclose(z_b[0], 0)


def test_compare_checkpoints_and_texts(app_env):
    at = start("compare")
    assert at.selectbox(key="cmp_ckpt").value == "tiny-b"
    lines = chart(at, "cmp_loss")["data"]
    assert [l["name"] for l in lines] == ["tiny-a", "tiny-b"] and lines[0]["y"] != lines[1]["y"]
    assert not np.allclose(z_of(at, "cmp_route_a"), z_of(at, "cmp_route_b"))
    at.radio(key="cmp_mode").set_value("Same checkpoint, another text").run()
    assert_ok(at)
    assert chart(at, "cmp_loss_a")["data"][0]["z"] != chart(at, "cmp_loss_b")["data"][0]["z"]


def test_claims_run_on_button(app_env):
    at = start("claims")
    assert not at.get("plotly_chart")
    at.button(key="claims_run").click().run()
    assert_ok(at)
    fig = chart(at, "claims_chart")
    verdicts = at.dataframe[0].value["verdict"].tolist()
    assert len(fig["data"][0]["y"]) == len(verdicts) == 5
    assert set(verdicts) <= {"supported", "not supported", "inconclusive"}


def test_export_zip_round_trips(app_env, checkpoint_dir, tmp_path):
    at = start("export")
    assert at.get("download_button")[0].proto.label.startswith("Download trace")
    files = at.dataframe[0].value["file"].tolist()
    assert "trace/metadata.json" in files and "trace/routing.parquet" in files
    from probes import Trace
    from workbench import core, state

    ckpt = core.load_checkpoint(checkpoint_dir / "tiny-a")
    text = "mary went to the kitchen . where is mary ? kitchen ."
    data, names = state.parquet_zip(str(ckpt.path), ckpt.key, text, None)
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path)
    tr = Trace.from_parquet(tmp_path / "trace")
    run, _ = core.trace_text(ckpt, text)
    assert np.allclose(tr["blocks.0.states.hook_routing"].numpy(), run.trace["blocks.0.states.hook_routing"].numpy())


# ------------------------------------------------------------------ bad input
def test_bad_text_gives_messages_not_tracebacks(app_env):
    at = start()
    at.sidebar.radio(key="wb_source").set_value("Free text").run()
    assert_ok(at)
    at.sidebar.text_area(key="wb_text").set_value("").run()
    assert not at.exception and "empty" in at.error[0].value
    at.sidebar.text_area(key="wb_text").set_value("mary went to the kitchen . " * 400).run()
    assert not at.exception and "at most" in at.error[0].value
    at.sidebar.text_area(key="wb_text").set_value("mary went to the zebra ✈ .").run()
    assert not at.exception and not at.error
    assert "zebra" in at.warning[0].value
    at.sidebar.text_area(key="wb_text").set_value("qqq zzz").run()
    assert not at.exception and "vocabulary" in at.error[0].value


def test_generated_text_is_traced(app_env):
    at = start()
    at.sidebar.radio(key="wb_source").set_value("Generated text").run()
    assert_ok(at)
    n0 = int(at.metric[0].value)
    at.sidebar.number_input(key="wb_new_tokens").set_value(10).run()
    assert_ok(at)
    assert int(at.metric[0].value) < n0 or n0 <= 10 + 8


@pytest.mark.parametrize("what", ["missing", "broken", "empty"])
def test_bad_checkpoint_folder(app_env, tmp_path, what):
    at = start()
    at.sidebar.selectbox(key="wb_model").set_value("Other folder…").run()
    assert not at.exception
    folder = tmp_path / "m"
    if what != "missing":
        folder.mkdir()
    if what == "broken":
        (folder / "config.json").write_text("{")
        (folder / "model.safetensors").write_bytes(b"xx")
    at.sidebar.text_input(key="wb_model_path").set_value(str(folder)).run()
    assert not at.exception
    assert at.error and str(folder) in at.error[0].value


def test_no_checkpoints_found(tmp_path, monkeypatch):
    monkeypatch.setenv("PULSE_WORKBENCH_CHECKPOINT_DIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception and not at.error
    assert "No checkpoints found" in at.warning[0].value


def test_default_app_on_the_shipped_checkpoint(monkeypatch):
    shipped = REPO / "checkpoints" / "story-world-bank"
    if not (shipped / "model.safetensors").is_file():
        pytest.skip(f"the shipped checkpoint is not in {shipped} yet")
    monkeypatch.delenv("PULSE_WORKBENCH_CHECKPOINT_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert_ok(at)
    assert at.sidebar.selectbox(key="wb_model").value == "story-world-bank"
    assert at.sidebar.radio(key="wb_source").value == "Example story"
    assert chart(at, "overview_loss")["data"][0]["type"] == "heatmap"


def test_long_text_is_windowed(app_env):
    text = " ".join(["mary went to the kitchen . john picked up the apple . where is mary ? kitchen ."] * 111)
    at = AppTest.from_file(str(PAGES_DIR / "routing.py"), default_timeout=TIMEOUT)
    at.session_state["wb_source"] = "Free text"
    at.session_state["wb_text"] = text
    at.run()
    assert_ok(at)
    assert len(text.split()) > 1900
    assert any("Long text" in c.value for c in at.caption)
    z0 = z_of(at, "routing_heatmap")
    assert z0.shape[1] == 160  # a window, not 2,000 columns
    at.slider(key="routing_start").set_value(1000).run()
    assert_ok(at)
    assert chart(at, "routing_heatmap")["data"][0]["x"][0] == 1000
