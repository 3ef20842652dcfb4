"""Chart builders, tested against the data they draw.

The first half builds every chart from small known data and checks what a reader sees: which
axis carries the positions / tokens (``z[i][j]`` is the datum of row i, column j), tick labels
equal to the given tokens at their positions, the colour a value gets (green = positive
attribution, red = higher loss, dark = a large weight), shared colour ranges, titles and axis
titles, tick labels thinned at 2,048 tokens while the hover still covers every token. The
second half builds them from a real trace of a tiny model."""

import re

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from workbench import charts, core
from workbench.charts import style

TOK = ["the", "cat", "sat", "on", "a", "mat", "Alice", "went"]


# ------------------------------------------------------------------ helpers
def _rgb(c: str) -> np.ndarray:
    c = c.strip()
    if c.startswith("#"):
        return np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)], float)
    return np.array([float(v) for v in re.findall(r"[\d.]+", c)[:3]], float)


def color_at(trace, value: float) -> np.ndarray:
    """The RGB colour a heatmap trace gives ``value`` (its colour scale, zmin / zmax, reversescale)."""
    scale = [(float(f), _rgb(c)) for f, c in trace.colorscale]
    zmin, zmax = float(trace.zmin), float(trace.zmax)
    f = float(np.clip((value - zmin) / (zmax - zmin), 0, 1))
    if trace.reversescale:
        f = 1 - f
    for (f0, c0), (f1, c1) in zip(scale, scale[1:]):
        if f0 <= f <= f1:
            return c0 + (c1 - c0) * ((f - f0) / (f1 - f0) if f1 > f0 else 0)
    return scale[-1][1]


def lum(rgb: np.ndarray) -> float:
    return float(rgb @ [0.299, 0.587, 0.114])


def is_green(c) -> bool:
    r, g, b = _rgb(c) if isinstance(c, str) else c
    return g > r + 40 and g > b


def is_red(c) -> bool:
    r, g, b = _rgb(c) if isinstance(c, str) else c
    return r > g + 40 and r > b


def ticks(fig, axis="x"):
    ax = fig.layout[f"{axis}axis"]
    return list(ax.tickvals), list(ax.ticktext)


def assert_titled(fig, x=True, y=True):
    assert fig.layout.title.text, "chart without a title"
    if x:
        assert fig.layout.xaxis.title.text, "x axis without a title"
    if y:
        assert fig.layout.yaxis.title.text, "y axis without a title"


def assert_hover(trace, *parts):
    for p in parts:
        assert p in trace.hovertemplate, f"hover lacks {p!r}: {trace.hovertemplate!r}"


# ------------------------------------------------------------------ per-token charts, known data
def test_loss_strip_maps_positions_tokens_and_loss():
    pos, tok = [10, 11, 12, 13, 14], TOK[:5]
    loss = [np.nan, 0.5, 2.0, 1.0, 3.0]
    fig = charts.loss_strip(pos, tok, loss)
    hm = fig.data[0]
    assert list(hm.x) == pos and len(hm.z) == 1
    assert hm.z[0][0] is None and list(hm.z[0][1:]) == [0.5, 2.0, 1.0, 3.0]
    assert list(hm.customdata[0]) == tok
    assert ticks(fig) == (pos, tok)
    assert (hm.zmin, hm.zmax) == (0, 3.0)
    assert color_at(hm, 0.0).min() >= 235  # 0 nats: near white
    assert lum(color_at(hm, 3.0)) < lum(color_at(hm, 2.0)) < lum(color_at(hm, 0.5))  # more loss, darker
    assert is_red(color_at(hm, 3.0))
    assert_titled(fig, y=False)
    assert "position" in fig.layout.xaxis.title.text
    assert_hover(hm, "%{x}", "%{customdata}", "%{z")
    # a shared range for strips that are compared side by side
    lo, hi = charts.shared_range(loss, [0.2, 7.0])
    same = charts.loss_strip(pos, tok, loss, zmax=hi).data[0]
    assert same.zmax == 7.0 and lum(color_at(same, 3.0)) > lum(color_at(hm, 3.0))


