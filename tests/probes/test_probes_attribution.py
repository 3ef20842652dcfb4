import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from probes.attribution import answer_index, completeness_error, slot_attributions, token_attributions
from pulse.hooks import HookPoint


def _f_baseline(model, ids, position, target):
    """F of the pad baseline computed independently: the model run on all-pad ids (nothing in
    the model reads the ids except through the embedding)."""
    with torch.no_grad():
        return model(torch.full_like(ids, model.config.pad_token_id or 0))["logits"][0, position, target].item()


def test_integrated_gradients_completeness(plain_model):
    """A model without key-value memory is smooth along the path: the attributions add up to
    the score change within 5%, and the reported error is the true one."""
    ids = torch.randint(1, 50, (1, 10))
    for baseline in ("pad", "zeros"):
        res = token_attributions(plain_model, ids, position=8, target=int(ids[0, 9]), baseline=baseline, n_steps=32)
        assert res.attributions.shape == (10,)
        if baseline == "pad":  # the zero path crosses RMSNorm's singular point at 0 (see module doc)
            assert res.converged and res.relative_error < 0.05, (baseline, res.errors)
            f_b = _f_baseline(plain_model, ids, 8, int(ids[0, 9]))
            assert abs(res.f_baseline - f_b) < 1e-4  # the baseline reported is the one integrated from
            with torch.no_grad():
                f_x = plain_model(ids)["logits"][0, 8, int(ids[0, 9])].item()
            assert abs(res.f_input - f_x) < 1e-5  # F(x) is the target logit
            own = abs(float(res.attributions.sum()) - (f_x - f_b)) / abs(f_x - f_b)
            assert abs(res.relative_error - own) < 1e-4
            assert res.errors[res.n_steps] == pytest.approx(res.relative_error, abs=1e-6)
        # causality: tokens after the target position get no attribution
        assert res.attributions[9].abs() < 1e-8
    assert len(res.frame()) == 10


class Steep(nn.Module):
    """F = 10 * tanh(sharpness * (sum(embeddings) - c)) at every position, target 0: a cliff at
    alpha = 0.37 along the straight path from the pad baseline (all-zero embeddings) to the input."""

    def __init__(self, ids: torch.Tensor, sharpness: float, vocab: int = 8, dim: int = 4) -> None:
        super().__init__()
        self.config = SimpleNamespace(pad_token_id=0)
        self.embed = nn.Embedding(vocab, dim)
        with torch.no_grad():
            self.embed.weight.uniform_(0.5, 1.0)
            self.embed.weight[0] = 0.0
        self.hook_embed = HookPoint(layout=("batch", "pos", "d_model"), kind="residual")
        self.sharpness, self.vocab = sharpness, vocab
        with torch.no_grad():
            self.c = 0.37 * float(self.embed(ids).sum())

    def forward(self, ids, attention_mask=None):
        x = self.hook_embed(self.embed(ids))
        f = 10 * torch.tanh(self.sharpness * (x.sum((1, 2)) - self.c))  # [B]
        logits = torch.zeros(*ids.shape, self.vocab)
        return {"logits": logits + f[:, None, None] * (torch.arange(self.vocab) == 0)}


def test_completeness_error_is_reported_and_large_with_too_few_steps():
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    model = Steep(ids, sharpness=3.0)
    f_x, f_b = 10 * torch.tanh(torch.tensor(3.0 * 0.63 * model.c / 0.37)).item(), 10 * torch.tanh(
        torch.tensor(-3.0 * model.c)).item()
    few = token_attributions(model, ids, position=5, target=0, n_steps=2, max_steps=2)
    assert few.f_input == pytest.approx(f_x, abs=1e-4) and few.f_baseline == pytest.approx(f_b, abs=1e-4)
    assert list(few.errors) == [2] and few.n_steps == 2  # a fixed number of steps: one try
    true_error = abs(float(few.attributions.sum()) - (f_x - f_b)) / abs(f_x - f_b)
    assert few.relative_error == pytest.approx(true_error, rel=1e-4)
    assert few.relative_error > 0.2 and not few.converged
    # adding steps: doubled from 2 until within 5%, every try kept, the earlier ones all >= 5%
    res = token_attributions(model, ids, position=5, target=0, n_steps=2, max_steps=512)
    assert res.converged and res.relative_error < 0.05
    assert res.n_steps > 2 and list(res.errors) == [2 * 2 ** i for i in range(len(res.errors))]
    assert all(e >= 0.05 for s, e in res.errors.items() if s < res.n_steps)
    assert float(res.attributions.sum()) == pytest.approx(f_x - f_b, rel=0.05)
    # a cap too low to get there: the error stays large and says so
    capped = token_attributions(model, ids, position=5, target=0, n_steps=2, max_steps=4)
    assert list(capped.errors) == [2, 4] and not capped.converged
    assert capped.relative_error == pytest.approx(min(capped.errors.values()))


