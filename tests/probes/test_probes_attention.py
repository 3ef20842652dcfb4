import math

import pytest
import torch

from probes import decay_attention_matrix, decay_bound, half_life, head_summary, run_with_trace
from probes.attention import attention_distances


def reference_A(q, k, gamma, n, real, eps):
    """Explicit loops: A[t, s] = gamma^(#real in (s, t]) q_t.k_s / (n_t + eps)."""
    T = q.shape[0]
    A = torch.zeros(T, T, dtype=torch.float64)
    for t in range(T):
        for s in range(t + 1):
            m = sum(real[r] for r in range(s + 1, t + 1))
            A[t, s] = gamma ** m * float(q[t].double() @ k[s].double()) / (float(n[t]) + eps)
    return A


@pytest.mark.parametrize("padded", [False, True])
def test_A_times_V_reproduces_output(plain_model, ids, padded):
    mask = None
    if padded:
        mask = torch.ones_like(ids, dtype=torch.float32)
        mask[0, :5] = 0  # left padding
        mask[1, 9:12] = 0  # padding inside the row
    _, tr = run_with_trace(plain_model, ids, attention_mask=mask, names="blocks.*.attn.*")
    assert tr.attention_mask is not None
    T = ids.shape[1]
    for layer in range(2):
        for head in range(2):
            for b in range(2):
                A, ts, ss = decay_attention_matrix(tr, layer, head, sample=b)
                assert A.shape == (T, T) and torch.all(A.triu(1) == 0)
                out = A @ tr[f"blocks.{layer}.attn.hook_v"][b, head].double()
                ref = tr[f"blocks.{layer}.attn.hook_out"][b, head].double()
                real = torch.ones(T, dtype=torch.bool) if mask is None else mask[b].bool()
                assert (out - ref)[real].abs().max() < 1e-5
    # against the explicit loop, on a window
    b, layer, head = 1, 1, 1
    A, ts, ss = decay_attention_matrix(tr, layer, head, window=(6, 15), s_start=2, sample=b)
    gamma = float(tr[f"blocks.{layer}.attn.hook_decay"][head])
    real = [1.0] * T if mask is None else mask[b].tolist()
    ref = reference_A(tr[f"blocks.{layer}.attn.hook_q_features"][b, head], tr[f"blocks.{layer}.attn.hook_k_features"][b, head],
                      gamma, tr[f"blocks.{layer}.attn.hook_normalizer"][b, head], real, 1e-6)
    torch.testing.assert_close(A, ref[6:15, 2:15], atol=1e-9, rtol=1e-6)
    assert list(ts) == list(range(6, 15)) and list(ss) == list(range(2, 15))


def test_window_checks(plain_model, ids):
    _, tr = run_with_trace(plain_model, ids, names="blocks.0.attn.*")
    with pytest.raises(ValueError, match="window"):
        decay_attention_matrix(tr, 0, 0, window=(5, 100))
    with pytest.raises(ValueError, match="head"):
        decay_attention_matrix(tr, 0, 7)
    with pytest.raises(KeyError, match="blocks.1.attn"):
        decay_attention_matrix(tr, 1, 0)


def test_half_life_and_distances(plain_model, ids):
    assert abs(float(half_life(0.5)) - 1.0) < 1e-12
    assert decay_bound(0.5, 0.9) == 3  # 1 - 0.5^4 = 0.9375 >= 0.9 > 1 - 0.5^3
    A = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0.8, 0.1, 0.1]], dtype=torch.float64)
    import numpy as np
    mean_d, eff = attention_distances(A, np.arange(3), np.arange(3), mass=0.9)
    assert abs(mean_d - (0 + 0.5 + (0.1 * 1 + 0.8 * 2)) / 3) < 1e-12
    assert eff == pytest.approx((0 + 1 + 2) / 3)
    _, tr = run_with_trace(plain_model, ids, names="blocks.*.attn.*")
    df = head_summary(tr)
    assert len(df) == 4 and (df.half_life > 0).all() and (df.effective_context >= 0).all()
    g = plain_model.blocks[0].attn.decay().detach()
    assert df.half_life.iloc[0] == pytest.approx(math.log(0.5) / math.log(float(g[0])))


def test_distances_of_rows_that_do_not_sum_to_one():
    import numpy as np

    ts, ss = np.arange(3), np.arange(3)
    A = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0.8, 0.1, 0.1]], dtype=torch.float64)
    ref = attention_distances(A, ts, ss, mass=0.9)
    # each row is normalised by its own total: scaling rows (a truncated window, eps) changes nothing
    scaled = A * torch.tensor([[0.4], [3.0], [0.05]], dtype=torch.float64)
    assert attention_distances(scaled, ts, ss, mass=0.9) == pytest.approx(ref, abs=1e-12)
    # a row measured in part: [0.2, 0.2] of a row that sums to 0.4 -> distances of that share
    part = torch.tensor([[0.0, 0, 0], [0.2, 0.2, 0], [0.0, 0, 0]], dtype=torch.float64)
    mean_d, eff = attention_distances(part, ts, ss, mass=0.9)
    assert mean_d == pytest.approx(0.5) and eff == 1.0  # the all-zero rows are skipped, not counted as 0
    # negative entries are clipped to 0 before normalising
    neg = torch.tensor([[1.0, 0, 0], [-0.5, 1.0, 0], [0.0, -2.0, 2.0]], dtype=torch.float64)
    assert attention_distances(neg, ts, ss, mass=0.9) == pytest.approx((0.0, 0.0))
    # nothing to measure: NaN, not 0
    assert all(math.isnan(v) for v in attention_distances(torch.zeros(3, 3, dtype=torch.float64), ts, ss))


def test_distances_match_a_per_row_loop():
    import numpy as np

    g = torch.Generator().manual_seed(0)
    A = torch.rand(9, 12, generator=g, dtype=torch.float64).tril(3) * torch.rand(9, 1, generator=g, dtype=torch.float64)
    ts, ss = np.arange(3, 12), np.arange(12)
    real = torch.ones(12, dtype=torch.float64)
    real[[1, 6]] = 0
    c = torch.cumsum(real, 0)
    means, effs = [], []
    for i, t in enumerate(ts):
        if real[t] == 0:
            continue
        row = A[i].clamp_min(0)
        d = (c[t] - c[torch.as_tensor(ss)]).clamp_min(0)
        means.append(float((row * d).sum() / row.sum()))
        order = torch.argsort(d, stable=True)
        cm = torch.cumsum(row[order], 0) / row.sum()
        effs.append(float(d[order][int((cm < 0.7).sum())]))
    got = attention_distances(A, ts, ss, mass=0.7, real=real)
    assert got == pytest.approx((np.mean(means), np.mean(effs)), abs=1e-12)


def test_head_summary_ignores_padded_positions(plain_model):
    """A padded row's summary equals the summary of its real tokens alone (padded query rows
    predict nothing and are skipped)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (2, 21), generator=g)
    mask = torch.ones(2, 21)
    mask[0, 15:] = 0  # right padding
    _, padded = run_with_trace(plain_model, ids, attention_mask=mask, names="blocks.*.attn.*")
    _, alone = run_with_trace(plain_model, ids[:1, :15], names="blocks.*.attn.*")
    a, b = head_summary(padded, sample=0), head_summary(alone, sample=0)
    for col in ("mean_distance", "effective_context"):
        assert a[col].tolist() == pytest.approx(b[col].tolist(), abs=1e-5)