def test_top_predictions_order_and_highlight():
    fig = charts.top_predictions(["cat", "dog", "mat"], [0.6, 0.3, 0.1], actual="dog")
    bar = fig.data[0]
    assert list(bar.y) == ["1. cat", "2. dog", "3. mat"] and list(bar.x) == [0.6, 0.3, 0.1]
    assert fig.layout.yaxis.autorange == "reversed"  # rank 1 on top
    c = list(bar.marker.color)
    assert c[1] != c[0] and c[0] == c[2]  # only the actual next token stands out
    assert list(fig.layout.xaxis.range) == [0, 1]
    assert_titled(fig)


def test_token_attribution_bars_colour_by_sign():
    pos, tok, a = [3, 4, 5, 6], TOK[:4], [1.5, -2.0, 0.25, -0.1]
    fig = charts.token_attribution_bars(pos, tok, a, target_pos=6)
    bar = fig.data[0]
    assert list(bar.x) == pos and list(bar.y) == a and list(bar.customdata) == tok
    for c, v in zip(bar.marker.color, a):
        assert (is_green(c) if v > 0 else is_red(c)), (c, v)
    # the bars use the ends of the one attribution scale
    assert set(bar.marker.color) == {style.SCALES["attribution"][0][1], style.SCALES["attribution"][-1][1]}
    assert ticks(fig) == (pos, tok)
    assert fig.layout.shapes[0].x0 == 6
    assert_titled(fig)
    assert_hover(bar, "%{x}", "%{customdata}", "%{y")


def test_loss_comparison_and_delta_bars():
    pos, tok = [0, 1, 2], TOK[:3]
    fig = charts.loss_comparison(pos, tok, [np.nan, 1.0, 2.0], [np.nan, 1.5, 0.5], "A", "B")
    assert [t.name for t in fig.data] == ["A", "B"]
    assert list(fig.data[0].y) == [None, 1.0, 2.0] and list(fig.data[1].y) == [None, 1.5, 0.5]
    assert all(list(t.x) == pos and list(t.customdata) == tok for t in fig.data)
    assert ticks(fig) == (pos, tok)
    assert_titled(fig)
    assert_hover(fig.data[0], "%{x}", "%{customdata}", "%{y")
    d = [np.nan, 0.7, -0.4]
    fig = charts.loss_delta_bars(pos, tok, d)
    bar = fig.data[0]
    assert list(bar.y) == [None, 0.7, -0.4] and list(bar.x) == pos
    assert is_red(bar.marker.color[1]) and is_green(bar.marker.color[2])  # harder = red, easier = green
    assert ticks(fig) == (pos, tok)
    assert_titled(fig)
    assert_hover(bar, "%{x}", "%{customdata}", "%{y")


def test_token_lines_series_tokens_and_gate_range():
    pos, tok = [5, 6, 7], TOK[:3]
    fig = charts.token_lines(pos, tok, {"layer 0": [0.1, 0.5, 0.9], "layer 1": [0.2, 0.3, 0.4]},
                             title="gate", y_title="mean gate")
    assert [t.name for t in fig.data] == ["layer 0", "layer 1"]
    assert list(fig.data[0].y) == [0.1, 0.5, 0.9] and list(fig.data[1].x) == pos
    assert list(fig.data[0].customdata) == tok and ticks(fig) == (pos, tok)
    assert fig.layout.yaxis.range[0] == 0 and fig.layout.yaxis.range[1] >= 1  # gates: the whole [0, 1]
    assert_titled(fig)
    assert_hover(fig.data[0], "%{x}", "%{customdata}", "%{y")


