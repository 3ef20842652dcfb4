"""How PULSE scales with sequence length, measured side by side in one run.

For T = 512 ... 16384 (batch 1, fp32, this machine's CPU) it times, per model:
  * PULSE, chunked path (training/prompt form),
  * PULSE with the attention computed by the per-token recurrent loop,
  * the Transformer baseline of the same width and depth (scaled_dot_product_attention),
forward and forward+backward, and records peak memory. Peak memory is the resident-set
high-water mark of a fresh subprocess per measurement, minus its resident size just
before the measured call (CPU has no allocator counter to reset). Generation: time per new
token after contexts of 512 ... 16384 tokens (PULSE carries its recurrent state; the
Transformer its KV cache), all contexts in one process, interleaved.

The linear attention alone (T <= 4096), at 1 torch thread and at BENCH_THREADS: the chunked
path against the per-token recurrent loop on the same inputs, and the whole layer (with its
q/k/v projections) in each mode. BENCH_THREADS (default 2) sets torch's threads elsewhere.

    python benchmarks/scaling.py            # full run, ~10 minutes on 2 cores
    python benchmarks/scaling.py --quick    # T up to 2048, for a smoke test

Writes benchmarks/results/scaling_cpu.csv, a Markdown table (scaling_cpu.md) and a Plotly
HTML chart, and prints the goals with PASS/MISS.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = dict(vocab_size=256, hidden_size=256, num_layers=4, num_heads=4, chunk_size=64)


def build(kind: str):
    import torch

    from pulse import PulseConfig, PulseForCausalLM, TransformerConfig, TransformerForCausalLM

    torch.manual_seed(0)
    cfg = PulseConfig(**MODEL)
    if kind == "transformer":
        return TransformerForCausalLM(TransformerConfig.matching(cfg))
    return PulseForCausalLM(cfg)


def measure(kind: str, T: int, backward: bool, repeats: int) -> dict:
    """Runs inside a fresh subprocess: median seconds and peak RSS growth of one call."""
    import resource

    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model = build(kind)
    ids = torch.randint(0, MODEL["vocab_size"], (1, T))
    mode = {"pulse_chunked": "chunked", "pulse_loop": "recurrent"}.get(kind)
    kwargs = {"attn_mode": mode} if mode else {}

    def call():
        if backward:
            model.zero_grad(set_to_none=True)
            out = model(ids, labels=ids, **kwargs)
            out["loss"].backward()
        else:
            with torch.no_grad():
                model(ids, **kwargs)

    rss_before = _current_rss()
    call()  # warm-up, and the peak-memory measurement
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "peak_mb": max(peak, 0) / 2**20}


def measure_layer(T: int, repeats: int) -> dict:
    """The linear attention at the model's width and heads, timed alternately in one process.

    path: the attention computation itself on the same phi(q), phi(k), v and decays —
    ``chunked_linear_attention`` against the per-token loop of ``recurrent_linear_attention_step``
    (what the issue's "chunked path vs per-token loop" goal compares). layer: the whole
    LinearAttention layer in each mode, its q/k/v projections (identical work in both) included.
    """
    import torch

    from pulse.layers.linear_attention import (
        LinearAttention,
        chunked_linear_attention,
        feature_map,
        recurrent_linear_attention_step,
    )

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    torch.manual_seed(0)
    layer = LinearAttention(MODEL["hidden_size"], MODEL["num_heads"], MODEL["chunk_size"])
    x = torch.randn(1, T, MODEL["hidden_size"])
    H, d = layer.num_heads, layer.head_dim
    q, k = (feature_map(torch.randn(1, H, T, d)) for _ in range(2))
    v = torch.randn(1, H, T, d)
    log_decay = torch.log(layer.decay().detach()).view(1, H, 1).expand(1, H, T).contiguous()
    S0, z0 = torch.zeros(1, H, d, d), torch.zeros(1, H, d)

    def path_loop():
        S, z, outs = S0, z0, []
        for t in range(T):
            o, _, S, z = recurrent_linear_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], log_decay[:, :, t],
                                                         S, z, layer.eps)
            outs.append(o)
        return torch.stack(outs, dim=2)

    calls = {
        "path_chunked": lambda: chunked_linear_attention(q, k, v, log_decay, S0, z0, layer.chunk_size, layer.eps),
        "path_loop": path_loop,
        "layer_chunked": lambda: layer(x, mode="chunked"),
        "layer_loop": lambda: layer(x, mode="recurrent"),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        for call in calls.values():  # warm-up
            call()
        for _ in range(repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return {f"{name}_s": statistics.median(ts) for name, ts in times.items()}


def measure_generation(kind: str, contexts: list[int], rounds: int = 4, tokens_per_round: int = 32) -> dict:
    """Time per new token after each context length, all contexts in one process.

    Every context is prefilled once; then the rounds interleave the contexts (a round decodes
    ``tokens_per_round`` greedy tokens from each context in turn), so a slow patch of the
    machine touches every length alike. Returns the median ms per token for each context.
    """
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model = build(kind).eval()
    runs = {}
    with torch.no_grad():
        for T in contexts:
            ids = torch.randint(0, MODEL["vocab_size"], (1, T))
            out = model(ids)
            runs[T] = (out["state"], out["logits"][:, -1:].argmax(-1))
        times: dict[int, list[float]] = {T: [] for T in contexts}
        for _ in range(rounds):
            for T in contexts:
                state, nxt = runs[T]
                for _ in range(tokens_per_round):
                    start = time.perf_counter()
                    out = model(nxt, state=state)
                    times[T].append(time.perf_counter() - start)
                    state, nxt = out["state"], out["logits"][:, -1:].argmax(-1)
                runs[T] = (state, nxt)
    return {str(T): 1000 * statistics.median(ts) for T, ts in times.items()}


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_child(args: list[str], threads: int | None = None) -> dict:
    env = dict(os.environ)
    if threads is not None:
        env["BENCH_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"measurement {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child:
        kind, what = args.child[0], args.child[1]
        if what == "gen":  # every context at once: "512,1024,..."
            print(json.dumps(measure_generation(kind, [int(c) for c in args.child[2].split(",")])))
            return
        T = int(args.child[2])
        if what == "layer":
            print(json.dumps(measure_layer(T, repeats=int(args.child[3]))))
        else:
            print(json.dumps(measure(kind, T, what == "fwdbwd", repeats=int(args.child[3]))))
        return

    from tqdm import tqdm

    lengths = [512, 1024, 2048] if args.quick else [512, 1024, 2048, 4096, 8192, 16384]
    loop_max = 2048 if args.quick else 4096
    threads = int(os.environ.get("BENCH_THREADS", "2"))
    jobs = []  # (model, measure, T, repeats, torch threads)
    for T in lengths:
        repeats = 3 if T <= 8192 else 1
        for what in ("fwd", "fwdbwd"):
            jobs.append(("pulse_chunked", what, T, repeats, threads))
            jobs.append(("transformer", what, T, repeats, threads))
            if T <= loop_max and (what == "fwd" or T <= 2048):
                jobs.append(("pulse_loop", what, T, 1, threads))
        if T <= loop_max:
            for n in sorted({1, threads}):
                jobs.append(("linear_attention", "layer", T, 5, n))
    for kind in ("pulse_chunked", "transformer"):
        jobs.append((kind, "gen", ",".join(map(str, lengths)), 0, threads))

    rows = []
    for kind, what, T, repeats, n in tqdm(jobs, desc="measuring", unit="run"):
        result = run_child([kind, what, str(T), str(repeats)], threads=n)
        if what == "gen":  # one child measured every context
            rows += [{"model": kind, "measure": what, "T": int(c), "threads": n, "ms_per_token": ms}
                     for c, ms in result.items()]
        else:
            rows.append({"model": kind, "measure": what, "T": T, "threads": n, **result})

    RESULTS.mkdir(parents=True, exist_ok=True)
    fields = ["model", "measure", "T", "threads", "seconds", "peak_mb", "ms_per_token",
              "path_chunked_s", "path_loop_s", "layer_chunked_s", "layer_loop_s"]
    with open(RESULTS / "scaling_cpu.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)

    def get(kind, what, T, key="seconds", n=threads):
        for r in rows:
            if (r["model"], r["measure"], r["T"], r["threads"]) == (kind, what, T, n):
                return r.get(key)
        return None

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch threads={threads} (the LinearAttention table also at 1); "
        f"model {MODEL}, batch 1, fp32.",
        "",
        "| T | PULSE fwd s | loop fwd s | Transformer fwd s | PULSE fwd+bwd s | Transformer fwd+bwd s "
        "| PULSE peak MB (fwd+bwd) | Transformer peak MB (fwd+bwd) | PULSE gen ms/token | Transformer gen ms/token |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v, p=3: "—" if v is None else f"{v:.{p}f}"  # noqa: E731
    for T in lengths:
        lines.append(
            f"| {T} | {fmt(get('pulse_chunked', 'fwd', T))} | {fmt(get('pulse_loop', 'fwd', T))} "
            f"| {fmt(get('transformer', 'fwd', T))} | {fmt(get('pulse_chunked', 'fwdbwd', T))} "
            f"| {fmt(get('transformer', 'fwdbwd', T))} | {fmt(get('pulse_chunked', 'fwdbwd', T, 'peak_mb'), 0)} "
            f"| {fmt(get('transformer', 'fwdbwd', T, 'peak_mb'), 0)} "
            f"| {fmt(get('pulse_chunked', 'gen', T, 'ms_per_token'), 2)} | {fmt(get('transformer', 'gen', T, 'ms_per_token'), 2)} |"
        )
    goals = []
    t_small, t_big = (1024, 8192) if not args.quick else (512, 2048)
    ratio = get("pulse_chunked", "fwd", t_big) / get("pulse_chunked", "fwd", t_small)
    goals.append(("fwd time(%d)/time(%d) <= %d" % (t_big, t_small, t_big // t_small + 2), ratio, ratio <= t_big / t_small + 2))
    ratio = get("pulse_chunked", "fwdbwd", t_big) / get("pulse_chunked", "fwdbwd", t_small)
    goals.append(("fwd+bwd time(%d)/time(%d) <= %d" % (t_big, t_small, t_big // t_small + 2), ratio, ratio <= t_big / t_small + 2))
    for n in sorted({1, threads}, reverse=True):
        path = get("linear_attention", "layer", loop_max, "path_loop_s", n) / get("linear_attention", "layer", loop_max, "path_chunked_s", n)
        goals.append((f"linear attention: chunked path >= 20x the per-token loop at T={loop_max}, {n} thread(s)",
                      path, path >= 20))
        layer = get("linear_attention", "layer", loop_max, "layer_loop_s", n) / get("linear_attention", "layer", loop_max, "layer_chunked_s", n)
        goals.append((f"LinearAttention layer incl. q/k/v projections, chunked vs loop at T={loop_max}, {n} thread(s), "
                       "for reference", layer, None))
    speedup = get("pulse_loop", "fwd", loop_max) / get("pulse_chunked", "fwd", loop_max)
    goals.append((f"whole model (attention by loop, rest equal): chunked vs loop at T={loop_max}, for reference",
                  speedup, None))
    gen = [get("pulse_chunked", "gen", T, "ms_per_token") for T in lengths]
    flat = max(gen) / min(gen)
    goals.append((f"generation ms/token max/min over T={lengths[0]}..{lengths[-1]} <= 1.5", flat, flat <= 1.5))
    lines += ["", "| T | threads | chunked path s | per-token loop s | path speed-up | layer chunked s | layer loop s "
              "| layer speed-up |", "|---|---|---|---|---|---|---|---|"]
    for T in lengths:
        for n in sorted({1, threads}):
            r = {key: get("linear_attention", "layer", T, key, n)
                 for key in ("path_chunked_s", "path_loop_s", "layer_chunked_s", "layer_loop_s")}
            if r["path_chunked_s"] is not None:
                lines.append(
                    f"| {T} | {n} | {r['path_chunked_s']:.4f} | {r['path_loop_s']:.3f} "
                    f"| {r['path_loop_s'] / r['path_chunked_s']:.1f}x | {r['layer_chunked_s']:.4f} "
                    f"| {r['layer_loop_s']:.3f} | {r['layer_loop_s'] / r['layer_chunked_s']:.1f}x |"
                )
    lines += ["", "| goal | measured | verdict |", "|---|---|---|"]
    verdict = {True: "PASS", False: "MISS", None: "—"}
    lines += [f"| {name} | {value:.2f} | {verdict[ok]} |" for name, value, ok in goals]
    table = "\n".join(lines)
    (RESULTS / "scaling_cpu.md").write_text(table + "\n")
    _plot(rows, lengths, threads)
    print(table)


def _plot(rows, lengths, threads) -> None:
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        return
    fig = make_subplots(rows=1, cols=3, subplot_titles=("forward + backward time (s)", "peak memory, fwd+bwd (MB)",
                                                        "generation time per token (ms)"))
    for kind, color in (("pulse_chunked", "#1f77b4"), ("pulse_loop", "#ff7f0e"), ("transformer", "#2ca02c")):
        for col, what, key in ((1, "fwdbwd", "seconds"), (2, "fwdbwd", "peak_mb"), (3, "gen", "ms_per_token")):
            pts = [(r["T"], r[key]) for r in rows if r["model"] == kind and r["measure"] == what
                   and r["threads"] == threads and r.get(key) is not None]
            if pts:
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], name=kind, legendgroup=kind,
                                         showlegend=col == 1, line=dict(color=color)), row=1, col=col)
    fig.update_xaxes(type="log", title="T")
    fig.update_yaxes(type="log")
    fig.write_html(RESULTS / "scaling_cpu.html", include_plotlyjs="cdn")


if __name__ == "__main__":
    main()
