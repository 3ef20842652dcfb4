"""probes.usage: accuracy and loss with each mechanism off, on models where the truth is known."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from probe_models import BANK, make_model
from probes import intervene
from probes.usage import (USAGE_FILE, Mechanism, UsageCacheError, UsageReport, bootstrap_ratio, bootstrap_weights,
                          checkpoint_usage, find_mechanisms, measure_usage, read_usage_cache)
from pulse.hooks import HookPoint
from pulse.training.evaluation import evaluate_model

torch.set_num_threads(1)


# ------------------------------------------------------------------ a planted model
class _Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_out = HookPoint(layout=("batch", "pos", "d_model"), kind="output")


class _Memory(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_read = HookPoint(layout=("batch", "pos", "d_model"), kind="memory_read")


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.memory = _Conv(), _Memory()


class CopyModel(nn.Module):
    """Predicts that the next token equals the current one, through ``blocks.0.conv.hook_out``
    only; ``blocks.0.memory.hook_read`` carries a value that is multiplied by 0 (adds nothing)."""

    def __init__(self, vocab: int = 10):
        super().__init__()
        self.vocab = vocab
        self.blocks = nn.ModuleList([_Block()])
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None):
        onehot = torch.nn.functional.one_hot(input_ids, self.vocab).float()
        carried = self.blocks[0].conv.hook_out(10.0 * onehot)
        unused = self.blocks[0].memory.hook_read(torch.randn_like(onehot))
        return {"logits": carried + 0.0 * unused + self.dummy}


def copy_data(n: int, vocab: int = 10, T: int = 12, seed: int = 0) -> dict:
    """Rows whose answer (last position) repeats the token before it."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, T), generator=g)
    ids[:, -1] = ids[:, -2]
    answer = torch.zeros(n, T, dtype=torch.bool)
    answer[:, -1] = True
    return {"input_ids": ids, "labels": ids.masked_fill(~answer, -100),
            "attention_mask": torch.ones(n, T, dtype=torch.long), "answer_mask": answer}


def test_planted_model_usage_is_the_known_truth():
    data = copy_data(200)
    rep = measure_usage(CopyModel(), data, n_boot=300)
    df = rep.frame()
    assert list(df["mechanism"]) == ["intact", "memory", "convolution"]  # no bank, recurrent or attention
    intact, mem, conv = (df.iloc[i] for i in range(3))
    assert intact["accuracy"] == 1.0 and intact["n_examples"] == 200 and intact["n_answer_tokens"] == 200
    # the memory is multiplied by 0: switching it off changes nothing, exactly
    assert mem["accuracy"] == 1.0 and mem["delta_accuracy"] == 0 and mem["delta_acc_lo"] == mem["delta_acc_hi"] == 0
    assert mem["max_abs_logit_change"] == 0 and mem["answers_changed"] == 0
    # without the convolution all logits are 0: argmax is token 0, which is never the answer
    assert conv["accuracy"] == 0.0 and conv["delta_accuracy"] == -1.0 and conv["answers_changed"] == 1.0
    assert conv["loss"] == pytest.approx(np.log(10), abs=1e-5) and conv["delta_loss"] > 2
    assert conv["delta_acc_hi"] < 0 and conv["delta_loss_lo"] > 0
    assert "relies on its convolution" in rep.sentence("convolution")
    assert "does not need its memory" in rep.sentence("memory")
    assert rep.sentence("state_bank") == "This model has no state bank."
    assert rep.meta["chance_accuracy"] == pytest.approx(
        torch.bincount(data["input_ids"][:, -1]).max().item() / 200)


def test_mechanisms_listed_are_the_models_own():
    kinds = lambda m: {(x.mechanism, x.layer) for x in find_mechanisms(m)}  # noqa: E731
    plain = kinds(make_model())
    assert {k for k, _ in plain} == {"intact", "linear_attention", "convolution", "decay_short"}
    full = kinds(make_model(use_memory=True, use_recurrent_state=True, **BANK))
    assert {k for k, _ in full} == {"intact", "state_bank", "memory", "recurrent_state", "linear_attention",
                                    "convolution", "decay_short"}
    for k in ("state_bank", "memory", "recurrent_state", "convolution", "linear_attention"):
        assert {(k, "0"), (k, "1"), (k, "all")} <= full
    one = kinds(make_model(num_layers=1, **BANK))
    assert ("state_bank", "0") in one and ("state_bank", "all") not in one
    heads = [x for x in find_mechanisms(make_model()) if x.mechanism == "decay_short" and x.head is not None]
    assert sorted((x.layer, x.head) for x in heads) == [("0", 0), ("0", 1), ("1", 0), ("1", 1)]


