"""Where a PULSE block's training time goes, next to a Transformer block, on one GPU.

Each piece of the block is timed alone, forward + backward (bf16 autocast, the gradient of a
random projection of its output), at the GPU suite's size (width 768, 12 heads, FFN 2048) and
65,536 tokens (batch 16 x 4096 by default), with CUDA events: median of timed repetitions after
warm-up. Peak memory is the allocator's high-water mark during one forward + backward, minus what
was allocated before it.

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_block_breakdown.py --out $OUT     # on the GPU
    python benchmarks/gpu_block_breakdown.py --smoke --device cpu               # wiring check

Writes block_breakdown.csv and block_breakdown.md into --out.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pulse import PulseConfig, TransformerConfig  # noqa: E402
from pulse.kernels import set_linear_attention_backend  # noqa: E402
from pulse.layers.block import UnifiedBlock  # noqa: E402
from pulse.layers.conv import LocalConv  # noqa: E402
from pulse.layers.ffn import SwiGLU  # noqa: E402
from pulse.layers.linear_attention import LinearAttention  # noqa: E402
from pulse.layers.norm import RMSNorm  # noqa: E402
from pulse.transformer import TransformerBlock  # noqa: E402


class FusionAndOutput(torch.nn.Module):
    """The PULSE block's gate and output projection around its two mixers (inputs given)."""

    def __init__(self, D: int):
        super().__init__()
        self.fusion_gate = torch.nn.Linear(D, D)
        self.mixer_out = torch.nn.Linear(D, D, bias=False)

    def forward(self, h, a, c):
        g = torch.sigmoid(self.fusion_gate(h))
        return self.mixer_out(g * a + (1 - g) * c)


def pieces(cfg: PulseConfig) -> dict[str, tuple[torch.nn.Module, int, str | None]]:
    """name -> (module, number of [B, T, D] inputs, linear-attention backend or None)."""
    D = cfg.hidden_size
    t = TransformerConfig.matching(cfg)
    return {
        "PULSE block (auto backend)": (UnifiedBlock(config=cfg), 1, None),
        "PULSE block (PyTorch path)": (UnifiedBlock(config=cfg), 1, "torch"),
        "Transformer block": (TransformerBlock(t), 1, None),
        "no-mixing block": (TransformerBlock(TransformerConfig.matching(cfg, mixer="none")), 1, None),
        "LinearAttention + q/k/v proj (auto)": (LinearAttention(D, cfg.num_heads, cfg.chunk_size), 1, None),
        "LinearAttention + q/k/v proj (PyTorch)": (LinearAttention(D, cfg.num_heads, cfg.chunk_size), 1, "torch"),
        "LocalConv": (LocalConv(D, cfg.conv_kernel_size), 1, None),
        "fusion gate + mixer_out": (FusionAndOutput(D), 3, None),
        "SwiGLU FFN": (SwiGLU(D, cfg.resolved_intermediate_size), 1, None),
        "RMSNorm": (RMSNorm(D, cfg.rms_norm_eps), 1, None),
        "SDPA attention + q/k/v/o proj": (TransformerBlock(t).attn, 1, None),
    }


def first_tensor(out):
    return out[0] if isinstance(out, tuple) else out


def measure(module, n_inputs, backend, B, T, D, dev, warmup, iters) -> dict:
    set_linear_attention_backend(backend)
    try:
        module = module.to(dev)
        xs = [torch.randn(B, T, D, device=dev, requires_grad=True) for _ in range(n_inputs)]
        probe = torch.randn(D, device=dev)

        def step():
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                out = first_tensor(module(*xs))
            (out.float() @ probe).sum().backward()

        for _ in range(warmup):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step()
            torch.cuda.synchronize()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**30
            times = []
            for _ in range(iters):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
        else:
            peak = float("nan")
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                step()
                times.append(1000 * (time.perf_counter() - t0))
        return {"ms": statistics.median(times), "peak_GiB": peak}
    finally:
        set_linear_attention_backend(None)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: a wiring check")
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    if a.smoke:
        cfg = PulseConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2, chunk_size=8)
        B, T, warmup, iters = 2, 32, 1, 2
    else:
        cfg = PulseConfig(vocab_size=32000, hidden_size=768, num_layers=12, num_heads=12, chunk_size=64)
        B, T, warmup, iters = a.batch, a.seq, 3, 10
    D = cfg.hidden_size
    rows = []
    torch.manual_seed(0)
    for name, (module, n_inputs, backend) in pieces(cfg).items():
        try:
            r = measure(module, n_inputs, backend, B, T, D, dev, warmup, iters)
            rows.append({"piece": name, **r})
        except Exception as e:  # a failure is a row, the rest still runs
            rows.append({"piece": name, "ms": float("nan"), "peak_GiB": float("nan"), "error": repr(e)[:200]})
        print(rows[-1], flush=True)
        del module
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "block_breakdown.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["piece", "ms", "peak_GiB", "error"])
        w.writeheader()
        w.writerows(rows)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    ref = next(r["ms"] for r in rows if r["piece"] == "PULSE block (auto backend)")
    lines = [f"# One block, forward + backward, {name}, {time.strftime('%Y-%m-%d')}", "",
             f"torch {torch.__version__}; width {D}, {cfg.num_heads} heads, FFN {cfg.resolved_intermediate_size}, "
             f"chunk {cfg.chunk_size}; batch {B} x {T} tokens; bf16 autocast; median of {iters} after {warmup} warm-up.",
             "", "| piece | ms | share of the PULSE block | peak GiB |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['piece']} | {r['ms']:.2f} | {r['ms'] / ref:.2f} | {r['peak_GiB']:.2f} |"
                     + (f" error: {r['error']}" if r.get("error") else ""))
    (out / "block_breakdown.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