def test_progress_reports_every_try_and_ends_at_the_total():
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    calls = []
    res = token_attributions(Steep(ids, sharpness=3.0), ids, position=5, target=0, n_steps=2, max_steps=512,
                             progress=lambda done, total, msg: calls.append((done, total, msg)))
    assert len(calls) == len(res.errors)  # one call per try
    total = calls[0][1]
    assert total == sum(2 * 2 ** i for i in range(9))  # the whole schedule 2, 4, ..., 512
    assert [d for d, _, _ in calls][:-1] == [sum(2 * 2 ** i for i in range(k + 1)) for k in range(len(calls) - 1)]
    assert calls[-1][0] == total  # stopping early (converged) fills the bar
    assert f"{res.n_steps} steps" in calls[-1][2] and "completeness error" in calls[-1][2]


def test_completeness_error_formula():
    assert completeness_error(9.0, 10.0, 0.0) == pytest.approx(0.1)
    assert completeness_error(-1.0, 2.0, 3.0) == pytest.approx(0.0)
    assert completeness_error(0.5, 1.0, 1.0) == pytest.approx(0.5)  # no change: the absolute gap


def test_default_target_is_the_answer():
    from pulse import PulseConfig, PulseForCausalLM
    from pulse.data import build_task

    task = build_task("story_world", train_on="answers")
    batch = task.make_split("test", n=1)
    L = int(batch["attention_mask"][0].sum())
    ids, mask = batch["input_ids"][0, :L], batch["answer_mask"][0, :L]
    q = task.tokenizer.token_to_id("?")
    answers = mask.nonzero().flatten().tolist()
    assert len(answers) >= 2 and all(int(ids[a - 1]) == q for a in answers)  # the token after each "?"
    assert answer_index(ids, mask) == answers[-1]
    assert answer_index(ids, question_token_id=q) == answers[-1]  # free text: after the last "?"
    assert answer_index(ids[: answers[-1]], question_token_id=q) == answers[-1]  # text ends with "?"
    assert answer_index(ids[: answers[0] - 1], question_token_id=q) == answers[0] - 2  # no "?": the last token
    assert answer_index(ids) == L - 1

    torch.manual_seed(0)
    model = PulseForCausalLM(PulseConfig(vocab_size=task.vocab_size, hidden_size=32, num_layers=1, num_heads=2,
                                         chunk_size=8, conv_kernel_size=3)).eval()
    a = answers[-1]
    res = token_attributions(model, ids[: a + 1], answer_mask=mask[: a + 1], n_steps=8, max_steps=8)
    assert (res.position, res.target) == (a - 1, int(ids[a]))
    explicit = token_attributions(model, ids[: a + 1], position=a - 1, target=int(ids[a]), n_steps=8, max_steps=8)
    assert torch.allclose(res.attributions, explicit.attributions)
    # the text ends with "?": the target is the model's top guess after it
    res = token_attributions(model, ids[:a], question_token_id=q, n_steps=8, max_steps=8)
    with torch.no_grad():
        guess = int(model(ids[None, :a])["logits"][0, a - 1].argmax())
    assert (res.position, res.target) == (a - 1, guess)


def test_slot_attribution(bank_model):
    ids = torch.randint(1, 50, (1, 20))
    res = slot_attributions(bank_model, ids, layer=1, position=18, target=int(ids[0, 19]), n_steps=32)
    assert res.attributions.shape == (20, 4)
    assert res.relative_error < 0.05
    assert res.attributions[19:].abs().max() < 1e-8  # the future gets nothing
    gxa = slot_attributions(bank_model, ids, layer=1, position=18, target=int(ids[0, 19]), method="grad_x_act")
    assert gxa.attributions.shape == (20, 4) and torch.isfinite(gxa.attributions).all()
    assert set(res.frame().columns) == {"layer", "pos", "slot", "attribution"}


# ------------------------------------------------------------------ the workbench page
PAGE = __import__("pathlib").Path(__file__).resolve().parents[2] / "workbench" / "pages" / "attribution.py"