@pytest.fixture(scope="module")
def story():
    from pulse.data import build_task

    task = build_task("story_world", train_on="answers")
    return task, task.make_split("test", 48)


@pytest.fixture(scope="module")
def story_model(story):
    task, _ = story
    return make_model(vocab_size=task.vocab_size, use_memory=True, use_recurrent_state=True, **BANK)


def test_every_row_is_what_evaluate_measures_under_that_intervention(story, story_model):
    task, data = story
    rep = measure_usage(story_model, data, n_boot=200, loss_name=task.loss_name, batch_size=20)
    mechs = {(m.mechanism, m.layer, m.head): m for m in find_mechanisms(story_model)}
    assert len(rep.rows) == len(mechs) == 1 + 5 * 3 + 4 + 1
    for r in rep.rows:
        m = mechs[(r["mechanism"], r["layer"], r["head"])]
        with intervene(story_model, *m.interventions):
            ref = evaluate_model(story_model, data, batch_size=16)
        assert r["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-12)
        assert r["loss"] == pytest.approx(ref["loss"], rel=1e-5)
        assert r["n_answer_tokens"] == ref["total"] and r["n_loss_tokens"] == ref["tokens"]
        if r["mechanism"] == "intact":
            assert r["delta_accuracy"] == 0 and r["max_abs_logit_change"] == 0
        else:  # every intervention really changes the forward pass
            assert r["max_abs_logit_change"] > 1e-4, r["label"]
        for k in ("acc", "loss"):
            name = "accuracy" if k == "acc" else "loss"
            assert r[f"{k}_lo"] <= r[name] + 1e-12 and r[name] <= r[f"{k}_hi"] + 1e-12
        assert r["delta_loss"] == pytest.approx(r["loss"] - rep.intact["loss"], abs=1e-9)
    assert rep.meta["loss_name"] == "answer-token loss" and rep.n == 48


def test_a_bank_that_adds_nothing_changes_nothing(story):
    task, data = story
    model = make_model(vocab_size=task.vocab_size, **BANK)
    with torch.no_grad():
        model.blocks[0].states.out_proj.weight.zero_()
        if model.blocks[0].states.out_proj.bias is not None:
            model.blocks[0].states.out_proj.bias.zero_()
    rep = measure_usage(model, data, n_boot=200)
    dead = rep.row("state_bank", 0)
    live = rep.row("state_bank", 1)
    assert dead["max_abs_logit_change"] < 1e-5 and abs(dead["delta_loss"]) < 1e-6 and dead["delta_accuracy"] == 0
    assert live["max_abs_logit_change"] > 1e-3 and live["delta_loss"] != 0
    conv = rep.row("convolution", "all")
    assert conv["delta_loss_lo"] > 0 or conv["delta_loss_hi"] < 0  # conv off matters (CI excludes 0)


def test_bootstrap_interval_contains_the_estimate_shrinks_with_n_and_covers():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 200, 800, 3200):
        x = (rng.random(n) < 0.7).astype(float)
        p, lo, hi = bootstrap_ratio(x, np.ones(n), n_boot=500, seed=1)
        assert lo <= p <= hi and p == x.mean()
        widths.append(hi - lo)
    assert all(a > b for a, b in zip(widths, widths[1:]))
    assert widths[0] / widths[-1] == pytest.approx(8, rel=0.35)  # ~ sqrt(n): 64x the data, 1/8 the width
    cover = 0
    for i in range(150):  # nominal 95%: the interval holds the true 0.7 about 95% of the time
        x = (np.random.default_rng(100 + i).random(120) < 0.7).astype(float)
        _, lo, hi = bootstrap_ratio(x, np.ones(120), n_boot=300, seed=i)
        cover += lo <= 0.7 <= hi
    assert 0.87 <= cover / 150 <= 0.995
    w = bootstrap_weights(10, 7, seed=3)
    assert w.shape == (7, 10) and (w.sum(1) == 10).all()