# ------------------------------------------------------------------ state-bank charts, known data
def test_slot_heatmap_rows_are_slots_columns_positions():
    w = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0], [0.6, 0.4, 0.0]])  # [T=4, S=3]
    pos, tok = [20, 21, 22, 23], TOK[:4]
    fig = charts.slot_heatmap(w, pos, tok)
    hm = fig.data[0]
    z = np.array(hm.z, float)
    assert z.shape == (3, 4)
    for j in range(4):
        for s in range(3):
            assert z[s, j] == w[j, s]
    assert list(hm.x) == pos and list(hm.y) == [0, 1, 2]
    assert [list(r) for r in hm.customdata] == [tok] * 3
    assert ticks(fig) == (pos, tok)
    assert ticks(fig, "y")[0] == [0, 1, 2]
    assert fig.layout.yaxis.autorange == "reversed"  # slot 0 on top
    # routing weights: one scale, always 0 to 1, so two heatmaps compare by colour
    assert (hm.zmin, hm.zmax) == (0, 1)
    other = charts.slot_heatmap(w * 0.5, pos, tok).data[0]
    assert (other.zmin, other.zmax) == (0, 1) and other.colorscale == hm.colorscale
    assert color_at(hm, 0.0).min() >= 235 and lum(color_at(hm, 1.0)) < lum(color_at(hm, 0.5)) < lum(color_at(hm, 0.0))
    assert_titled(fig)
    assert "position" in fig.layout.xaxis.title.text
    assert_hover(hm, "%{x}", "%{customdata}", "%{y}", "%{z")
    # an explicit range wins
    assert charts.slot_heatmap(w, pos, tok, zmin=0.2, zmax=0.8).data[0].zmax == 0.8


def test_routing_sankey_slots_in_index_order_labels_outside():
    cats = ["place", "name", "place", "name", "verb"]
    # slot 2 gets the most weight, slot 0 the least, slot 1 none
    w = np.array([[0.1, 0.0, 0.9], [0.0, 0.0, 1.0], [0.2, 0.0, 0.8], [0.1, 0.0, 0.3], [0.0, 0.0, 0.6]])
    fig = charts.routing_sankey(cats, np.c_[w, [0.0, 0.0, 0.0, 0.6, 0.4]])
    sk = fig.data[0]
    ann = [(a.text, a.x, a.y, a.xanchor) for a in fig.layout.annotations]
    names = [a[0] for a in ann]
    assert names == ["name", "place", "verb", "slot 0", "slot 2", "slot 3"]  # slot 1 carries nothing
    ys = list(sk.node.y)
    assert ys[0] < ys[1] < ys[2] and ys[3] < ys[4] < ys[5]  # top to bottom: by name, then by slot index
    assert list(sk.node.x[:3]) == [sk.node.x[0]] * 3 and sk.node.x[0] < sk.node.x[3]
    for (text, x, y, anchor), ny in zip(ann, ys):  # each label beside its own node, outside the flows
        assert y == pytest.approx(1 - ny)
        assert (x, anchor) == ((0, "right") if not text.startswith("slot") else (1, "left"))
    assert all(l == "" for l in sk.node.label)  # no label drawn over the flows
    flows = {(names[a], names[b]): v for a, b, v in zip(sk.link.source, sk.link.target, sk.link.value)}
    full = np.c_[w, [0.0, 0.0, 0.0, 0.6, 0.4]]
    for c in set(cats):
        rows = full[[i for i, x in enumerate(cats) if x == c]].sum(0)
        for s in range(4):
            assert flows.get((c, f"slot {s}"), 0.0) == pytest.approx(rows[s])
    # a link has its category's colour
    for a, col in zip(sk.link.source, sk.link.color):
        assert col == style.rgba(sk.node.color[a], 0.45)
    assert fig.layout.title.text


def test_gates_over_time_sorted_lines_and_tokens():
    pos, slots = np.array([15, 7, 7, 15, 23, 23]), np.array([0, 0, 1, 1, 0, 1])
    vals = np.array([0.5, 0.1, 0.9, 0.8, 0.3, 0.2])
    tokens = [f"t{i}" for i in range(30)]
    fig = charts.gates_over_time(pos, slots, vals, tokens=tokens)
    assert [t.name for t in fig.data] == ["slot 0", "slot 1"]
    assert list(fig.data[0].x) == [7, 15, 23] and list(fig.data[0].y) == [0.1, 0.5, 0.3]
    assert list(fig.data[1].x) == [7, 15, 23] and list(fig.data[1].y) == [0.9, 0.8, 0.2]
    assert list(fig.data[0].customdata) == ["t7", "t15", "t23"]
    assert fig.layout.yaxis.range[0] == 0 and fig.layout.yaxis.range[1] >= 1
    assert_titled(fig)
    assert_hover(fig.data[0], "%{x}", "%{customdata}", "%{y")
    assert charts.gates_over_time(pos, slots, vals).data[0].x[0] == 7  # tokens stay optional


