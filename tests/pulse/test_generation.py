import pytest
import torch

from factories import tiny_config
from pulse import PulseForCausalLM, TransformerConfig, TransformerForCausalLM
from pulse.generation import process_logits


def greedy_by_recomputation(model, ids, n):
    for _ in range(n):
        nxt = model(ids)["logits"][:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    return ids


@torch.no_grad()
def test_greedy_generate_equals_recomputation(variant_config):
    model = PulseForCausalLM(variant_config).eval()
    prompt = torch.randint(1, 40, (2, 11))
    out = model.generate(prompt, max_new_tokens=15)
    torch.testing.assert_close(out, greedy_by_recomputation(model, prompt, 15))


@torch.no_grad()
def test_transformer_greedy_generate_equals_recomputation():
    model = TransformerForCausalLM(TransformerConfig(vocab_size=40, hidden_size=32, num_layers=2, num_heads=4)).eval()
    prompt = torch.randint(1, 40, (2, 6))
    out = model.generate(prompt, max_new_tokens=8)
    torch.testing.assert_close(out, greedy_by_recomputation(model, prompt, 8))


@torch.no_grad()
def test_left_padded_batch_generates_like_single_prompts():
    model = PulseForCausalLM(tiny_config(use_memory=True)).eval()
    a, b = torch.randint(1, 40, (1, 9)), torch.randint(1, 40, (1, 5))
    ids = torch.cat([a, torch.cat([torch.zeros(1, 4, dtype=torch.long), b], 1)])
    mask = (torch.arange(9) >= torch.tensor([[0], [4]])).long()
    out = model.generate(ids, attention_mask=mask, max_new_tokens=6)
    torch.testing.assert_close(out[0, 9:], model.generate(a, max_new_tokens=6)[0, 9:])
    torch.testing.assert_close(out[1, 9:], model.generate(b, max_new_tokens=6)[0, 5:])


@torch.no_grad()
def test_sampling_keywords():
    model = PulseForCausalLM(tiny_config()).eval()
    prompt = torch.randint(1, 40, (3, 4))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    s1 = model.generate(prompt, max_new_tokens=10, temperature=0.8, top_k=5, generator=g1)
    s2 = model.generate(prompt, max_new_tokens=10, temperature=0.8, top_k=5, generator=g2)
    torch.testing.assert_close(s1, s2)
    assert model.generate(prompt, max_length=9).shape == (3, 9)
    # top_k=1 sampling is greedy
    torch.testing.assert_close(model.generate(prompt, max_new_tokens=5, do_sample=True, top_k=1),
                               model.generate(prompt, max_new_tokens=5))
    # top_p tiny keeps only the most likely token
    torch.testing.assert_close(model.generate(prompt, max_new_tokens=5, do_sample=True, top_p=1e-6),
                               model.generate(prompt, max_new_tokens=5))


def test_logit_processing_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5, 1.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = process_logits(logits, seen, temperature=2.0, top_k=None, top_p=None, repetition_penalty=4.0)
    torch.testing.assert_close(out, torch.tensor([[0.25, -2.0, 0.25, 0.5]]))
    out = process_logits(logits, None, temperature=1.0, top_k=2, top_p=None, repetition_penalty=1.0)
    assert torch.isinf(out[0, [1, 2]]).all() and torch.isfinite(out[0, [0, 3]]).all()
    p = logits.softmax(-1)[0]  # 0.56, 0.03, 0.13, 0.28: top_p 0.8 keeps the first and the fourth
    out = process_logits(logits, None, temperature=1.0, top_k=None, top_p=0.8, repetition_penalty=1.0)
    assert torch.isfinite(out[0]).tolist() == [True, False, False, True], p


@torch.no_grad()
def test_eos_stops_and_pads():
    model = PulseForCausalLM(tiny_config()).eval()
    prompt = torch.randint(1, 40, (2, 4))
    free = model.generate(prompt, max_new_tokens=6)
    eos = int(free[0, 5])  # the second generated token of row 0
    out = model.generate(prompt, max_new_tokens=6, eos_token_id=eos, pad_token_id=0)
    first = (out[0, 4:] == eos).nonzero()[0, 0].item()
    assert (out[0, 4 + first + 1:] == 0).all()


def test_generation_argument_errors():
    model = PulseForCausalLM(tiny_config()).eval()
    prompt = torch.randint(1, 40, (1, 4))
    for kwargs, name in [({"temperature": 0}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 1.5}, "top_p"),
                         ({"repetition_penalty": 0}, "repetition_penalty"), ({"max_length": 2}, "max_length"),
                         ({"max_length": 8, "max_new_tokens": 2}, "max_new_tokens")]:
        with pytest.raises(ValueError, match=name):
            model.generate(prompt, **kwargs)


@torch.no_grad()
def test_stream_yields_one_token_at_a_time_in_constant_state():
    model = PulseForCausalLM(tiny_config(use_recurrent_state=True)).eval()
    prompt = torch.randint(1, 40, (1, 4))
    stream = model.generate_stream(prompt, max_new_tokens=50)
    tokens = [next(stream) for _ in range(50)]
    assert all(t.shape == (1,) for t in tokens)
    torch.testing.assert_close(torch.cat(tokens), model.generate(prompt, max_new_tokens=50)[0, 4:])
