""""What this model relies on": the chart equals the usage table, and the pages show it."""
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from workbench import charts
from workbench_paths import REPO

TIMEOUT = 120
PAGES_DIR = REPO / "workbench" / "pages"


@pytest.fixture(scope="module")
def report(checkpoint_dir):
    from probes.usage import checkpoint_usage
    from workbench.state import USAGE_N

    return checkpoint_usage(checkpoint_dir / "tiny-a", n=USAGE_N, write=False, use_cache=False)


def test_chart_data_equal_the_table(report):
    df = report.frame()
    fig = charts.usage_bars(report.rows, chance=report.meta["chance_accuracy"])
    bars = df[df["mechanism"] != "intact"]
    bar = fig.data[0]
    assert bar.type == "bar" and bar.orientation == "h" and len(fig.data) == 1
    assert list(bar.y) == list(bars["label"])
    assert np.allclose(bar.x, bars["accuracy"])
    assert np.allclose(np.array(bar.x) + np.array(bar.error_x.array), bars["acc_hi"])
    assert np.allclose(np.array(bar.x) - np.array(bar.error_x.arrayminus), bars["acc_lo"])
    lines = sorted(s.x0 for s in fig.layout.shapes)
    assert lines == sorted([report.intact["accuracy"], report.meta["chance_accuracy"]])
    assert f"n = {report.n} examples" in fig.layout.title.text
    # the DataFrame gives the same figure; heads=False leaves out exactly the per-head rows
    same = charts.usage_bars(df, chance=report.meta["chance_accuracy"])
    assert list(same.data[0].y) == list(bar.y) and np.allclose(same.data[0].x, bar.x)
    no_heads = charts.usage_bars(report.rows, heads=False).data[0]
    assert list(no_heads.y) == list(bars[bars["head"].isna()]["label"])
    assert len(no_heads.y) < len(bar.y)
    with pytest.raises(ValueError, match="intact"):
        charts.usage_bars(report.rows[1:])


def _chart(at, key):
    for el in at.get("plotly_chart"):
        if el.proto.id.endswith(f"-{key}"):
            return json.loads(el.proto.spec)
    raise AssertionError(f"no chart {key}")


def test_overview_leads_with_the_usage_chart(app_env, report):
    at = AppTest.from_file(str(PAGES_DIR / "overview.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert at.subheader[0].value == "What this model relies on"
    shown = _chart(at, "overview_usage")["data"][0]
    table = [r for r in report.rows if r["mechanism"] != "intact" and r["head"] is None]
    assert shown["y"] == [r["label"] for r in table]
    assert np.allclose(shown["x"], [r["accuracy"] for r in table])
    assert any(f"n = {report.n} examples" in c.value for c in at.caption)
    at.checkbox(key="overview_usage_heads").check().run()
    assert not at.exception
    assert len(_chart(at, "overview_usage")["data"][0]["y"]) == len(report.rows) - 1


@pytest.mark.parametrize("page, mechanism", [("routing", "state_bank"), ("importance", "state_bank"),
                                             ("memory", "memory"), ("attention", "linear_attention")])
def test_mechanism_pages_say_how_much_it_matters(app_env, report, page, mechanism):
    at = AppTest.from_file(str(PAGES_DIR / f"{page}.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    lines = [m.value for m in at.markdown if m.value.startswith("**How much this model uses it.**")]
    assert len(lines) == 1 and report.sentence(mechanism) in lines[0]