def test_known_importance_bars_alive_dead_threshold():
    fig = charts.importance_bars([0.9, 0.05, 0.5], [True, False, True], threshold=0.1)
    bar = fig.data[0]
    assert list(bar.x) == [0, 1, 2] and list(bar.y) == [0.9, 0.05, 0.5]
    c = list(bar.marker.color)
    assert c[0] == c[2] != c[1] and lum(_rgb(c[1])) > lum(_rgb(c[0]))  # pruned: the light grey one
    assert list(bar.customdata) == ["alive", "pruned", "alive"]
    assert fig.layout.shapes[0].y0 == 0.1 and list(fig.layout.yaxis.range) == [0, 1]
    assert_titled(fig)


def test_known_memory_heatmap_rows_only_for_read_slots():
    C, T = 6, 4
    M = np.zeros((C, T))
    M[1, 1], M[4, 2], M[4, 3], M[1, 3] = 1.0, 0.7, 0.3, 0.0
    fig = charts.memory_reads_heatmap(M, [0, 1, 2, 3], TOK[:4])
    hm = fig.data[0]
    assert list(hm.y) == [1, 4]  # the y axis keeps the slot numbers
    np.testing.assert_array_equal(np.array(hm.z, float), M[[1, 4]])
    assert ticks(fig, "y")[0] == [1, 4] and ticks(fig) == ([0, 1, 2, 3], TOK[:4])
    assert "2 of 6" in fig.layout.yaxis.title.text
    assert (hm.zmin, hm.zmax) == (0, 1)
    assert hm.colorscale == go.Heatmap(colorscale=style.SCALES["memory_read"]).colorscale
    assert lum(color_at(hm, 1.0)) < lum(color_at(hm, 0.0))
    full = charts.memory_reads_heatmap(M, [0, 1, 2, 3], TOK[:4], only_read=False)
    assert np.array(full.data[0].z).shape == (C, T) and full.layout.height >= fig.layout.height
    # 64 slots on a short text: bounded height, not 64 x 22 px
    big = charts.memory_reads_heatmap(np.random.default_rng(0).random((64, 72)), range(72),
                                      [f"w{i}" for i in range(72)])
    assert big.layout.height <= 800 and len(ticks(big, "y")[0]) <= style.MAX_TICK_LABELS
    sc = charts.memory_reads_heatmap(np.where(M > 0, M * 5 - 2, np.nan), [0, 1, 2, 3], TOK[:4], value_name="score")
    assert sc.data[0].colorscale == go.Heatmap(colorscale=style.SCALES["memory_score"]).colorscale
    assert_titled(fig)


def test_slot_attribution_diverging_scale_and_bars():
    a = np.array([[0.5, -2.0], [1.0, 0.0], [-0.25, 2.0]])  # [T=3, S=2]
    fig = charts.slot_attribution(a, [7, 8, 9], TOK[:3])
    hm = fig.data[0]
    np.testing.assert_array_equal(np.array(hm.z, float), a.T)
    assert list(hm.x) == [7, 8, 9] and list(hm.y) == [0, 1] and ticks(fig) == ([7, 8, 9], TOK[:3])
    assert (hm.zmin, hm.zmax, hm.zmid) == (-2.0, 2.0, 0)
    assert is_green(color_at(hm, 2.0)) and is_red(color_at(hm, -2.0)) and color_at(hm, 0.0).min() > 230
    bars = charts.per_slot_bars(a.sum(0))
    assert list(bars.data[0].y) == [1.25, 0.0] and list(bars.data[0].x) == [0, 1]
    assert is_green(bars.data[0].marker.color[0])
    neg = charts.per_slot_bars([-1.0, 2.0]).data[0].marker.color
    assert is_red(neg[0]) and is_green(neg[1])
    # one diverging scale for signed attributions: heatmap ends = bar colours
    assert np.allclose(color_at(hm, 2.0), _rgb(neg[1])) and np.allclose(color_at(hm, -2.0), _rgb(neg[0]))
    assert_titled(fig)
    assert_titled(bars)


