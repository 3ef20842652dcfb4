"""Train any registered causal LM (PULSE by default; ``model.type`` in the YAML names another
entry of :func:`pulse.pretrained.registered_models`, e.g. ``transformer`` or ``legacy_pulse``)
on a task from a YAML config.

    python -m pulse.train --config configs/story_world_pulse.yaml
    python -m pulse.train --config configs/tiny.yaml --steps 100 --out runs/x --set model.hidden_size=64
    python -m pulse.train --config configs/tiny.yaml --out runs/x --resume          # continue runs/x
    torchrun --nproc_per_node=2 -m pulse.train --config configs/tiny.yaml           # data parallel

What a run writes to ``--out`` (rank 0 only):

* ``config.json`` + ``model.safetensors`` (the final model, ``save_pretrained``),
  ``tokenizer.json``, ``task.json`` (task name and arguments), ``training.json`` (the whole
  validated run config) -- together a folder that ``python -m pulse.evaluate`` and
  ``pulse.load_pretrained`` read;
* ``metrics.csv`` (one row every ``log_every`` steps and at each evaluation) and
  ``metrics.json`` (summary, eval history, state-bank events, per-rank weight hashes);
* ``checkpoints/step-NNNNNNN/``: resumable checkpoints (see :mod:`pulse.training.checkpoint`).

Determinism: the model is initialised from ``train.seed``; the batch of rank ``r`` at step
``s`` is a pure function of ``(seed, s, r)`` (:func:`pulse.training.train_batch`); the
schedule is a function of the step; checkpoints hold weights, AdamW moments, RNG states and
state-bank events. So a run interrupted and resumed from a checkpoint reproduces the
uninterrupted run's losses and weights exactly (same device, same world size).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pulse.config import ConfigError
from pulse.data.task_record import TASK_FILE, task_record_json
from pulse.io import CheckpointError, atomic_write_text, weights_hash
from pulse.training import distributed as pdist
from pulse.training.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_old_checkpoints,
    save_checkpoint,
)
from pulse.training.config import RunConfig, load_run_config, parse_override
from pulse.training.data import train_batch
from pulse.training.evaluation import autocast_context, evaluate_model
from pulse.training.graph_step import GraphedTrainStep, make_capturable
from pulse.training.optim import CosineSchedule, build_optimizer

__all__ = ["train", "main", "build_run_task", "build_model", "TASK_FILE", "TRAINING_FILE"]

TRAINING_FILE = "training.json"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
CSV_FIELDS = ["step", "loss", "lm_loss", "aux_loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s",
              "active_states", "eval_loss", "eval_accuracy", "eval_sequence_accuracy"]
# settings that may change between an interrupted run and its resumption (no effect on the numbers)
_RESUME_FREE = {"train.device", "train.log_every", "train.keep_checkpoints", "train.eval_every",
                "train.save_every", "train.eval_batch_size", "train.num_workers", "train.max_time_s"}


def build_run_task(run: RunConfig, tokenizer_dir: str | os.PathLike | None = None):
    """``build_task(run.task_name, **run.task_kwargs)``; errors name the task section.
    ``tokenizer_dir``: for a text task, reuse the tokenizer saved there."""
    from pulse.data import build_task

    kwargs = dict(run.task_kwargs)
    if run.task_name == "text" and tokenizer_dir is not None:
        kwargs["tokenizer"] = str(tokenizer_dir)
    try:
        return build_task(run.task_name, **kwargs)
    except TypeError as e:
        raise ConfigError(f"task ({run.task_name}): {e}") from None
    except FileNotFoundError as e:
        raise ValueError(f"data: task {run.task_name!r}: {e}") from None
    except ValueError as e:
        raise ValueError(f"data: task {run.task_name!r}: {e}") from None


def build_model(run: RunConfig, task) -> nn.Module:
    """The run's model, built through the registry: ``model_class(run.model_type)(config)``
    (``model.type``: any registered name, default pulse; see :mod:`pulse.pretrained`), with
    the vocabulary and special-token ids of the task's tokenizer."""
    from pulse.pretrained import model_class

    tok = task.tokenizer
    special = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    cfg = run.model_config(task.vocab_size, special)
    return model_class(run.model_type)(cfg)