def test_usage_interval_shrinks_with_more_examples():
    model = CopyModel()
    widths = []
    for n in (60, 960):
        d = copy_data(n, seed=n)
        keep = torch.arange(n) % 3 == 0  # a third of the answers made wrong: accuracy ~ 2/3
        d["input_ids"][keep, -1] = (d["input_ids"][keep, -2] % 9) + 1
        d["labels"] = d["input_ids"].masked_fill(~d["answer_mask"], -100)
        r = measure_usage(model, d, n_boot=400).intact
        assert r["acc_lo"] <= r["accuracy"] <= r["acc_hi"]
        widths.append(r["acc_hi"] - r["acc_lo"])
    assert widths[1] < widths[0] / 2.5


def _folder(tmp_path, seed=0):
    from pulse.data import build_task
    from pulse.data.task_record import TASK_FILE, task_record_json

    kwargs = {"train_on": "answers", "p_object_question": 0.0}
    task = build_task("story_world", **kwargs)
    model = make_model(vocab_size=task.vocab_size, num_layers=1, use_memory=True)
    folder = tmp_path / f"ckpt{seed}"
    model.save_pretrained(folder)
    task.tokenizer.save(folder)
    (folder / TASK_FILE).write_text(task_record_json("story_world", kwargs, task))
    return folder, model


def test_checkpoint_cache_is_used_for_its_weights_and_refused_for_others(tmp_path):
    from pulse.io import weights_hash

    folder, model = _folder(tmp_path)
    rep = checkpoint_usage(folder, n=24, n_boot=100)
    assert rep.source == "computed" and (folder / USAGE_FILE).is_file()
    assert rep.meta["weights_hash"] == weights_hash(model) and rep.meta["split"] == "test"
    again = checkpoint_usage(folder, n=24, n_boot=100)
    assert again.source == "cache" and again.rows == rep.rows
    assert json.loads((folder / USAGE_FILE).read_text())["rows"] == rep.rows  # JSON round trip
    assert UsageReport.from_dict(rep.to_dict()).frame().equals(rep.frame())
    other = checkpoint_usage(folder, n=32, n_boot=100, write=False)  # other settings: measured afresh
    assert other.source == "computed" and other.n == 32
    # change the weights: the cache is stale and refused
    with torch.no_grad():
        model.blocks[0].conv.weight.mul_(-1)
    model.save_pretrained(folder)
    new_hash = weights_hash(model)
    assert new_hash != rep.meta["weights_hash"]
    with pytest.raises(UsageCacheError, match="stale"):
        read_usage_cache(folder, new_hash)
    fresh = checkpoint_usage(folder, n=24, n_boot=100)
    assert fresh.source == "computed" and fresh.meta["weights_hash"] == new_hash
    assert read_usage_cache(folder, new_hash).rows == fresh.rows
    (folder / USAGE_FILE).write_text('{"format": "something else"}')
    with pytest.raises(UsageCacheError):
        read_usage_cache(folder, new_hash)


def test_markdown_and_bad_input():
    rep = measure_usage(CopyModel(), copy_data(40), n_boot=50)
    md = rep.markdown()
    assert "n = 40 examples" in md and md.count("\n| ") == 1 + len(rep.rows)  # header + one line per row
    assert "| L0 convolution output := 0 | 0.000 [0.000, 0.000] | -1.000 [-1.000, -1.000] |" in md
    with pytest.raises(ValueError, match="answer_mask"):
        measure_usage(CopyModel(), {k: v for k, v in copy_data(4).items() if k != "answer_mask"})
    with pytest.raises(ValueError, match="at least 2"):
        measure_usage(CopyModel(), copy_data(1))
    with pytest.raises(ValueError, match="short_half_life"):
        find_mechanisms(CopyModel(), short_half_life=0)
    custom = [Mechanism("intact", "-", None, "intact")]
    assert [r["mechanism"] for r in measure_usage(CopyModel(), copy_data(4), mechanisms=custom).rows] == ["intact"]


def test_model_card_section_is_the_cached_table(tmp_path):
    import importlib.util
    from pathlib import Path

    from pulse.io import weights_hash

    script = Path(__file__).resolve().parents[2] / "scripts" / "write_model_card.py"
    spec = importlib.util.spec_from_file_location("write_model_card", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    folder, model = _folder(tmp_path)
    section = mod.usage_section(folder, n=20)
    cached = read_usage_cache(folder, weights_hash(model))
    assert cached is not None and cached.n == 20
    assert section.startswith("## What this model uses") and cached.markdown() in section
    for m in cached.mechanisms():
        assert cached.sentence(m) in section
