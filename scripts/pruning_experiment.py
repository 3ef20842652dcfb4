"""Does the state bank's learned importance say which slots matter?

Loads a trained PULSE model with a state bank (default: the shipped story-world
checkpoint; or trains one briefly from a config with ``--train-config``), then measures on
held-out stories the loss change from pruning, in every block's bank,

* the lowest-importance half of the alive slots (``bank.prune_lowest``), versus
* a random half of the alive slots (``bank.prune_states``), for several seeds,

each on a fresh copy of the model, through the real alive mask. The loss is on the task's
labels, the tokens the model was trained to predict (``pulse.training.evaluate_model`` scores
``labels``: the answer tokens of an answers-only model, every token of a language model);
the table and the JSON say which and over how many tokens. Prints both, measured (nothing
is asserted), as a table and one JSON line.

    python scripts/pruning_experiment.py [--checkpoint checkpoints/story-world-pulse] [--n 500] [--seeds 5]
    python scripts/pruning_experiment.py --train-config configs/tiny.yaml --steps 50
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pulse.data.task_record import load_task  # noqa: E402
from pulse.pretrained import load_pretrained  # noqa: E402
from pulse.training.evaluation import evaluate_model  # noqa: E402


def _banks(model):
    return list(model.state_banks())


def prune_by_importance(model):
    pruned = copy.deepcopy(model)
    for _, bank in _banks(pruned):
        bank.prune_lowest(bank.get_active_count() // 2)
    return pruned


def prune_random(model, seed: int):
    pruned = copy.deepcopy(model)
    rng = random.Random(seed)
    for _, bank in _banks(pruned):
        alive = [i for i in range(bank.alive.numel()) if bool(bank.alive[i])]
        bank.prune_states(rng.sample(alive, len(alive) // 2))
    return pruned


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "story-world-pulse"))
    p.add_argument("--train-config", help="train a model briefly from this YAML instead of loading one")
    p.add_argument("--steps", type=int, default=200, help="steps for --train-config")
    p.add_argument("--n", type=int, default=500, help="held-out sequences (test split)")
    p.add_argument("--seeds", type=int, default=5, help="random-pruning repetitions")
    args = p.parse_args(argv)

    directory = Path(args.checkpoint)
    if args.train_config:
        from pulse.train import train
        from pulse.training.config import load_run_config

        directory = Path(tempfile.mkdtemp(prefix="pruning-"))
        run = load_run_config(args.train_config, [(["train", "steps"], args.steps), (["train", "prune_at"], []),
                                                  (["train", "prune_every"], 0), (["train", "allocate_at"], []),
                                                  (["train", "allocate_every"], 0)])
        train(run, directory, progress=False)
    model = load_pretrained(directory).eval()
    if not _banks(model):
        print(f"{directory}: the model has no state bank (num_states = 0)", file=sys.stderr)
        return 2
    task, _ = load_task(directory)
    data = task.make_split("test", n=args.n)
    if not torch.equal(task.labels_for(data["input_ids"], data["attention_mask"]), data["labels"]):
        raise RuntimeError(f"{task.name}: labels_for disagrees with make_split's labels")  # the one labelling

    base = evaluate_model(model, data)
    imp = evaluate_model(prune_by_importance(model), data)
    rand = [evaluate_model(prune_random(model, s), data) for s in range(args.seeds)]
    importance = {f"layer {i}": [round(v, 3) for v in b.get_importance_scores().tolist()] for i, b in _banks(model)}

    def delta(m):
        return m["loss"] - base["loss"]

    rand_d = [delta(m) for m in rand]
    result = {
        "checkpoint": str(directory), "n": args.n, "loss": task.loss_name, "label_tokens": base["tokens"],
        "alive_before": [b.get_active_count() for _, b in _banks(model)],
        "importance": importance,
        "base": {"loss": base["loss"], "accuracy": base["accuracy"]},
        "prune_lowest_importance_half": {"loss": imp["loss"], "accuracy": imp["accuracy"], "loss_change": delta(imp)},
        "prune_random_half": {
            "loss_change_per_seed": rand_d, "loss_change_mean": statistics.fmean(rand_d),
            "loss_change_std": statistics.pstdev(rand_d), "accuracy_mean": statistics.fmean(m["accuracy"] for m in rand),
        },
    }
    print(f"held-out {task.name} test split, {args.n} sequences; slots alive per bank: {result['alive_before']}")
    print(f"loss = {task.loss_name}, n={base['tokens']} tokens (the tokens the model was trained to predict)")
    for layer, values in importance.items():
        print(f"  importance {layer}: {values}")
    print(f"{'':34}{'loss':>9}{'d loss':>10}{'accuracy':>10}")
    print(f"{'unpruned':34}{base['loss']:9.4f}{'':>10}{base['accuracy']:10.4f}")
    print(f"{'prune lowest-importance half':34}{imp['loss']:9.4f}{delta(imp):+10.4f}{imp['accuracy']:10.4f}")
    for s, m in enumerate(rand):
        print(f"{f'prune random half (seed {s})':34}{m['loss']:9.4f}{delta(m):+10.4f}{m['accuracy']:10.4f}")
    print(f"{'random half: mean +- std':34}{'':9}{statistics.fmean(rand_d):+10.4f} +- {statistics.pstdev(rand_d):.4f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
