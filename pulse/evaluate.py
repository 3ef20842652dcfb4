"""Evaluate a saved model on held-out data of its task.

    python -m pulse.evaluate --checkpoint checkpoints/story-world-pulse [--n 1000] [--split test]

``--checkpoint`` is any ``save_pretrained`` folder (any registered model type, e.g. PULSE, Transformer or
the Hugging Face Mamba of ``model.type: mamba``, dispatched by
``pulse.load_pretrained``) that also holds ``task.json`` (task name and arguments, written
by ``pulse.train``) and ``tokenizer.json``. The data is generated afresh from the task's
``split`` (default ``test`` for generated tasks, ``eval`` for text): a different seed from
the training stream, so it is held out. Prints a table and then one JSON line with
``loss`` (mean next-token cross entropy on the trained positions), ``accuracy`` (answer
accuracy), ``sequence_accuracy``, counts, and what was evaluated. ``--json PATH`` also
writes the JSON to a file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from pulse.config import ConfigError
from pulse.data.task_record import load_task
from pulse.io import CheckpointError, atomic_write_text, read_json_object

__all__ = ["evaluate_checkpoint", "main"]


def evaluate_checkpoint(directory: str | Path, n: int | None = None, split: str | None = None,
                        batch_size: int = 256, device: str = "auto", seq_len: int | None = None) -> dict[str, Any]:
    """Load ``directory`` and evaluate it on ``n`` rows of ``split``; returns the metrics."""
    from pulse.pretrained import load_pretrained
    from pulse.training.evaluation import evaluate_model

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"--checkpoint: {directory} is not a folder")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    model = load_pretrained(directory, device=dev)
    task, info = load_task(directory)
    if model.config.vocab_size < task.vocab_size:
        raise CheckpointError(f"{directory}: the model's vocab_size ({model.config.vocab_size}) is smaller than "
                              f"the task's ({task.vocab_size})")
    if split is None:
        split = "eval" if info["name"] == "text" else "test"
    if seq_len is None:
        training = directory / "training.json"
        if training.is_file():
            seq_len = read_json_object(training, "").get("train", {}).get("seq_len")
    data = task.make_split(split, n=n, seq_len=seq_len)
    metrics = evaluate_model(model, data, batch_size=batch_size, device=dev, amp=False)
    return {
        "checkpoint": str(directory), "model_type": model.config.model_type, "task": info["name"],
        "split": split, "num_parameters": sum(p.numel() for p in model.parameters()), **metrics,
    }


def format_table(m: dict[str, Any]) -> str:
    rows = [("checkpoint", m["checkpoint"]), ("model", f"{m['model_type']} ({m['num_parameters']:,} parameters)"),
            ("task / split", f"{m['task']} / {m['split']} ({m['n']} sequences)"),
            ("loss", f"{m['loss']:.4f}"), ("perplexity", f"{m['perplexity']:.3f}"),
            ("answer accuracy", f"{m['accuracy']:.4f}  ({m['correct']}/{m['total']})"),
            ("sequence accuracy", f"{m['sequence_accuracy']:.4f}")]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 2 + max(len(v) for _, v in rows))
    return "\n".join([line, *(f"{k:<{width}}  {v}" for k, v in rows), line])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pulse.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a save_pretrained folder written by pulse.train")
    p.add_argument("--n", type=int, default=1000, help="number of held-out sequences (default 1000)")
    p.add_argument("--split", default=None, help="data split: test (default) or eval; text tasks: eval")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--json", dest="json_path", help="also write the metrics to this JSON file")
    args = p.parse_args(argv)
    try:
        if args.n < 1:
            raise ValueError(f"--n: must be a positive integer, got {args.n}")
        m = evaluate_checkpoint(args.checkpoint, n=args.n, split=args.split, batch_size=args.batch_size,
                                device=args.device)
    except (ConfigError, CheckpointError, ValueError) as e:
        print(f"pulse.evaluate: error: {e}", file=sys.stderr)
        return 2
    print(format_table(m))
    text = json.dumps(m, sort_keys=True)
    print(text)
    if args.json_path:
        atomic_write_text(args.json_path, json.dumps(m, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