# ------------------------------------------------------------------ attention charts, known data
def test_decay_attention_rows_queries_columns_keys():
    A = np.array([[0.1, 0.9, 0.0, 0.0], [0.2, 0.3, 0.5, 0.0], [0.0, 0.1, 0.2, 0.7]])  # t in 5..7, s in 4..7
    ts, ss = [5, 6, 7], [4, 5, 6, 7]
    tt, st_ = ["q5", "q6", "q7"], ["k4", "k5", "k6", "k7"]
    fig = charts.decay_attention_heatmap(A, ts, ss, tt, st_)
    hm = fig.data[0]
    np.testing.assert_array_equal(np.array(hm.z), A)
    assert list(hm.x) == ss and list(hm.y) == ts
    assert hm.customdata[2][1] == "q7 ← k5"
    assert ticks(fig) == (ss, st_) and ticks(fig, "y") == (ts, tt)
    assert fig.layout.yaxis.autorange == "reversed"
    assert not fig.layout.yaxis.tickangle  # y labels horizontal, not rotated into a smear
    assert (hm.zmin, hm.zmax) == (0, 0.9)
    assert lum(color_at(hm, 0.9)) > lum(color_at(hm, 0.0))  # viridis: large = bright
    assert "query" in fig.layout.yaxis.title.text and "key" in fig.layout.xaxis.title.text
    assert_titled(fig)
    assert_hover(hm, "%{x}", "%{y}", "%{customdata}", "%{z")


def test_decay_attention_y_labels_fit_the_height():
    T = 72
    tok = [f"w{i}" for i in range(T)]
    fig = charts.decay_attention_heatmap(np.tril(np.ones((T, T))), range(T), range(T), tok, tok)
    vals, text = ticks(fig, "y")
    plot_px = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    assert len(vals) * style.TICK_PX <= plot_px  # every label gets its line
    assert fig.layout.yaxis.tickangle in (None, 0)  # horizontal: rotated labels overlap into a smear
    assert all(t.startswith(tok[v] + " ") for v, t in zip(vals, text))


def test_half_life_ticks_are_plain_numbers():
    fig = charts.half_life_bars([0, 0, 1, 1], [0, 1, 0, 1], [1.3, 4.0, 37.0, 420.0])
    assert [t.name for t in fig.data] == ["head 0", "head 1"]
    assert list(fig.data[0].y) == [1.3, 37.0] and list(fig.data[0].x) == ["layer 0", "layer 1"]
    ax = fig.layout.yaxis
    assert ax.type == "log" and ax.tickmode == "array"
    vals, text = list(ax.tickvals), list(ax.ticktext)
    assert vals == sorted(vals) and len(vals) <= 10
    assert [float(t.replace(",", "")) for t in text] == vals  # each label is its value: no minor digits
    assert vals[0] <= 1.3 and vals[-1] >= 420.0
    assert np.allclose(ax.range, np.log10([vals[0], vals[-1]]))
    assert_titled(fig)


# ------------------------------------------------------------------ every token chart at 2,048 tokens
LONG = 2048


def _long_charts():
    rng = np.random.default_rng(0)
    pos, tok = list(range(100, 100 + LONG)), [f"w{i}" for i in range(LONG)]
    v = rng.random(LONG)
    return pos, tok, {
        "loss_strip": charts.loss_strip(pos, tok, v),
        "attribution_bars": charts.token_attribution_bars(pos, tok, v - 0.5),
        "loss_comparison": charts.loss_comparison(pos, tok, v, v[::-1]),
        "loss_delta_bars": charts.loss_delta_bars(pos, tok, v - 0.5),
        "token_lines": charts.token_lines(pos, tok, {"a": v}),
        "slot_heatmap": charts.slot_heatmap(rng.dirichlet(np.ones(4), LONG), pos, tok),
        "memory_heatmap": charts.memory_reads_heatmap(rng.random((8, LONG)), pos, tok),
        "slot_attribution": charts.slot_attribution(rng.normal(size=(LONG, 4)), pos, tok),
        "attention_keys": charts.decay_attention_heatmap(rng.random((3, LONG)), pos[-3:], pos, tok[-3:], tok),
    }


