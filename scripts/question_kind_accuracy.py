"""Held-out answer accuracy by question kind (character vs two-hop object) of a checkpoint,
with 95% Wilson intervals: ``python scripts/question_kind_accuracy.py CHECKPOINT [--n 1000]``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pulse import load_pretrained  # noqa: E402
from pulse.data import load_task  # noqa: E402


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--n", type=int, default=1000)
    a = p.parse_args(argv)
    model = load_pretrained(a.checkpoint).eval()
    task, _ = load_task(a.checkpoint)
    stories = task.stories("test", a.n)
    batch = task.encode_stories(stories)
    with torch.no_grad():
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"])["logits"]
    counts: dict[str, list[int]] = {}
    for row, s in enumerate(stories):
        for q in s.questions:
            pred = int(logits[row, q.answer_pos - 1].argmax())
            hit = pred == int(batch["input_ids"][row, q.answer_pos])
            c = counts.setdefault(q.kind, [0, 0])
            c[0] += hit
            c[1] += 1
    out = {k: {"accuracy": c[0] / c[1], "ci95": wilson(c[0], c[1]), "n": c[1]} for k, c in counts.items()}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
