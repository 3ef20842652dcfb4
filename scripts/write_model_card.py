"""Package a trained run as a shipped checkpoint folder with a model card.

    python scripts/write_model_card.py RUN_DIR DEST_DIR --baseline BASELINE_RUN_DIR \
        --command "python -m pulse.train --config configs/x.yaml --out RUN_DIR" [--hardware "..."]

Copies the model files of RUN_DIR (config.json, model.safetensors, tokenizer.json, task.json,
training.json, metrics.json) into DEST_DIR, evaluates both runs with ``pulse.evaluate`` on
1000 held-out test sequences, and writes DEST_DIR/model_card.md with the command, data,
steps, hardware, wall time and the measured metrics of the model and of the baseline, led by
what the model uses (``probes.usage``: held-out accuracy with each mechanism off, cached in
DEST_DIR/usage.json; ``--usage-n`` examples, default 512).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pulse.data.task_record import load_task  # noqa: E402
from pulse.evaluate import evaluate_checkpoint  # noqa: E402
from probes.usage import checkpoint_usage  # noqa: E402

FILES = ("config.json", "model.safetensors", "tokenizer.json", "task.json", "training.json", "metrics.json")


def _row(name: str, metrics: dict, summary: dict) -> str:
    return (f"| {name} | {metrics['num_parameters']:,} | {summary['step']} | {summary['wall_time_s']:.0f} s | "
            f"{metrics['loss']:.4f} | **{metrics['accuracy']:.4f}** | {metrics['sequence_accuracy']:.4f} |")


def _model_line(config: dict) -> str:
    """The card's model line: PULSE's fields, or for another family (e.g. a Hugging Face Mamba
    folder) the sizes its config.json has."""
    if "num_heads" in config and "num_layers" in config:
        return (f"Model: hidden {config['hidden_size']}, {config['num_layers']} layers, {config['num_heads']} heads, "
                f"chunk {config.get('chunk_size')}, recurrent state {config.get('use_recurrent_state')}, memory "
                f"{config.get('use_memory')} (capacity {config.get('memory_capacity')}, "
                f"top-{config.get('memory_top_k')}), state bank {config.get('num_states')} slots "
                f"(dim {config.get('state_dim')})")
    keys = ("hidden_size", "num_hidden_layers", "intermediate_size", "state_size", "conv_kernel", "time_step_rank",
            "vocab_size", "tie_word_embeddings")
    return (f"Model: Hugging Face `{config.get('model_type')}` (`{(config.get('architectures') or ['?'])[0]}`), "
            + ", ".join(f"{k} {config[k]}" for k in keys if k in config))


def usage_section(dest: Path, n: int = 512, device: str = "cpu") -> str:
    """The card's "What this model uses" section: the ``probes.usage`` table of ``dest`` on ``n``
    held-out examples (also written to ``dest/usage.json``, keyed by the weights hash)."""
    try:
        u = checkpoint_usage(dest, n=n, device=device)
    except Exception as e:  # noqa: BLE001 - e.g. a family whose mechanisms probes.usage does not know
        return (f"## What this model uses\n\nNot measured: `probes.usage.checkpoint_usage` does not handle this "
                f"model ({type(e).__name__}: {e}). The workbench's pages still open it.\n")
    lines = "\n".join(f"- {u.sentence(m)}" for m in u.mechanisms())
    return (f"## What this model uses\n\n{u.markdown()}\n{lines}\n\nMeasured with "
            f"`probes.usage.checkpoint_usage(\"{dest.as_posix()}\", n={n})` on {u.meta['device']} "
            f"({u.meta['seconds']:.0f} s); the table is cached in `usage.json`.\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("dest")
    p.add_argument("--baseline", default=None, help="run folder of the same-budget Transformer baseline, if trained")
    p.add_argument("--command", required=True)
    p.add_argument("--baseline-command", default="")
    p.add_argument("--hardware", default="CPU")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--title", default="")
    p.add_argument("--notes", default="")
    p.add_argument("--previous-stage", default=None,
                   help="folder with metrics.json and training.json of the run whose weights this one started "
                        "from (train.init_from); copied to DEST/stage1 and summarised in the card")
    p.add_argument("--usage-n", type=int, default=512, help="held-out examples of the usage table")
    args = p.parse_args(argv)
    run, dest = Path(args.run_dir), Path(args.dest)
    base = Path(args.baseline) if args.baseline else None
    task_obj, task = load_task(run)  # the trainer's task.json, rebuilt (refused by name when it cannot be)
    dest.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        shutil.copy2(run / f, dest / f)
    m = evaluate_checkpoint(dest, n=args.n, split="test", device="cpu")
    b = evaluate_checkpoint(base, n=args.n, split="test", device="cpu") if base else None
    (dest / "eval_test.json").write_text(json.dumps({"model": m, "baseline": b}, indent=2, sort_keys=True) + "\n")
    s = json.loads((run / "metrics.json").read_text())
    bs = json.loads((base / "metrics.json").read_text()) if base else {}
    training = json.loads((run / "training.json").read_text())
    config = json.loads((run / "config.json").read_text())
    tc = training["train"]
    stopped = (f" Training was stopped by `train.max_time_s` at step {s['step']} of {s['steps']} "
               f"(the cosine schedule spans {s['steps']} steps)." if s.get("stopped_by_time") else "")
    bstopped = (f" The baseline stopped at step {bs['step']} of {bs['steps']}." if bs.get("stopped_by_time") else "")
    events = s.get("state_bank_events") or []
    stage = ""
    if args.previous_stage:
        prev = Path(args.previous_stage)
        (dest / "stage1").mkdir(exist_ok=True)
        for f in ("metrics.json", "training.json"):
            shutil.copy2(prev / f, dest / "stage1" / f)
        ps = json.loads((prev / "metrics.json").read_text())
        ptc = json.loads((prev / "training.json").read_text())["train"]
        last = (ps.get("eval_history") or [{}])[-1]
        stage = (f"- Stage 1 (record in `stage1/`): {ps['step']} of {ps['steps']} steps x batch {ptc['batch_size']}, "
                 f"lr {ptc['lr']}, seed {ptc['seed']}, {ps['wall_time_s']:.0f} s on {ps.get('device_name', '?')}"
                 + (" (stopped by `train.max_time_s`)" if ps.get("stopped_by_time") else "")
                 + (f"; eval answer accuracy at its end {last['accuracy']:.4f}" if "accuracy" in last else "")
                 + f". Stage 2 (below) started from those weights (`train.init_from: {tc.get('init_from')}`).\n")
    usage = usage_section(dest, n=args.usage_n)
    card = f"""# {args.title or dest.name}