@pytest.mark.parametrize("name", list(_long_charts()[2]))
def test_long_text_tick_labels_bounded_hover_complete(name):
    pos, tok, figs = _long_charts()
    fig = figs[name]
    vals, text = ticks(fig)
    assert 10 <= len(vals) <= style.MAX_TICK_LABELS
    for v, t in zip(vals, text):  # each shown label: the token at that position (and the position)
        assert t == f"{tok[pos.index(v)]} @{v}"
    tr = fig.data[0]
    cd = tr.customdata
    flat = [c for row in cd for c in row] if isinstance(cd[0], (list, tuple)) else list(cd)
    assert set(tok) <= set(x.split(" ← ")[-1] for x in flat)  # the hover still has every token
    assert "%{customdata}" in tr.hovertemplate


def test_attention_query_axis_thinned_at_2048():
    T = LONG
    tok = [f"w{i}" for i in range(T)]
    fig = charts.decay_attention_heatmap(np.ones((T, 2)), range(T), [0, 1], tok, tok[:2])
    vals, text = ticks(fig, "y")
    assert len(vals) <= style.MAX_TICK_LABELS and all(t == f"{tok[v]} @{v}" for v, t in zip(vals, text))
    assert len(fig.data[0].customdata) == T


def test_tick_labels_escape_and_cut_long_tokens():
    fig = charts.loss_strip([0, 1], ["<eos>", "a" * 40], [1.0, 2.0])
    text = ticks(fig)[1]
    assert text[0] == "&lt;eos&gt;" and len(text[1]) <= style.LABEL_CHARS
    assert fig.data[0].customdata[0][1] == "a" * 40  # the hover keeps the whole token


def test_known_claim_verdicts():
    res = [{"claim": "c1", "verdict": "supported", "statistic": "rho", "value": 0.8},
           {"claim": "c2", "verdict": "not supported", "statistic": "diff", "value": -0.1}]
    fig = charts.claim_verdicts(res)
    bar = fig.data[0]
    assert list(bar.y) == ["c1", "c2"] and list(bar.x) == [0.8, -0.1]
    assert is_green(bar.marker.color[0]) and is_red(bar.marker.color[1])
    assert_titled(fig)


def test_bad_lengths_are_refused():
    with pytest.raises(ValueError, match="tokens"):
        charts.loss_strip([0, 1, 2], ["a", "b"], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="A"):
        charts.decay_attention_heatmap(np.zeros((2, 3)), [0, 1, 2], [0, 1], ["a"] * 3, ["a"] * 2)


# ------------------------------------------------------------------ from a real trace


@pytest.fixture(scope="module")
def run_and_ckpt(checkpoint_dir):
    ckpt = core.load_checkpoint(checkpoint_dir / "tiny-a")
    ex = core.examples(ckpt, n=1)[0]
    run, warnings = core.trace_text(ckpt, ex.text, ex.categories)
    assert warnings == []
    return run, ckpt


def test_loss_strip_and_predictions(run_and_ckpt):
    run, ckpt = run_and_ckpt
    loss = run.loss()
    fig = charts.loss_strip(range(run.T), run.tokens, loss)
    assert isinstance(fig, go.Figure) and [t.type for t in fig.data] == ["heatmap"]
    z = np.array(fig.data[0].z[0], dtype=float)
    assert z.shape == (run.T,) and np.isnan(z[0]) and np.allclose(z[1:], loss[1:], atol=1e-6, equal_nan=True)
    assert np.isfinite(z).sum() == 2  # answers-only model: only its two answer tokens carry a loss
    assert list(fig.data[0].x) == list(range(run.T))
    pos = 5
    ids = run.trace["predictions.top_ids"][0, pos].tolist()
    probs = run.trace["predictions.top_probs"][0, pos].tolist()
    fig = charts.top_predictions([ckpt.tokenizer.decode([i]) for i in ids], probs, actual=run.tokens[pos + 1])
    assert fig.data[0].type == "bar" and np.allclose(fig.data[0].x, probs)
    assert list(fig.data[0].x) == sorted(fig.data[0].x, reverse=True)