@pytest.fixture(scope="module")
def page_checkpoints(tmp_path_factory):
    """One tiny story-world checkpoint folder, as the trainer writes it."""
    from pulse import PulseConfig, PulseForCausalLM
    from pulse.data import build_task
    from pulse.data.task_record import TASK_FILE, task_record_json

    root = tmp_path_factory.mktemp("attr_ckpts")
    folder = root / "tiny"
    kwargs = {"train_on": "answers", "p_object_question": 0.0}
    task = build_task("story_world", **kwargs)
    torch.manual_seed(0)
    PulseForCausalLM(PulseConfig(vocab_size=task.vocab_size, hidden_size=32, num_layers=2, num_heads=2, chunk_size=8,
                                 conv_kernel_size=3, use_memory=True, memory_capacity=8, memory_top_k=2,
                                 eos_token_id=task.tokenizer.eos_token_id)).save_pretrained(folder)
    task.tokenizer.save(folder)
    (folder / TASK_FILE).write_text(task_record_json("story_world", kwargs, task))
    (folder / "model_card.md").write_text("# tiny\n")
    return root


def _page(monkeypatch, root, steps=8, max_steps=8):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PULSE_WORKBENCH_CHECKPOINT_DIR", str(root))
    st.cache_data.clear()
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.session_state["attr_steps"] = steps
    at.session_state["attr_max_steps"] = max_steps
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def test_page_shows_the_completeness_error_of_the_answer(monkeypatch, page_checkpoints):
    from pulse import PulseForCausalLM
    from pulse.data.tokenizers import load_tokenizer

    at = _page(monkeypatch, page_checkpoints)
    metrics = {m.label: m.value for m in at.metric}
    ids = None
    for el in at.get("plotly_chart"):
        if el.proto.id.endswith("-attr_tokens"):
            ids = json.loads(el.proto.spec)["data"][0]["x"]
    assert ids is not None
    # the page starts on the answer: the last "?" of the example story, target the next token
    pos = at.slider(key="attr_pos").value
    text = at.session_state["_attr_ids"]
    q = load_tokenizer(page_checkpoints / "tiny").token_to_id("?")
    assert text[pos] == q and q not in text[pos + 1:-1] and ids[-1] == pos
    model = PulseForCausalLM.from_pretrained(page_checkpoints / "tiny").eval()
    res = token_attributions(model, torch.tensor([text[: pos + 1]]), position=pos, target=text[pos + 1],
                             n_steps=8, max_steps=8)
    assert metrics["Completeness error"] == f"{100 * res.relative_error:.1f}%"
    assert metrics["IG steps used"] == "8"
    red = [m.value for m in at.markdown if ":red[" in m.value]
    assert bool(red) == (res.relative_error >= 0.05) == any("Completeness error" in w.value for w in at.warning)


@pytest.mark.parametrize("error, red", [(0.31, True), (0.01, False)])
def test_page_marks_a_large_error_in_red(monkeypatch, page_checkpoints, error, red):
    import probes.attribution as attribution

    real = attribution.token_attributions

    def fake(*args, **kwargs):
        res = real(*args, **{**kwargs, "max_steps": kwargs["n_steps"]})
        change = res.f_input - res.f_baseline
        res.attributions_full = res.attributions_full * 0
        res.attributions_full[0, 0] = change * (1 + error)  # a sum off by `error` of the change
        res.attributions, res.n_steps, res.errors = res.attributions_full.sum(-1), 64, {8: 0.9, 64: error}
        return res

    monkeypatch.setattr(attribution, "token_attributions", fake)
    at = _page(monkeypatch, page_checkpoints)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Completeness error"] == f"{100 * error:.1f}%" and metrics["IG steps used"] == "64"
    assert any(":red[" in m.value and "31.0%" in m.value for m in at.markdown) == red
    assert any("Completeness error 31.0% after 64 steps" in w.value for w in at.warning) == red


def test_attribution_hooks_are_removed_after_an_error(bank_model):
    from probes.attribution._common import record, replaced_hook
    from pulse.hooks import hook_points

    def n_hooks():
        return sum(len(hp._forward_hooks) for _, hp in hook_points(bank_model))

    ids = torch.randint(1, 50, (1, 9))
    name = "blocks.0.states.hook_read_weights"
    with pytest.raises(RuntimeError, match="inside"):
        with replaced_hook(bank_model, name, {"value": None}):
            assert n_hooks() == 1
            raise RuntimeError("inside")
    assert n_hooks() == 0
    with pytest.raises(ValueError, match="not a hook site"):
        record(bank_model, "blocks.9.nope", ids, None)
    r = record(bank_model, name, ids, None)
    assert r.shape == (1, 9, 4) and n_hooks() == 0
