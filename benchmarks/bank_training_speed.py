"""Training steps per second of a bank-only story-world model: the state bank's exact path
(forced by a no-op hook), its fast path, and the fast path captured in a CUDA graph,
measured side by side in one run (ratios; absolute times only mean something on a GPU).

    python benchmarks/bank_training_speed.py [--batch 256] [--steps 40] [--chunk 4]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pulse import PulseConfig, PulseForCausalLM
from pulse.data import build_task
from pulse.train import _LossModule
from pulse.training.data import train_batch
from pulse.training.graph_step import GraphedTrainStep, make_capturable
from pulse.training.optim import build_optimizer


def _model(vocab: int, chunk: int, device) -> PulseForCausalLM:
    cfg = PulseConfig(vocab_size=vocab, hidden_size=64, num_layers=2, num_heads=4, chunk_size=chunk,
                      conv_kernel_size=8, use_linear_attention=False, num_states=16, state_dim=64,
                      state_write_mode="mass")
    torch.manual_seed(0)
    return PulseForCausalLM(cfg).to(device)


def _loss(model, b):
    return model(b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])["loss"]


def measure(mode: str, batches, vocab, chunk, device, steps: int) -> float:
    model = _model(vocab, chunk, device)
    opt = build_optimizer(model, 1e-3, 0.1, (0.9, 0.98), 1e-8)
    handles = []
    if mode == "exact":  # any hook on a bank sends it down the exact path
        handles = [bank.hook_read.register_forward_hook(lambda m, i, o: None) for _, bank in model.state_banks()]
    graph = None
    if mode == "graph":
        make_capturable(opt, device)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for b in batches[:3]:
                _loss(model, b).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        torch.cuda.current_stream().wait_stream(side)
        graph = GraphedTrainStep(_LossModule(model), model, opt, 1.0, batches[0])

    def step(b):
        if graph is not None:
            return graph(b)[0]
        loss = _loss(model, b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for b in batches[:3]:
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step(batches[i % len(batches)])
    float(loss.detach())
    dt = time.perf_counter() - t0
    for h in handles:
        h.remove()
    return steps / dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--chunk", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    task = build_task("story_world", p_object_question=0.5, train_on="answers")
    batches = [{k: v.to(device) for k, v in train_batch(task, s, batch_size=a.batch, seq_len=88).items()}
               for s in range(8)]
    modes = ["exact", "fast"] + (["graph"] if device.type == "cuda" else [])
    rates = {m: measure(m, batches, task.vocab_size, a.chunk, device, a.steps) for m in modes}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, batch {a.batch}, chunk {a.chunk}, seq_len 88, {a.steps} timed steps each")
    for m, r in rates.items():
        print(f"  {m:6s} {r:8.2f} steps/s   x{r / rates['exact']:.1f} vs exact")
    print(json.dumps({"device": name, "batch": a.batch, "chunk": a.chunk, "steps_per_s": rates}))


if __name__ == "__main__":
    main()