A {config['model_type'].upper()} causal language model of the PULSE Workbench, trained from scratch on the
`{task['name']}` task. Load it with `pulse.load_pretrained("{dest.as_posix()}")`; evaluate it with

    python -m pulse.evaluate --checkpoint {dest.as_posix()} --n {args.n}

{usage}
## Training

{stage}- Command: `{args.command}`
- Data: `{task['name']}` generated on the fly, task arguments `{json.dumps(task['kwargs'], sort_keys=True)}`;
  the training stream is a pure function of (seed={tc['seed']}, step, rank), evaluation uses the
  held-out `test` split (a different seed).
- Steps: {s['step']} x batch {tc['batch_size']} (x {s['world_size']} process(es)), AdamW lr {tc['lr']} with
  {tc['warmup']} warmup steps and cosine decay to {tc['min_lr_ratio']} x lr, weight decay {tc['weight_decay']},
  gradient clipping {tc['grad_clip']}, precision {s['amp']}.{stopped}
- Hardware: {args.hardware}; wall time {s['wall_time_s']:.0f} s ({s['tokens_seen']:,} tokens).
- {_model_line(config)}; {m['num_parameters']:,} parameters.
- State-bank events during training: {json.dumps(events) if events else 'none'}.

## Held-out metrics (measured by `python -m pulse.evaluate`, {args.n} test sequences)

| model | parameters | steps | wall time | {task_obj.loss_name} | answer accuracy | sequence accuracy |
|---|---|---|---|---|---|---|
{_row(f"this model ({m['model_type']})", m, s)}
{_row(f"Transformer baseline, same width/depth/steps/batch", b, bs) if b else "| Transformer baseline | not trained for this model (see the note below) | | | | | |"}

Baseline command: `{args.baseline_command}`.{bstopped} Its weights are not shipped.
{args.notes}
"""
    (dest / "model_card.md").write_text(card)
    print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
