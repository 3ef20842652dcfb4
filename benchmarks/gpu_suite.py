"""PULSE vs a FlashAttention (SDPA) Transformer vs the no-mixing ceiling, on one GPU, one run.

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_suite.py --out $OUT        # on the GPU machine
    python benchmarks/gpu_suite.py --smoke --device cpu --out /tmp/x      # wiring check on a CPU

Sections, each with its own time budget (the whole run is planned for ~8 minutes on an H200):
  0. device, measured ceilings (device-to-device copy bandwidth, bf16 matmul rate)
  1. exactness on the GPU: fused Triton kernel vs the PyTorch chunked path, forward and all
     gradients, in true fp32 ("ieee") and tf32
  2. the linear-attention layer alone: time, achieved FLOP/s and bytes/s as fractions of the
     measured ceilings
  3. training step (forward + backward + AdamW), bf16 autocast, equal tokens per step
     (default 65,536) at T = 1k, 4k, 16k, 64k; eager and torch.compile'd (each block compiled;
     identical blocks share one compiled graph); tokens/s and peak memory
  4. prompt processing (forward, no grad, batch 1) at 1k ... 32k
  5. generation: per-token latency and tokens/s vs context 1k ... 32k at batch 1 and 32
     (PULSE: its fixed-size recurrent state, eager and CUDA-graphed; Transformer: its KV cache,
     filled with random keys/values of the right length, so no prefill is needed)

Writes gpu_results.csv, gpu_throughput.md (table with device and date), gpu_throughput.png and
gpu_suite.log into --out; copy them to benchmarks/results/ (as gpu_*).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import gc
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pulse import PulseConfig, PulseForCausalLM, TransformerConfig, TransformerForCausalLM  # noqa: E402
from pulse.model import PulseModel, causal_lm_loss  # noqa: E402

ROWS: list[dict] = []
LOG = None


def log(*a):
    msg = " ".join(str(x) for x in a)
    print(msg, flush=True)
    if LOG:
        LOG.write(msg + "\n")
        LOG.flush()


def record(**row):
    ROWS.append(row)
    log("ROW", json.dumps(row))


class Budget:
    def __init__(self, seconds: float):
        self.end = time.time() + seconds

    def left(self) -> float:
        return self.end - time.time()

    def ok(self, need: float = 0.0) -> bool:
        return self.left() > need


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, dev, warmup=2, iters=5) -> float:
    """Median seconds of fn() (device events on CUDA)."""
    for _ in range(warmup):
        fn()
    sync(dev)
    times = []
    for _ in range(iters):
        if dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# --------------------------------------------------------------------------- models
def configs(smoke: bool) -> PulseConfig:
    if smoke:
        return PulseConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, chunk_size=16)
    # ~125M-class: width 768, depth 12, 12 heads (head dim 64), vocab 32000
    return PulseConfig(vocab_size=32000, hidden_size=768, num_layers=12, num_heads=12, chunk_size=64)


def build(kind: str, cfg: PulseConfig, dev) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind.startswith("pulse"):
        m = PulseForCausalLM(cfg)
    elif kind == "transformer":
        m = TransformerForCausalLM(TransformerConfig.matching(cfg))
    elif kind == "none":
        m = TransformerForCausalLM(TransformerConfig.matching(cfg, mixer="none"))
    else:
        raise ValueError(kind)
    return m.to(dev)


def hidden_states(model, ids):
    """Final hidden states [B, T, D] without the [B, T, V] logits."""
    if isinstance(model, PulseForCausalLM):
        return PulseModel.forward(model, ids)["last_hidden_state"]
    x = model.embed_tokens(ids)
    for block in model.blocks:
        x, _ = block(x)
    return model.norm(x)


def chunked_ce(hidden, weight, labels, chunk_tokens=8192):
    """Next-token cross entropy over [B, T, D] hidden states, the logits made chunk by chunk
    (and remade in the backward through checkpointing), so [B*T, V] never lives at once."""
    from torch.utils.checkpoint import checkpoint

    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    y = labels[:, 1:].reshape(-1)
    total = h.new_zeros((), dtype=torch.float32)

    def piece(hc, yc):
        return torch.nn.functional.cross_entropy((hc @ weight.t()).float(), yc, reduction="sum")

    for s in range(0, h.shape[0], chunk_tokens):
        total = total + checkpoint(piece, h[s:s + chunk_tokens], y[s:s + chunk_tokens], use_reentrant=False)
    return total / y.numel()


def out_weight(model):
    return model.output_weight() if isinstance(model, PulseForCausalLM) else model.embed_tokens.weight


# --------------------------------------------------------------------------- sections
def section_ceilings(dev, smoke):
    if dev.type != "cuda":
        return {"copy_TBps": float("nan"), "bf16_TFLOPs": float("nan"), "tf32_TFLOPs": float("nan")}
    n = 1 << (24 if smoke else 30)
    a = torch.empty(n, dtype=torch.uint8, device=dev).random_()
    b = torch.empty_like(a)
    t = timeit(lambda: b.copy_(a), dev, 3, 10)
    copy = 2 * n / t / 1e12
    del a, b
    s = 2048 if smoke else 8192
    x = torch.randn(s, s, device=dev, dtype=torch.bfloat16)
    y = torch.randn(s, s, device=dev, dtype=torch.bfloat16)
    t = timeit(lambda: x @ y, dev, 3, 10)
    bf16 = 2 * s ** 3 / t / 1e12
    x, y = x.float(), y.float()
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    t = timeit(lambda: x @ y, dev, 3, 10)
    torch.backends.cuda.matmul.allow_tf32 = old
    tf32 = 2 * s ** 3 / t / 1e12
    del x, y
    free()
    res = {"copy_TBps": copy, "bf16_TFLOPs": bf16, "tf32_TFLOPs": tf32}
    log("ceilings", res)
    for k, v in res.items():
        record(section="ceiling", metric=k, value=v)
    return res


def section_exactness(dev, smoke) -> bool:
    from pulse.kernels import linear_attention_backend
    from pulse.layers.linear_attention import chunked_linear_attention, feature_map

    if dev.type != "cuda":
        log("exactness: skipped (no CUDA)")
        return False
    from pulse.kernels.linear_attention_triton import fused_linear_attention

    ok = True
    for (B, H, T, d, pad) in [(2, 12, 1000, 64, True), (1, 12, 8192 if not smoke else 512, 64, False)]:
        g = torch.Generator(device="cpu").manual_seed(T)
        q = feature_map(torch.randn(B, H, T, d, generator=g)).to(dev)
        k = feature_map(torch.randn(B, H, T, d, generator=g)).to(dev)
        v = torch.randn(B, H, T, d, generator=g).to(dev)
        ld = torch.log(torch.linspace(0.8, 0.999, H)).view(1, H, 1).expand(B, H, T).clone().to(dev)
        if pad:
            real = torch.ones(B, T, device=dev)
            real[0, :100] = 0
            k, ld = k * real[:, None, :, None], ld * real[:, None, :]
        S0 = (torch.randn(B, H, d, d, generator=g) * 0.1).to(dev)
        z0 = torch.rand(B, H, d, generator=g).to(dev)
        x = [t.requires_grad_() for t in (q, k, v, ld, S0, z0)]
        ref = chunked_linear_attention(*x, 64, 1e-6)
        w = [torch.randn_like(t) for t in ref]
        gref = torch.autograd.grad(sum((a * b).sum() for a, b in zip(w, ref)), x)
        for prec, tol in (("ieee", 1e-5), ("tf32", 5e-3)):
            out = fused_linear_attention(*x, 1e-6, 64, precision=prec)
            gf = torch.autograd.grad(sum((a * b).sum() for a, b in zip(w, out)), x)
            errs = {}
            for name, a, b in zip(("out", "den", "S_T", "z_T"), out, ref):
                errs[name] = ((a - b).norm() / b.norm()).item()
            for name, a, b in zip(("dq", "dk", "dv", "dlog_decay", "dS0", "dz0"), gf, gref):
                errs[name] = ((a - b).norm() / b.norm()).item()
            passed = all(math.isfinite(e) and e < (tol if n in ("out", "den", "S_T", "z_T") else 10 * tol)
                         for n, e in errs.items())
            ok &= passed
            log(f"exactness B={B} H={H} T={T} pad={pad} {prec}: {'PASS' if passed else 'FAIL'}",
                {k_: f"{v_:.2e}" for k_, v_ in errs.items()})
            record(section="exactness", T=T, precision=prec, passed=passed, max_rel=max(errs.values()))
    log("backend chosen on this device:", linear_attention_backend(q, v))
    free()
    return ok


def section_layer(dev, smoke, ceil):
    """The linear attention alone (q, k, v given): fused vs PyTorch path, fwd and fwd+bwd."""
    from pulse.layers.linear_attention import chunked_linear_attention, feature_map

    B, H, T, d = (1, 12, 65536, 64) if not smoke else (1, 4, 1024, 16)
    L = 64
    q = feature_map(torch.randn(B, H, T, d, device=dev)).requires_grad_()
    k = feature_map(torch.randn(B, H, T, d, device=dev)).requires_grad_()
    v = torch.randn(B, H, T, d, device=dev, requires_grad=True)
    ld = torch.full((B, H, T), math.log(0.99), device=dev, requires_grad=True)
    S0 = torch.zeros(B, H, d, d, device=dev)
    z0 = torch.zeros(B, H, d, device=dev)
    # FLOPs (matmul-only): forward intra 2 LxL products + state 2 products per chunk
    fwd_flops = B * H * T * (2 * L * d * 2 + 2 * d * d * 2 + 2 * d * d)  # QK^T, PV, q@S, K^T V, (recompute-free)
    bwd_flops = B * H * T * (5 * 2 * L * d + 6 * 2 * d * d) + fwd_flops  # + the state recompute
    fwd_bytes = B * H * T * 4 * (3 * d + 1 + d + 1)  # read q,k,v,ld, write out,den (fp32)
    bwd_bytes = B * H * T * 4 * (3 * d + 1 + d + 1 + d + 1) * 2 + B * H * T * 4 * (3 * d + 1)
    impls = {"torch": lambda: chunked_linear_attention(q, k, v, ld, S0, z0, L, 1e-6)}
    if dev.type == "cuda":
        from pulse.kernels.linear_attention_triton import fused_linear_attention

        impls["triton_tf32"] = lambda: fused_linear_attention(q, k, v, ld, S0, z0, 1e-6, L, "tf32")
        impls["triton_ieee"] = lambda: fused_linear_attention(q, k, v, ld, S0, z0, 1e-6, L, "ieee")
    go = torch.randn(B, H, T, d, device=dev)
    for name, fn in impls.items():
        try:
            free()
            with torch.no_grad():
                tf = timeit(fn, dev, 2, 5)

            def fb():
                out = fn()[0]
                torch.autograd.grad(out, (q, k, v, ld), go)

            tb = timeit(fb, dev, 1, 3)
            peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
            row = dict(section="layer", impl=name, B=B, H=H, T=T, d=d, fwd_ms=tf * 1e3, fwd_bwd_ms=tb * 1e3,
                       fwd_TFLOPs=fwd_flops / tf / 1e12, fwdbwd_TFLOPs=(fwd_flops + bwd_flops) / tb / 1e12,
                       fwd_TBps=fwd_bytes / tf / 1e12, fwdbwd_TBps=(fwd_bytes + bwd_bytes) / tb / 1e12,
                       peak_GiB=peak)
            row["frac_tf32_peak_fwdbwd"] = row["fwdbwd_TFLOPs"] / ceil["tf32_TFLOPs"] if ceil else float("nan")
            row["frac_copy_bw_fwdbwd"] = row["fwdbwd_TBps"] / ceil["copy_TBps"] if ceil else float("nan")
            record(**row)
        except Exception as e:  # keep going: a failure is a row
            record(section="layer", impl=name, error=repr(e)[:300])
    free()


def train_step_fn(model, ids, opt, chunked_loss, dev):
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=True)

    def step():
        with amp:
            if chunked_loss:
                loss = chunked_ce(hidden_states(model, ids), out_weight(model), ids)
            else:
                loss = model(ids, labels=ids)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def section_training(dev, smoke, budget, tokens, seqs, kinds, compiled_too, chunked_loss):
    for compiled in ([False, True] if compiled_too else [False]):
        for T in seqs:
            B = max(1, tokens // T)
            for kind in kinds:
                if not budget.ok(20):
                    record(section="train", kind=kind, T=T, compiled=compiled, error="skipped: time budget")
                    continue
                free()
                try:
                    os.environ["PULSE_LA_BACKEND"] = "torch" if kind == "pulse_torch" else "auto"
                    cfg = configs(smoke)
                    model = build(kind, cfg, dev)
                    if compiled:
                        for blk in model.blocks:
                            blk.compile()
                    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
                    ids = torch.randint(0, cfg.vocab_size, (B, T), device=dev)
                    step = train_step_fn(model, ids, opt, chunked_loss, dev)
                    t0 = time.time()
                    step()  # compile / warm-up
                    sync(dev)
                    first = time.time() - t0
                    if dev.type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    t = timeit(step, dev, 1, 3)
                    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
                    record(section="train", kind=kind, T=T, B=B, compiled=compiled, tokens_per_s=B * T / t,
                           step_ms=t * 1e3, peak_GiB=peak, first_step_s=first,
                           params_M=sum(p.numel() for p in model.parameters()) / 1e6)
                    del model, opt, ids, step
                except Exception as e:
                    record(section="train", kind=kind, T=T, B=B, compiled=compiled, error=repr(e)[:300])
                    traceback.print_exc()
                finally:
                    os.environ["PULSE_LA_BACKEND"] = "auto"
                    free()


@torch.no_grad()
def section_prompt(dev, smoke, budget, lengths, kinds):
    for kind in kinds:
        free()
        cfg = configs(smoke)
        model = build(kind, cfg, dev).to(torch.bfloat16).eval()
        for T in lengths:
            if not budget.ok(10):
                record(section="prompt", kind=kind, T=T, error="skipped: time budget")
                continue
            try:
                ids = torch.randint(0, cfg.vocab_size, (1, T), device=dev)
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                t = timeit(lambda: hidden_states(model, ids)[:, -1] @ out_weight(model).t(), dev, 1, 3)
                peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
                record(section="prompt", kind=kind, T=T, tokens_per_s=T / t, ms=t * 1e3, peak_GiB=peak)
            except Exception as e:
                record(section="prompt", kind=kind, T=T, error=repr(e)[:300])
        del model
        free()


def _fill_state(model, B, ctx, dev):
    """A state as it stands after ``ctx`` tokens: random values of the right shapes."""
    g = torch.Generator(device="cpu").manual_seed(0)
    if isinstance(model, PulseForCausalLM):
        ids = torch.randint(0, model.config.vocab_size, (B, 2), device=dev)
        st = model(ids)["state"]  # the dtypes a real prompt leaves behind
        for layer in st.layers:
            for sub in layer.values():
                for key, t in sub.items():
                    if t.is_floating_point():
                        sub[key] = (torch.rand(t.shape, generator=g) * 0.1).to(dev, t.dtype)
        return st
    cache = []
    for blk in model.blocks:
        a = blk.attn
        kv = (B, a.num_kv_heads, ctx, a.head_dim)
        cache.append({"k": torch.randn(kv, generator=g).to(dev, torch.bfloat16),
                      "v": torch.randn(kv, generator=g).to(dev, torch.bfloat16),
                      "mask": torch.ones(B, ctx, dtype=torch.bool, device=dev),
                      "pos": torch.full((B,), ctx, dtype=torch.long, device=dev)})
    return cache


@torch.no_grad()
def section_generation(dev, smoke, budget, contexts, batches, kinds, steps=16):
    for kind in kinds:
        free()
        cfg = configs(smoke)
        model = build(kind, cfg, dev).to(torch.bfloat16).eval()
        for B in batches:
            for ctx in contexts:
                if not budget.ok(10):
                    record(section="generate", kind=kind, B=B, context=ctx, error="skipped: time budget")
                    continue
                try:
                    free()
                    state0 = _fill_state(model, B, ctx, dev)
                    tok = torch.randint(0, cfg.vocab_size, (B, 1), device=dev)
                    base = torch.cuda.memory_allocated() if dev.type == "cuda" else 0

                    def decode(n=steps):
                        st, t = state0, tok
                        for _ in range(n):
                            out = model(t, state=st)
                            st = out["state"]
                            t = out["logits"][:, -1].argmax(-1, keepdim=True)
                        return t

                    sec = timeit(decode, dev, 1, 3) / steps
                    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
                    state_gib = base / 2**30
                    record(section="generate", kind=kind, mode="eager", B=B, context=ctx, ms_per_token=sec * 1e3,
                           tokens_per_s=B / sec, peak_GiB=peak, state_and_weights_GiB=state_gib)
                    if kind == "pulse" and dev.type == "cuda":
                        record(section="generate", kind=kind, mode="cuda_graph", B=B, context=ctx,
                               **_graphed_pulse_step(model, state0, tok, dev))
                    del state0
                except Exception as e:
                    record(section="generate", kind=kind, B=B, context=ctx, error=repr(e)[:300])
        del model
        free()


def _graphed_pulse_step(model, state0, tok, dev, steps=64):
    """One decode step captured as a CUDA graph (fixed-size state: static buffers), replayed."""
    from pulse.model import _map_nested

    static_state = _map_nested(lambda t: t.clone(), state0.layers)
    from pulse.model import PulseState

    static_tok = tok.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            model(static_tok, state=PulseState(static_state))
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model(static_tok, state=PulseState(static_state))
        nxt = out["logits"][:, -1].argmax(-1, keepdim=True)
    new_leaves, old_leaves = [], []
    _map_nested(lambda t: new_leaves.append(t) or t, out["state"].layers)
    _map_nested(lambda t: old_leaves.append(t) or t, static_state)

    def run(n=steps):
        for _ in range(n):
            graph.replay()
            for o, nw in zip(old_leaves, new_leaves):
                o.copy_(nw)
            static_tok.copy_(nxt)

    sec = timeit(run, dev, 1, 3) / steps
    return {"ms_per_token": sec * 1e3, "tokens_per_s": tok.shape[0] / sec}


# --------------------------------------------------------------------------- report
def write_outputs(out: Path, device_name: str, ceil):
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in ROWS for k in r})
    with open(out / "gpu_results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(ROWS)
    date = _dt.date.today().isoformat()
    lines = [f"# PULSE vs SDPA Transformer vs no-mixing ceiling — {device_name}, {date}", "",
             f"torch {torch.__version__}; bf16 autocast; width 768, 12 layers, 12 heads, vocab 32000; "
             f"measured ceilings: {json.dumps({k: round(v, 1) for k, v in (ceil or {}).items()})}", ""]
    tr = [r for r in ROWS if r.get("section") == "train" and "tokens_per_s" in r]
    for compiled in (False, True):
        sub = [r for r in tr if r["compiled"] == compiled]
        if not sub:
            continue
        lines += [f"## Training step ({'torch.compile' if compiled else 'eager'})", "",
                  "| T | batch | PULSE tok/s | vs Transformer | vs ceiling | PULSE GiB | Transformer GiB | ceiling GiB | PULSE (torch path) vs ceiling |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for T in sorted({r["T"] for r in sub}):
            by = {r["kind"]: r for r in sub if r["T"] == T}
            p, t, n, pt = by.get("pulse"), by.get("transformer"), by.get("none"), by.get("pulse_torch")
            f = lambda r, k: (f"{r[k]:,.0f}" if k == "tokens_per_s" else f"{r[k]:.1f}") if r else "—"  # noqa: E731
            ratio = lambda a, b: f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x" if a and b else "—"  # noqa: E731
            lines.append(f"| {T} | {(p or t or n or {}).get('B', '')} | {f(p, 'tokens_per_s')} | {ratio(p, t)} | "
                         f"{ratio(p, n)} | {f(p, 'peak_GiB')} | {f(t, 'peak_GiB')} | {f(n, 'peak_GiB')} | {ratio(pt, n)} |")
        lines.append("")
    pr = [r for r in ROWS if r.get("section") == "prompt" and "tokens_per_s" in r]
    if pr:
        lines += ["## Prompt processing (batch 1, forward)", "", "| T | PULSE tok/s | Transformer tok/s | ceiling tok/s |",
                  "|---|---|---|---|"]
        for T in sorted({r["T"] for r in pr}):
            by = {r["kind"]: r for r in pr if r["T"] == T}
            lines.append("| " + " | ".join([str(T)] + [f"{by[k]['tokens_per_s']:,.0f}" if k in by else "—"
                                                         for k in ("pulse", "transformer", "none")]) + " |")
        lines.append("")
    ge = [r for r in ROWS if r.get("section") == "generate" and "ms_per_token" in r]
    if ge:
        lines += ["## Generation (per new token)", "",
                  "| batch | context | PULSE ms/token (eager) | PULSE ms/token (CUDA graph) | Transformer ms/token | PULSE/Transformer tok/s (best) |",
                  "|---|---|---|---|---|---|"]
        for B in sorted({r["B"] for r in ge}):
            for ctx in sorted({r["context"] for r in ge if r["B"] == B}):
                sel = [r for r in ge if r["B"] == B and r["context"] == ctx]
                pe = next((r for r in sel if r["kind"] == "pulse" and r.get("mode") == "eager"), None)
                pg = next((r for r in sel if r["kind"] == "pulse" and r.get("mode") == "cuda_graph"), None)
                tt = next((r for r in sel if r["kind"] == "transformer"), None)
                best = min([r["ms_per_token"] for r in (pe, pg) if r] or [float("nan")])
                lines.append(f"| {B} | {ctx} | {pe['ms_per_token']:.2f} | " if pe else f"| {B} | {ctx} | — | ")
                lines[-1] += (f"{pg['ms_per_token']:.2f} | " if pg else "— | ") + (f"{tt['ms_per_token']:.2f} | " if tt else "— | ")
                lines[-1] += (f"{tt['ms_per_token'] / best:.1f}x |" if tt else "— |")
        lines.append("")
    la = [r for r in ROWS if r.get("section") == "layer" and "fwd_ms" in r]
    if la:
        lines += ["## Linear attention layer alone (B*T = 65,536, 12 heads, d 64)", "",
                  "| impl | fwd ms | fwd+bwd ms | TFLOP/s (fwd+bwd) | fraction of tf32 matmul peak | TB/s | fraction of copy bandwidth |",
                  "|---|---|---|---|---|---|---|"]
        for r in la:
            lines.append(f"| {r['impl']} | {r['fwd_ms']:.2f} | {r['fwd_bwd_ms']:.2f} | {r['fwdbwd_TFLOPs']:.1f} | "
                         f"{r['frac_tf32_peak_fwdbwd']:.2f} | {r['fwdbwd_TBps']:.2f} | {r['frac_copy_bw_fwdbwd']:.2f} |")
        lines.append("")
    errs = [r for r in ROWS if "error" in r]
    if errs:
        lines += ["## Not measured / errors", ""] + [f"- {r.get('section')} {r.get('kind', r.get('impl', ''))} "
                                                    f"T={r.get('T', r.get('context', ''))}: {r['error']}" for r in errs] + [""]
    (out / "gpu_throughput.md").write_text("\n".join(lines))
    log("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
        for kind, style in (("pulse", "o-"), ("transformer", "s-"), ("none", "^--"), ("pulse_torch", "x:")):
            for compiled in (False, True):
                sub = sorted([r for r in tr if r["kind"] == kind and r["compiled"] == compiled], key=lambda r: r["T"])
                if sub:
                    lab = f"{kind}{' (compiled)' if compiled else ''}"
                    axes[0].plot([r["T"] for r in sub], [r["tokens_per_s"] for r in sub], style, label=lab)
                    axes[1].plot([r["T"] for r in sub], [r["peak_GiB"] for r in sub], style, label=lab)
        for kind in ("pulse", "transformer"):
            for B in sorted({r["B"] for r in ge}):
                sub = sorted([r for r in ge if r["kind"] == kind and r["B"] == B and r.get("mode", "eager") == "eager"],
                             key=lambda r: r["context"])
                if sub:
                    axes[2].plot([r["context"] for r in sub], [r["ms_per_token"] for r in sub], "o-",
                                 label=f"{kind} batch {B}")
        titles = ("training tokens/s", "training peak memory (GiB)", "generation ms/token")
        for ax, title in zip(axes, titles):
            ax.set_xscale("log", base=2)
            ax.set_title(title)
            ax.legend(fontsize=7)
        axes[2].set_yscale("log")
        fig.suptitle(f"{device_name}, {date}")
        fig.tight_layout()
        fig.savefig(out / "gpu_throughput.png", dpi=110)
    except Exception as e:
        log("plot failed:", repr(e))


def main(argv=None):
    global LOG
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny model and sizes: a wiring check")
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--full-loss", action="store_true", help="materialise [B,T,V] logits (model's own loss)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    LOG = open(out / "gpu_suite.log", "a")
    dev = torch.device(a.device)
    budget = Budget(a.budget)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    log("device", name, "torch", torch.__version__)
    seqs = [1024, 4096, 16384, 65536] if not a.smoke else [64, 256]
    tokens = a.tokens if not a.smoke else 512
    ctxs = [1024, 4096, 16384, 32768] if not a.smoke else [64, 256]
    ceil = section_ceilings(dev, a.smoke)
    ok = section_exactness(dev, a.smoke)
    log("EXACTNESS", "PASS" if ok else ("FAIL" if dev.type == "cuda" else "n/a"))
    section_layer(dev, a.smoke, ceil)
    kinds = ["pulse", "transformer", "none"] + (["pulse_torch"] if dev.type == "cuda" else [])
    section_training(dev, a.smoke, Budget(min(budget.left() * 0.6, 300)), tokens, seqs, kinds,
                     not a.no_compile and dev.type == "cuda", not a.full_loss)
    section_generation(dev, a.smoke, Budget(min(budget.left() * 0.6, 120)), ctxs, [1, 32], ["pulse", "transformer"])
    section_prompt(dev, a.smoke, Budget(max(budget.left(), 5)), ctxs, ["pulse", "transformer", "none"])
    write_outputs(out, name, ceil)


if __name__ == "__main__":
    main()