def _state_banks(model: nn.Module) -> list[tuple[int, nn.Module]]:
    return list(model.state_banks()) if hasattr(model, "state_banks") else []


def _active_states(model: nn.Module) -> int | None:
    banks = _state_banks(model)
    return sum(b.get_active_count() for _, b in banks) if banks else None


def _hash_int(h: str) -> int:
    return int(h[:15], 16)


class _LossModule(nn.Module):
    """What DistributedDataParallel wraps: batch in, (loss, lm_loss, aux_loss) out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels):
        out = self.model(input_ids, attention_mask=attention_mask, labels=labels)
        aux = out.get("aux_loss", out["loss"].new_zeros(()))
        return out["loss"], out["lm_loss"], aux


def _config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _config_diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)]
    return [] if a == b else [prefix]


def _state_bank_step(model: nn.Module, optimizer: torch.optim.Optimizer, run: RunConfig, step: int) -> list[dict]:
    """Prune / allocate state-bank slots after optimizer step ``step`` when scheduled."""
    tc = run.train
    banks = _state_banks(model)
    if not banks:
        return []
    events: list[dict] = []
    prune_now = step >= tc.prune_start and (step in tc.prune_at or (tc.prune_every and step % tc.prune_every == 0))
    alloc_now = step in tc.allocate_at or (tc.allocate_every and step % tc.allocate_every == 0)
    for layer, bank in banks:
        before = len(bank.events)
        if prune_now:
            if tc.prune_lowest:
                bank.prune_lowest(tc.prune_lowest, step=step)
            else:
                bank.prune_low_importance_states(tc.prune_threshold, step=step)
        if alloc_now:
            if bank.allocate_states(tc.allocate_n, step=step):
                _reset_slot_moments(optimizer, bank, bank.events[-1]["slots"])
        events += [{"layer": layer, **e} for e in bank.events[before:]]
    return events


def _reset_slot_moments(optimizer: torch.optim.Optimizer, bank: nn.Module, slots: list[int]) -> None:
    """Revived slots start afresh: zero their AdamW moments."""
    for p in (bank.slot_values, bank.importance_logits):
        st = optimizer.state.get(p)
        if st:
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    st[key][slots] = 0.0


class _StepBatches(torch.utils.data.Dataset):
    """Map-style view of the training stream: item ``step`` is the batch of this rank at
    that step (a pure function, so worker processes produce exactly the same batches)."""

    def __init__(self, task, tc, info: pdist.DistInfo) -> None:
        self.task, self.tc, self.rank, self.world = task, tc, info.rank, info.world_size

    def __len__(self) -> int:
        return self.tc.steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        tc = self.tc
        return train_batch(self.task, int(step), self.rank, self.world, tc.batch_size, tc.seq_len, tc.seed)


def _batch_loader(task, tc, info: pdist.DistInfo, steps: range, workers: int, pin: bool):
    ds = _StepBatches(task, tc, info)
    if workers == 0:
        return (ds[s] for s in steps)
    return torch.utils.data.DataLoader(ds, batch_size=None, sampler=list(steps), num_workers=workers,
                                       prefetch_factor=8, pin_memory=pin)


def _read_csv_rows(path: Path, upto: int) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) <= upto]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}" if not math.isnan(v) else "nan"
    return str(v)


def train(run: RunConfig, out_dir: str | os.PathLike, resume: str | os.PathLike | bool | None = None,
          stop_after: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run training (see the module docstring). ``resume``: a checkpoint folder, or
    ``True`` for the latest one under ``out_dir`` (starting afresh if there is none).
    ``stop_after``: stop (with a checkpoint) once this many steps are done, as if
    interrupted; the schedule still spans ``train.steps``. Returns the metrics summary."""
    tc = run.train
    out = Path(out_dir)
    info = pdist.setup(tc.device)
    try:
        return _train(run, tc, out, info, resume, stop_after, progress)
    finally:
        pdist.teardown(info)