def test_routing_heatmap_and_sankey(run_and_ckpt):
    run, _ = run_and_ckpt
    w = run.trace["blocks.1.states.hook_routing"][0].numpy()  # [T, S]
    fig = charts.slot_heatmap(w[:20], range(20), run.tokens[:20])
    assert fig.data[0].type == "heatmap"
    np.testing.assert_allclose(np.array(fig.data[0].z), w[:20].T, rtol=1e-6)
    assert list(fig.layout.xaxis.ticktext) == run.tokens[:20]  # token labels, positions as x
    fig = charts.routing_sankey(run.categories, w)
    sk = fig.data[0]
    assert sk.type == "sankey"
    cats = sorted(set(run.categories))
    labels = [a.text for a in fig.layout.annotations]
    assert labels == cats + [f"slot {s}" for s in range(w.shape[1]) if w[:, s].sum() > 1e-9]
    # link values are the summed weights: they add up to the number of tokens (rows sum to 1)
    assert sum(sk.link.value) == pytest.approx(float(w.sum()), rel=1e-6)
    assert sum(sk.link.value) == pytest.approx(run.T, rel=1e-4)


def test_gates_and_token_lines(run_and_ckpt):
    run, _ = run_and_ckpt
    df = run.trace.frame("gates")
    d = df[(df["layer"] == 0) & (df["gate"] == "update")]
    fig = charts.gates_over_time(d["pos"].to_numpy(), d["slot"].to_numpy(), d["value"].to_numpy())
    assert [t.type for t in fig.data] == ["scatter"] * d["slot"].nunique()
    s0 = d[d["slot"] == 0].sort_values("pos")
    np.testing.assert_allclose(fig.data[0].y, s0["value"].to_numpy(), rtol=1e-6)
    assert all(0.0 <= v <= 1.0 for t in fig.data for v in t.y)
    fg = run.trace["blocks.0.hook_fusion_gate"][0].mean(-1).numpy()
    fig = charts.token_lines(range(run.T), run.tokens, {"layer 0": fg})
    assert fig.data[0].name == "layer 0" and np.allclose(fig.data[0].y, fg)


def test_importance_bars(run_and_ckpt):
    run, ckpt = run_and_ckpt
    imp = run.trace.frame("importance")
    d = imp[imp["layer"] == 0]
    fig = charts.importance_bars(d["importance"].to_numpy(), d["alive"].to_numpy(), ckpt.config.prune_threshold)
    assert fig.data[0].type == "bar"
    expected = torch.sigmoid(ckpt.model.blocks[0].states.importance_logits).detach().numpy()
    np.testing.assert_allclose(fig.data[0].y, expected, rtol=1e-6)
    assert fig.layout.shapes and fig.layout.shapes[0].y0 == ckpt.config.prune_threshold


def test_decay_attention_and_half_lives(run_and_ckpt):
    from probes import decay_attention_matrix

    run, _ = run_and_ckpt
    A, ts, ss = decay_attention_matrix(run.trace, 1, 0, window=(10, 30), s_start=10)
    fig = charts.decay_attention_heatmap(A.numpy(), ts, ss, [run.tokens[i] for i in ts], [run.tokens[i] for i in ss])
    z = np.array(fig.data[0].z)
    assert fig.data[0].type == "heatmap" and z.shape == (20, 20)
    assert np.allclose(np.triu(z, 1), 0)  # causal: nothing above the diagonal
    dec = run.trace.frame("decay")
    fig = charts.half_life_bars(dec["layer"], dec["head"], dec["half_life"])
    assert [t.type for t in fig.data] == ["bar", "bar"]  # one trace per head
    np.testing.assert_allclose(fig.data[0].y, dec[dec["head"] == 0]["half_life"], rtol=1e-9)
    assert fig.layout.yaxis.type == "log"


