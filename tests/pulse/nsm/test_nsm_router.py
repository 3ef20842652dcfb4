"""TokenToStateRouter against an explicit loop; alive masking."""

import math

import pytest
import torch

from pulse.nsm import TokenToStateRouter


@pytest.mark.parametrize("num_heads,normalize", [(1, False), (2, True)])
def test_router_matches_loop_and_masks_dead_slots(num_heads, normalize):
    torch.manual_seed(0)
    r = TokenToStateRouter(6, 8, num_heads=num_heads, normalize=normalize)
    tokens, states = torch.randn(2, 5, 6), torch.randn(2, 4, 8)
    alive = torch.tensor([True, False, True, True])
    tmask = torch.ones(2, 5)
    tmask[1, 0] = 0
    routed, w = r(tokens, states, alive, tmask)
    assert routed.shape == (2, 4, 8) and w.shape == (2, 5, 4)
    hd = 8 // num_heads
    with torch.no_grad():
        for b in range(2):
            for t in range(5):
                q = r.q_proj.weight @ tokens[b, t]
                exp = torch.zeros(4)
                for h in range(num_heads):
                    sl = slice(h * hd, (h + 1) * hd)
                    sc = torch.tensor([float(q[sl] @ (r.k_proj.weight @ states[b, s])[sl]) / math.sqrt(hd)
                                       if alive[s] else -math.inf for s in range(4)])
                    exp += torch.softmax(sc, 0) / num_heads
                exp *= tmask[b, t]
                assert torch.allclose(w[b, t], exp, atol=1e-6)
            v = tokens[b] @ r.v_proj.weight.T + r.v_proj.bias
            exp_r = w[b].T @ v
            if normalize:
                exp_r = exp_r / (w[b].sum(0)[:, None] + r.eps)
            assert torch.allclose(routed[b], exp_r, atol=1e-5)
    assert torch.all(w[..., 1] == 0) and torch.all(routed[:, 1] == 0)
    assert torch.allclose(w[0].sum(-1), torch.ones(5)) and w[1, 0].sum() == 0
    # garbage in a dead slot changes nothing
    s2 = states.clone()
    s2[:, 1] = 1e5
    assert torch.allclose(r(tokens, s2, alive, tmask)[1], w)


def test_router_validation_and_hook():
    r = TokenToStateRouter(6, 8)
    seen = []
    r.hook_routing.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    r(torch.randn(1, 3, 6), torch.randn(1, 4, 8))
    assert seen == [(1, 3, 4)]
    with pytest.raises(ValueError, match="tokens"):
        r(torch.randn(1, 3, 5), torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match="alive"):
        r(torch.randn(1, 3, 6), torch.randn(1, 4, 8), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_heads"):
        TokenToStateRouter(6, 8, num_heads=3)
