import pytest
import torch

from pulse.layers.conv import LocalConv


def reference_conv(conv: LocalConv, x: torch.Tensor) -> torch.Tensor:
    """Per-token loop: y_t = b + sum_j w[:, j] * x_{t-K+1+j}, zeros before the start."""
    B, T, D = x.shape
    K = conv.kernel_size
    w = conv.weight[:, 0]  # [D, K]
    out = torch.zeros(B, T, D)
    for t in range(T):
        acc = conv.bias.clone().expand(B, D).clone()
        for j in range(K):
            s = t - K + 1 + j
            if s >= 0:
                acc = acc + w[:, j] * x[:, s]
        out[:, t] = acc
    return out


@pytest.mark.parametrize("T", [13, 45])  # the windowed sum (<= 32 positions) and conv1d
def test_matches_loop_and_streams(T):
    conv = LocalConv(6, kernel_size=4)
    x = torch.randn(2, T, 6)
    y, _ = conv(x)
    torch.testing.assert_close(y, reference_conv(conv, x), atol=1e-6, rtol=1e-6)
    pieces, state = [], None
    for sl in (slice(0, 2), slice(2, 3), slice(3, 9), slice(9, T)):
        out, state = conv(x[:, sl], state=state)
        pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces, 1), y, atol=1e-6, rtol=1e-6)


def test_windowed_sum_and_conv1d_agree_with_gradients():
    conv = LocalConv(7, kernel_size=5).double()
    x = torch.randn(3, 20, 7, dtype=torch.float64, requires_grad=True)
    results = []
    for limit in (32, 0):  # 32: the windowed sum for these 20 positions; 0: always conv1d
        conv.windowed_sum_max_positions = limit
        y, _ = conv(x)
        grads = torch.autograd.grad((y * torch.arange(y.numel(), dtype=y.dtype).view_as(y)).sum(),
                                    (x, conv.weight, conv.bias))
        results.append((y, *grads))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("layout", ["left", "right", "inner"])
def test_padding_is_skipped(layout):
    conv = LocalConv(5, kernel_size=3)
    x = torch.randn(1, 8, 5)
    y_ref, st_ref = conv(x)
    pad = torch.randn(1, 3, 5)  # garbage in padding must not matter
    if layout == "left":
        xp, mask = torch.cat([pad, x], 1), torch.cat([torch.zeros(1, 3), torch.ones(1, 8)], 1)
    elif layout == "right":
        xp, mask = torch.cat([x, pad], 1), torch.cat([torch.ones(1, 8), torch.zeros(1, 3)], 1)
    else:
        xp = torch.cat([x[:, :4], pad, x[:, 4:]], 1)
        mask = torch.cat([torch.ones(1, 4), torch.zeros(1, 3), torch.ones(1, 4)], 1)
    y, st = conv(xp, mask)
    torch.testing.assert_close(y[mask.bool()], y_ref[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(st["conv"], st_ref["conv"])