def test_memory_heatmap(run_and_ckpt):
    run, ckpt = run_and_ckpt
    C = ckpt.config.memory_capacity
    slots = run.trace["blocks.0.memory.hook_read_slots"][0].numpy()
    w = run.trace["blocks.0.memory.hook_read_weights"][0].numpy()
    M = np.zeros((C, run.T))
    for t in range(run.T):
        for r in range(slots.shape[1]):
            if slots[t, r] >= 0:
                M[slots[t, r], t] = w[t, r]
    read = charts.memory_reads_heatmap(M, range(run.T), run.tokens)  # rows: the slots read at least once
    assert list(read.data[0].y) == [s for s in range(C) if M[s].any()]
    np.testing.assert_allclose(np.array(read.data[0].z), M[list(read.data[0].y)])
    fig = charts.memory_reads_heatmap(M, range(run.T), run.tokens, only_read=False)
    z = np.array(fig.data[0].z)
    assert z.shape == (C, run.T) and np.allclose(z.sum(0)[1:], 1.0, atol=1e-5)  # every later token reads
    assert np.allclose(z[:, 0], 0)  # the first token has nothing to read


def test_attribution_charts(run_and_ckpt):
    from probes.attribution import slot_attributions, token_attributions

    run, ckpt = run_and_ckpt
    ids = run.input_ids()[:, :12]
    res = token_attributions(ckpt.model, ids, position=11, target=int(ids[0, 11]), n_steps=8)
    fig = charts.token_attribution_bars(range(12), run.tokens[:12], res.attributions.numpy(), target_pos=11)
    assert fig.data[0].type == "bar" and np.allclose(fig.data[0].y, res.attributions.numpy())
    colors = fig.data[0].marker.color
    assert all(is_green(c) == (v >= 0) for c, v in zip(colors, fig.data[0].y))
    sres = slot_attributions(ckpt.model, ids, layer=0, position=11, target=int(ids[0, 11]), n_steps=8)
    fig = charts.slot_attribution(sres.attributions.numpy(), range(12), run.tokens[:12])
    assert fig.data[0].zmid == 0 and np.allclose(np.array(fig.data[0].z, float), sres.attributions.numpy().T)
    fig = charts.per_slot_bars(sres.per_slot.numpy())
    assert np.allclose(fig.data[0].y, sres.per_slot.numpy())


def test_intervention_charts(run_and_ckpt):
    import copy

    from probes import compare, prune_slots

    run, ckpt = run_and_ckpt
    res = compare(copy.deepcopy(ckpt.model), run.input_ids(), [prune_slots(0, [0, 1])])
    before, after = res.loss_before[0].numpy(), res.loss_after[0].numpy()
    fig = charts.loss_comparison(range(run.T), run.tokens, before, after)
    assert [t.name for t in fig.data] == ["before", "after"]
    assert fig.data[0].y[0] is None and np.allclose(np.array(fig.data[1].y[1:], float), after[1:])
    fig = charts.loss_delta_bars(range(run.T), run.tokens, after - before)
    y = np.array(fig.data[0].y[1:], float)
    assert np.allclose(y, (after - before)[1:]) and np.abs(y).max() > 0  # pruning really changed the loss


def test_claim_verdicts(run_and_ckpt):
    from probes import slot_specialisation, slower_decay_attends_further

    run, _ = run_and_ckpt
    results = [slower_decay_attends_further(run.trace), slot_specialisation(run.trace, run.categories, n_shuffles=20)]
    fig = charts.claim_verdicts(results)
    assert list(fig.data[0].y) == [r["claim"] for r in results]
    assert all(r["verdict"] in t for r, t in zip(results, fig.data[0].text))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="weights"):
        charts.slot_heatmap(np.zeros(5), range(5), ["a"] * 5)
    with pytest.raises(ValueError, match="weights"):
        charts.routing_sankey(["a", "b"], np.zeros((3, 2)))


def test_half_life_bars_name_their_units_when_they_are_not_heads():
    from workbench import charts

    fig = charts.half_life_bars([0, 0, 1, 1], [0, 1, 0, 1], [2.0, 8.0, 3.0, 9.0], unit_labels={0: "min", 1: "max"},
                                unit_title="decile over channels")
    assert [t.name for t in fig.data] == ["min", "max"]
    assert fig.layout.legend.title.text == "decile over channels"
    assert list(fig.data[1].y) == [8.0, 9.0] and list(fig.data[1].x) == ["layer 0", "layer 1"]
    plain = charts.half_life_bars([0, 0], [0, 1], [2.0, 8.0])
    assert [t.name for t in plain.data] == ["head 0", "head 1"] and plain.layout.legend.title.text == "head"
