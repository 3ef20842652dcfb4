import pytest
import torch

from pulse import PulseForCausalLM, PulseState, hook_points

from factories import tiny_config


def make(config):
    torch.manual_seed(0)
    return PulseForCausalLM(config).eval()


@torch.no_grad()
def test_chunked_equals_recurrent_path(variant_config):
    model = make(variant_config)
    ids = torch.randint(1, 40, (2, 27))
    chunked = model(ids, attn_mode="chunked")["logits"]
    recurrent = model(ids, attn_mode="recurrent")["logits"]
    torch.testing.assert_close(chunked, recurrent, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_causality(variant_config):
    model = make(variant_config)
    ids = torch.randint(1, 40, (1, 30))
    base = model(ids)["logits"]
    for t in (0, 9, 17, 29):
        changed = ids.clone()
        changed[0, t] = (changed[0, t] % 39) + 1
        out = model(changed)["logits"]
        torch.testing.assert_close(out[:, :t], base[:, :t], atol=1e-6, rtol=1e-6)
        assert not torch.allclose(out[:, t:], base[:, t:])


@torch.no_grad()
def test_pieces_with_state_equal_one_call(variant_config):
    model = make(variant_config)
    ids = torch.randint(1, 40, (2, 35))
    full = model(ids)["logits"]
    for cuts in ([5, 13, 30], [1, 2, 3, 8, 16], list(range(1, 35))):
        state, pieces, start = None, [], 0
        for end in cuts + [35]:
            out = model(ids[:, start:end], state=state)
            pieces.append(out["logits"])
            state, start = out["state"], end
        torch.testing.assert_close(torch.cat(pieces, 1), full, atol=2e-5, rtol=1e-5)


@torch.no_grad()
def test_left_and_right_padding_invariance(variant_config):
    model = make(variant_config)
    a = torch.randint(1, 40, (1, 19))
    b = torch.randint(1, 40, (1, 12))
    ref_a, ref_b = model(a)["logits"][0], model(b)["logits"][0]
    pad = torch.zeros(1, 7, dtype=torch.long)
    # left padding
    ids = torch.cat([a, torch.cat([pad, b], 1)], 0)
    mask = torch.cat([torch.ones(1, 19), torch.cat([torch.zeros(1, 7), torch.ones(1, 12)], 1)], 0)
    out = model(ids, attention_mask=mask)["logits"]
    torch.testing.assert_close(out[0], ref_a, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, 7:], ref_b, atol=2e-5, rtol=1e-5)
    # right padding, and the carried state is the unpadded one
    ids = torch.cat([a, torch.cat([b, pad], 1)], 0)
    mask = torch.cat([torch.ones(1, 19), torch.cat([torch.ones(1, 12), torch.zeros(1, 7)], 1)], 0)
    out = model(ids, attention_mask=mask)
    torch.testing.assert_close(out["logits"][1, :12], ref_b, atol=2e-5, rtol=1e-5)
    nxt = torch.randint(1, 40, (1, 3))
    cont = model(nxt.expand(2, 3), state=out["state"])["logits"][1]
    ref_cont = model(torch.cat([b, nxt], 1))["logits"][0, 12:]
    torch.testing.assert_close(cont, ref_cont, atol=2e-5, rtol=1e-5)


def test_gradients_reach_every_parameter(variant_config):
    model = make(variant_config).train()
    ids = torch.randint(1, 40, (2, 40))
    out = model(ids, labels=ids)
    (out["loss"] + out["aux_loss"]).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_loss_is_next_token_cross_entropy():
    model = make(tiny_config())
    ids = torch.randint(1, 40, (2, 10))
    labels = ids.clone()
    labels[0, 4] = -100
    out = model(ids, labels=labels)
    logp = out["logits"].log_softmax(-1)
    terms = [-logp[b, t, labels[b, t + 1]] for b in range(2) for t in range(9) if labels[b, t + 1] != -100]
    torch.testing.assert_close(out["loss"], torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)


def test_state_size_does_not_grow():
    model = make(tiny_config(use_memory=True, use_recurrent_state=True))
    out = model(torch.randint(1, 40, (1, 10)))
    small = out["state"].num_bytes()
    out = model(torch.randint(1, 40, (1, 500)))
    assert out["state"].num_bytes() == small
    assert isinstance(out["state"].detach(), PulseState)


def test_bad_inputs_are_named():
    model = make(tiny_config())
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.tensor([[1, 2, 99]]))
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match="labels"):
        model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2]]))


def test_every_hook_point_is_called():
    model = make(tiny_config(use_memory=True, use_recurrent_state=True, num_states=4, state_dim=16,
                             state_num_heads=2))
    called = set()
    handles = [hp.register_forward_hook(lambda m, i, o, n=name: called.add(n)) for name, hp in hook_points(model)]
    model(torch.randint(1, 40, (1, 20)))
    for h in handles:
        h.remove()
    names = {name for name, _ in hook_points(model)}
    assert names - called == set()
    assert "blocks.1.attn.hook_decay" in names
