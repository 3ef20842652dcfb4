import torch

from pulse.layers.recurrent import RecurrentState


def reference(layer: RecurrentState, x, mask=None):
    B, T, D = x.shape
    lam = layer.decay()
    r = torch.zeros(B, D)
    states = []
    for t in range(T):
        i = torch.sigmoid(layer.input_gate(x[:, t]))
        u = torch.tanh(layer.candidate(x[:, t]))
        new = lam * r + (1 - lam) * i * u
        if mask is not None:
            new = torch.where(mask[:, t, None].bool(), new, r)
        r = new
        states.append(r)
    return layer.out_proj(torch.stack(states, 1)), r


def test_matches_loop_pieces_and_padding():
    layer = RecurrentState(8)
    x = torch.randn(2, 41, 8)
    delta, st = layer(x)
    ref, r = reference(layer, x)
    torch.testing.assert_close(delta, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(st["r"], r, atol=1e-5, rtol=1e-5)
    a, s1 = layer(x[:, :17])
    b, _ = layer(x[:, 17:], state=s1)
    torch.testing.assert_close(torch.cat([a, b], 1), delta, atol=1e-5, rtol=1e-5)
    mask = torch.ones(2, 41)
    mask[0, :5] = 0
    mask[1, 20:23] = 0
    d_m, st_m = layer(x, mask)
    ref_m, r_m = reference(layer, x, mask)
    real = mask.bool()
    torch.testing.assert_close(d_m[real], ref_m[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(st_m["r"], r_m, atol=1e-5, rtol=1e-5)


def test_decay_is_in_range():
    lam = RecurrentState(16).decay()
    assert (lam > 0.5).all() and (lam < 1).all()
