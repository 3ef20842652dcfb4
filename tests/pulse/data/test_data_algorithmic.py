"""Algorithmic tasks: answers recomputed from the tokens by slow reference loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pulse.data.algorithmic import (
    IGNORE_INDEX,
    InductionConfig,
    MQARConfig,
    SelectiveCopyConfig,
    generate_dataset,
    make_batch,
)
from pulse.data.tokenizers import WordTokenizer

CONFIGS = [
    MQARConfig(),
    MQARConfig(num_pairs=4, num_queries=10, num_keys=6, num_values=3, seq_len=40),
    SelectiveCopyConfig(),
    SelectiveCopyConfig(context_len=10, num_to_copy=10, num_data_tokens=3),
    InductionConfig(),
    InductionConfig(total_len=20, segment_len=10, num_tokens=11, seq_len=24),
]


def _check_common(cfg, b, n):
    ids, labels, attn = b["input_ids"], b["labels"], b["attention_mask"]
    T = cfg.length
    assert ids.shape == labels.shape == attn.shape == (n, T)
    assert ids.dtype == labels.dtype == torch.long and attn.dtype == torch.float32
    L = cfg.natural_len
    assert (attn[:, :L] == 1).all() and (attn[:, L:] == 0).all()
    assert (ids[:, L:] == 0).all() and (labels[:, L:] == IGNORE_INDEX).all()
    assert ((ids[:, :L] >= 4) & (ids[:, :L] < cfg.vocab_size)).all()
    scored = labels != IGNORE_INDEX
    assert (labels[scored] == ids[scored]).all()
    assert not scored[:, 0].any()
    return ids.tolist(), scored.tolist()


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if isinstance(c, MQARConfig)])
def test_mqar_answers(cfg):
    b = generate_dataset(64, cfg, seed=1)
    ids, scored = _check_common(cfg, b, 64)
    P = cfg.num_pairs
    for row, sc in zip(ids, scored):
        assert row[2 * P] == cfg.SEP
        table = {}
        for j in range(P):
            k, v = row[2 * j], row[2 * j + 1]
            assert cfg.key_offset <= k < cfg.value_offset <= v
            assert k not in table
            table[k] = v
        n_scored = 0
        for t in range(len(row)):
            if sc[t]:
                n_scored += 1
                assert t > 2 * P and row[t] == table[row[t - 1]]
        assert n_scored == cfg.num_queries
        queried = [row[t - 1] for t in range(len(row)) if sc[t]]
        if cfg.num_queries <= P:
            assert len(set(queried)) == len(queried)


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if isinstance(c, SelectiveCopyConfig)])
def test_selective_copy_answers(cfg):
    b = generate_dataset(64, cfg, seed=2)
    ids, scored = _check_common(cfg, b, 64)
    C = cfg.context_len
    for row, sc in zip(ids, scored):
        assert row[C] == cfg.MARKER
        data = [x for x in row[:C] if x != cfg.NOISE]
        assert all(x >= cfg.data_offset for x in data)
        assert len(data) == cfg.num_to_copy
        answers = [row[t] for t in range(len(row)) if sc[t]]
        assert answers == data
        assert [t for t in range(len(row)) if sc[t]] == list(range(C + 1, C + 1 + cfg.num_to_copy))


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if isinstance(c, InductionConfig)])
def test_induction_answers(cfg):
    b = generate_dataset(64, cfg, seed=3)
    ids, scored = _check_common(cfg, b, 64)
    for row, sc in zip(ids, scored):
        row = row[: cfg.natural_len]
        positions = [t for t in range(len(row)) if sc[t]]
        assert len(positions) == cfg.segment_len - 1
        for t in positions:
            prev = row[t - 1]
            earlier = [s for s in range(t - 1) if row[s] == prev]
            assert len(earlier) == 1, "the induction answer must be unambiguous"
            assert row[earlier[0] + 1] == row[t]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_determinism_and_tokenizer_layout(cfg):
    a = generate_dataset(16, cfg, seed=5)
    b = generate_dataset(16, cfg, seed=5)
    c = generate_dataset(16, cfg, seed=6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input_ids"], c["input_ids"])
    rng = np.random.default_rng(0)
    x, y = make_batch(cfg, 4, rng), make_batch(cfg, 4, rng)
    assert not torch.equal(x["input_ids"], y["input_ids"])  # a stream advances
    tok = WordTokenizer.from_vocabulary(cfg.vocab())
    assert tok.vocab_size == cfg.vocab_size
    row = a["input_ids"][0, : cfg.natural_len].tolist()
    assert tok.encode(tok.decode(row), strict=True) == row


def test_config_errors():
    with pytest.raises(ValueError, match="num_pairs"):
        MQARConfig(num_pairs=10, num_keys=5)
    with pytest.raises(ValueError, match="seq_len"):
        MQARConfig(num_pairs=2, num_queries=2, seq_len=5)
    with pytest.raises(ValueError, match="num_to_copy"):
        SelectiveCopyConfig(context_len=4, num_to_copy=5)
    with pytest.raises(ValueError, match="num_tokens"):
        InductionConfig(segment_len=8, num_tokens=8)
    with pytest.raises(ValueError, match="total_len"):
        InductionConfig(total_len=10, segment_len=8)
    with pytest.raises(TypeError, match="num_keys"):
        MQARConfig(num_keys="8")
    with pytest.raises(ValueError, match="batch_size"):
        make_batch(MQARConfig(), 0, 0)
    with pytest.raises(TypeError, match="cfg"):
        make_batch(object(), 2, 0)