def _init_from(model: nn.Module, folder: Path) -> None:
    """Start from another run's weights: same architecture (config.json equal field by field)."""
    from pulse.io import WEIGHTS_NAME, load_weights

    if hasattr(model, "init_from_folder"):  # a family whose folder is not pulse's layout (e.g. Hugging Face)
        model.init_from_folder(folder)
        return
    cfg_path = folder / "config.json"
    if not (cfg_path.is_file() and (folder / WEIGHTS_NAME).is_file()):
        raise ConfigError(f"train.init_from: {folder} has no config.json and {WEIGHTS_NAME}")
    theirs = json.loads(cfg_path.read_text(encoding="utf-8"))
    ours = model.config.to_dict()
    diff = sorted(k for k in set(theirs) | set(ours) if k != "model_type" and theirs.get(k) != ours.get(k))
    if diff:
        raise ConfigError(f"train.init_from: {folder}'s model config differs from this run's in "
                          + ", ".join(f"{k} ({theirs.get(k)!r} vs {ours.get(k)!r})" for k in diff))
    load_weights(model, folder / WEIGHTS_NAME)


def _train(run, tc, out: Path, info: pdist.DistInfo, resume, stop_after, progress) -> dict[str, Any]:
    from tqdm.auto import tqdm

    device = info.device
    amp = tc.amp == "bf16" or (tc.amp == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    task = build_run_task(run)
    eval_data = task.make_split("eval", n=tc.eval_size, seq_len=tc.seq_len)
    torch.manual_seed(tc.seed)
    model = build_model(run, task)
    if tc.init_from and not resume:
        _init_from(model, Path(tc.init_from))
    model = model.to(device)
    initial_hash = weights_hash(model)
    param_names = [n for n, p in model.named_parameters() if p.requires_grad]
    optimizer = build_optimizer(model, tc.lr, tc.weight_decay, (tc.beta1, tc.beta2), tc.adam_eps)
    schedule = CosineSchedule(tc.lr, tc.warmup, tc.steps, tc.min_lr_ratio)

    # ---- files shared by the final model and every checkpoint
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        task.tokenizer.save(tmp)
        tok_files = {p.name: p.read_text(encoding="utf-8") for p in Path(tmp).iterdir() if p.is_file()}
    run_dict = run.to_dict()
    side_files = {
        **tok_files,
        TASK_FILE: task_record_json(run.task_name, run.task_kwargs, task),
        TRAINING_FILE: json.dumps(run_dict, indent=2, sort_keys=True) + "\n",
    }

    start_step, eval_history, elapsed_before, tokens_before = 0, [], 0.0, 0
    bank_events: list[dict] = []
    ckpt = None
    if resume:
        ckpt = Path(resume) if not isinstance(resume, bool) else latest_checkpoint(out)
    if ckpt is not None:
        saved_run_path = ckpt / TRAINING_FILE
        if saved_run_path.is_file():
            saved = json.loads(saved_run_path.read_text(encoding="utf-8"))
            diff = [d for d in _config_diff(saved, run_dict) if d not in _RESUME_FREE]
            if diff:
                raise ConfigError(f"--resume: the run config differs from the checkpoint's in {', '.join(diff)}")
        state = load_checkpoint(ckpt, model, optimizer, param_names)
        start_step = int(state["step"])
        eval_history = state.get("eval_history", [])
        elapsed_before = float(state.get("elapsed_s", 0.0))
        tokens_before = int(state.get("tokens_seen", 0))
        initial_hash = state.get("initial_weights_hash", initial_hash)
        bank_events = state.get("state_bank_events", [])
        by_layer = dict(_state_banks(model))
        for layer, bank in by_layer.items():
            bank.events = [{k: v for k, v in e.items() if k != "layer"} for e in bank_events if e["layer"] == layer]
        if int(state.get("world_size", info.world_size)) != info.world_size and info.is_main:
            print(f"pulse.train: warning: resuming with world size {info.world_size}, the checkpoint was "
                  f"written with {state['world_size']}: the data stream differs from the original run",
                  file=sys.stderr)

    wrapped: nn.Module = _LossModule(model)
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(wrapped, device_ids=[device.index] if device.type == "cuda" else None,
                      find_unused_parameters=(bool(_state_banks(model)) if tc.find_unused_parameters is None
                                              else tc.find_unused_parameters))

    csv_path, json_path = out / METRICS_CSV, out / METRICS_JSON
    rows: list[dict[str, str]] = []
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        rows = _read_csv_rows(csv_path, start_step) if start_step else []
        with csv_path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            w.writerows([{k: r.get(k, "") for k in CSV_FIELDS} for r in rows])

    def summary(step: int, elapsed: float, tokens: int, finished: bool) -> dict[str, Any]:
        last_eval = eval_history[-1] if eval_history else {}
        return {
            "task": run.task_name, "model_type": run.model_type, "step": step, "steps": tc.steps,
            "finished": finished, "world_size": info.world_size, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "amp": "bf16" if amp else "none", "wall_time_s": round(elapsed, 2), "tokens_seen": tokens,
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "final_train_loss": last_loss, "eval": last_eval, "eval_history": eval_history,
            "state_bank_events": bank_events, "active_states": _active_states(model),
            "initial_weights_hash": initial_hash, "weights_hash": weights_hash(model),
        }

    def save(step: int, elapsed: float, tokens: int) -> None:
        state = {"step": step, "world_size": info.world_size, "schedule": schedule.state_dict(),
                 "eval_history": eval_history, "state_bank_events": bank_events, "elapsed_s": elapsed,
                 "tokens_seen": tokens, "initial_weights_hash": initial_hash}
        save_checkpoint(checkpoint_path(out, step), model, optimizer, param_names, state, side_files)
        prune_old_checkpoints(out, tc.keep_checkpoints)

    graph, side = None, None
    if tc.cuda_graph:
        if device.type != "cuda" or info.world_size != 1:
            raise ConfigError("train.cuda_graph: needs one CUDA device and one process")
        make_capturable(optimizer, device)
        side = torch.cuda.Stream(device)

    model.train()
    t0 = time.perf_counter()
    last_log_t, last_log_tokens = t0, 0
    tokens = tokens_before
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    n_sum = 0
    last_loss: float | None = None
    grad_norm = torch.zeros((), device=device)
    end = tc.steps if stop_after is None else min(tc.steps, stop_after)
    bar = tqdm(total=tc.steps, initial=start_step, disable=not (progress and info.is_main),
               desc=f"{run.model_type}/{run.task_name}", dynamic_ncols=True, file=sys.stderr)
    step = start_step
    stopped_by_time = False
    workers = tc.num_workers if tc.num_workers is not None else (2 if device.type == "cuda" else 0)
    loader = _batch_loader(task, tc, info, range(start_step, end), workers, pin=device.type == "cuda")
    for step0, batch in zip(range(start_step, end), loader):
        step = step0 + 1
        lr = schedule.apply(optimizer, step0)
        tokens += int(batch["attention_mask"].sum()) * info.world_size
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if graph is None and tc.cuda_graph and step0 - start_step >= tc.graph_warmup:
            torch.cuda.current_stream().wait_stream(side)
            graph = GraphedTrainStep(wrapped, model, optimizer, tc.grad_clip, batch)
        if graph is not None:
            loss, lm_loss, aux, grad_norm = graph(batch)
        else:
            if side is not None:  # warm-up before a capture runs on a side stream
                side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                with autocast_context(device, amp):
                    loss, lm_loss, aux = wrapped(batch["input_ids"], batch["attention_mask"], batch["labels"])
                loss.backward()
                if tc.grad_clip > 0:
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if side is not None:
                torch.cuda.current_stream().wait_stream(side)
        sums += torch.stack([loss.detach(), lm_loss.detach(), aux.detach()]).double()
        n_sum += 1

        new_events = _state_bank_step(model, optimizer, run, step)
        bank_events += new_events

        if tc.max_time_s and step < end and time.perf_counter() - t0 > tc.max_time_s:
            stop = torch.tensor([1.0], device=device)
        else:
            stop = torch.tensor([0.0], device=device)
        if tc.max_time_s:  # every rank stops at the same step
            stopped_by_time = bool(pdist.all_reduce_mean(stop, info)[0] > 0)
        do_eval = (tc.eval_every and step % tc.eval_every == 0) or step == tc.steps or stopped_by_time
        if step % tc.log_every == 0 or do_eval or step == end:
            means = pdist.all_reduce_mean(sums / n_sum, info).tolist()
            gn = float(pdist.all_reduce_mean(grad_norm.detach().float().reshape(1), info)[0])
            sums.zero_()
            n_sum = 0
            now = time.perf_counter()
            tps = (tokens - tokens_before - last_log_tokens) / max(now - last_log_t, 1e-9)
            last_log_t, last_log_tokens = now, tokens - tokens_before
            last_loss = means[0]
            row: dict[str, Any] = {"step": step, "loss": means[0], "lm_loss": means[1], "aux_loss": means[2],
                                   "lr": lr, "grad_norm": gn, "tokens_per_s": round(tps, 1),
                                   "elapsed_s": round(elapsed_before + now - t0, 3),
                                   "active_states": _active_states(model)}
            if do_eval and info.is_main:
                ev = evaluate_model(model, eval_data, tc.eval_batch_size, device, amp)
                eval_history.append({"step": step, **{k: ev[k] for k in ("loss", "accuracy", "sequence_accuracy",
                                                                           "correct", "total", "n")}})
                row.update(eval_loss=ev["loss"], eval_accuracy=ev["accuracy"],
                           eval_sequence_accuracy=ev["sequence_accuracy"])
                bar.write(f"step {step}: eval loss {ev['loss']:.4f}  answer accuracy {ev['accuracy']:.4f}  "
                          f"(train loss {means[0]:.4f})")
            if info.is_main:
                with csv_path.open("a", newline="") as f:
                    csv.DictWriter(f, fieldnames=CSV_FIELDS).writerow({k: _fmt(row.get(k)) for k in CSV_FIELDS})
            bar.set_postfix(loss=f"{means[0]:.4f}", tok_s=f"{tps:,.0f}", lr=f"{lr:.2e}", refresh=False)
        for e in new_events:
            if info.is_main:
                bar.write(f"step {step}: state bank layer {e['layer']}: {e['kind']} slots {e['slots']}")
        bar.update(1)
        if info.is_main and ((tc.save_every and step % tc.save_every == 0) or step == end or stopped_by_time):
            save(step, elapsed_before + time.perf_counter() - t0, tokens)
        if stopped_by_time:
            bar.write(f"step {step}: stopping, train.max_time_s={tc.max_time_s} reached")
            break
    bar.close()
    elapsed = elapsed_before + time.perf_counter() - t0

    # ---- every rank must hold the same weights: gather their hashes
    final_hash = weights_hash(model)
    hashes = [f"{h[0]:015x}" for h in pdist.all_gather_int64([_hash_int(final_hash)], info)]
    finished = step >= tc.steps
    result = summary(step, elapsed, tokens, finished)
    result["rank_weight_hashes"] = hashes
    result["stopped_by_time"] = stopped_by_time
    if len(set(hashes)) != 1:
        raise RuntimeError(f"ranks diverged: weight hashes {hashes}")
    if info.is_main:
        if finished or stopped_by_time:
            model.save_pretrained(out)
            for name, text in side_files.items():
                atomic_write_text(out / name, text)
        atomic_write_text(json_path, json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pulse.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML run config (sections model, task, train)")
    p.add_argument("--out", help="output folder (default: runs/<config name>)")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--batch-size", type=int, help="override train.batch_size (per process)")
    p.add_argument("--lr", type=float, help="override train.lr")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--eval-every", type=int, help="override train.eval_every")
    p.add_argument("--save-every", type=int, help="override train.save_every")
    p.add_argument("--device", help="override train.device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any setting, e.g. --set model.hidden_size=64 (repeatable)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="resume from CHECKPOINT, or without a value from the latest one in --out")
    p.add_argument("--stop-after", type=int, help="stop after this many steps (checkpointed), as if interrupted")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = [parse_override(s) for s in args.set]
        flag_map = {"steps": "steps", "batch_size": "batch_size", "lr": "lr", "seed": "seed",
                    "eval_every": "eval_every", "save_every": "save_every", "device": "device"}
        for attr, key in flag_map.items():
            value = getattr(args, attr)
            if value is not None:
                overrides.append((["train", key], value))
        run = load_run_config(args.config, overrides)
        out = args.out or os.path.join("runs", Path(args.config).stem)
        result = train(run, out, resume=args.resume, stop_after=args.stop_after, progress=not args.no_progress)
    except (ConfigError, CheckpointError, ValueError) as e:
        print(f"pulse.train: error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        ev = result.get("eval") or {}
        print(json.dumps({"out": str(out), "step": result["step"], "final_train_loss": result["final_train_loss"],
                          "eval_loss": ev.get("loss"), "eval_accuracy": ev.get("accuracy"),
                          "wall_time_s": result["wall_time_s"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
