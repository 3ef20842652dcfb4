"""Trace a whole evaluation set into a partitioned Parquet dataset.

    python -m probes.trace_corpus --checkpoint CKPT --data eval.txt --out traces/ [--limit N]
        [--names 'blocks.*.states.*'] [--top-k 5] [--seq-len 512]
    torchrun --nproc-per-node 4 -m probes.trace_corpus ...     # one partition per rank

``--data`` is one of

* a text file (``.txt``: one example per non-empty line) or JSON lines (``.jsonl``: objects
  with ``"input_ids"`` or ``"text"``); text is encoded with the tokenizer saved in the
  checkpoint folder (``pulse.data.load_tokenizer``);
* a safetensors file with ``input_ids`` ``[N, T]`` (and optionally ``attention_mask``);
* a task name of ``pulse.data.build_task`` (e.g. ``story_world``; its eval split): the
  checkpoint's own task, rebuilt from its ``task.json`` by ``pulse.data.task_record.load_task``
  (refused when task.json names another task or cannot be rebuilt; built with default
  arguments, with a note, only when the folder has no task.json).

The loss (``token_loss``) is on the tokens the model was trained to predict: the labels of
the checkpoint's task (``Task.labels_for``; e.g. only the answers of an answers-only story
model), for files as for task data; without a task.json every token is scored. ``_meta``
records which under ``"loss"``.

Output: for each stored tidy table kind of the frame registry (:mod:`probes.frames`) that
the traces have, ``OUT/<kind>/shard=<r>/part-<r>.parquet`` with an ``example`` column (the
global example index), plus ``OUT/_meta/shard=<r>.json``. Per-parameter kinds
(``per_piece=False``: importance, decay, pruning_events) are written once, by rank 0. Read
the union with DuckDB::

    duckdb.sql("select shard, avg(loss) from read_parquet('OUT/token_loss/*/*.parquet',"
               " hive_partitioning=true) group by shard")

(The partition is named ``shard``, not ``rank``: the predictions and memory-read tables
already have a ``rank`` column, the top-k rank.)

Under torchrun (``RANK`` / ``WORLD_SIZE`` in the environment) rank r takes examples
r, r + W, r + 2W, ...; no process group is created.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq
import torch

from probes.frames import stored_kinds
from probes.parquet import _arrow
from probes.trace import run_with_trace


def _tokenizer(checkpoint: Path):
    try:
        from pulse.data import load_tokenizer
    except Exception as e:  # noqa: BLE001 - the data package may be missing or broken
        raise SystemExit(f"--data: text input needs pulse.data.load_tokenizer, which failed to import ({e})")
    try:
        return load_tokenizer(checkpoint)
    except Exception as e:  # noqa: BLE001
        raise SystemExit(f"--checkpoint: no usable tokenizer in {checkpoint} ({e}); give token ids instead "
                         f"(.safetensors or .jsonl with input_ids)")


def checkpoint_task(checkpoint: Path) -> Any:
    """The checkpoint's task (``load_task``), or None when the folder has no task.json; a
    task.json that cannot be rebuilt stops the run with the reason."""
    from pulse.data.task_record import TASK_FILE, TaskRecordError, load_task

    if not (checkpoint / TASK_FILE).is_file():
        return None
    try:
        return load_task(checkpoint)[0]
    except TaskRecordError as e:
        raise SystemExit(f"--checkpoint: {e}") from None


def _data_task(checkpoint: Path, name: str) -> Any:
    """The task ``name`` for ``--data NAME``: the checkpoint's own (see the module doc)."""
    from pulse.data import build_task

    task = checkpoint_task(checkpoint)
    if task is None:
        print(f"note: {checkpoint} has no task.json; --data {name} uses the task's default arguments",
              file=sys.stderr)
        return build_task(name)
    if task.name != name:
        raise SystemExit(f"--data: {checkpoint} was trained on task {task.name!r} (its task.json), not {name!r}; "
                         f"pass --data {task.name} or a file")
    return task


def load_examples(data: str, checkpoint: Path, limit: int | None = None,
                  seq_len: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """[(ids [T] long, mask [T] float or None)] from a file or task name (see module doc)."""
    path = Path(data)
    out: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if "input_ids" not in tensors:
            raise SystemExit(f"--data: {path} has no 'input_ids' tensor (found {sorted(tensors)})")
        ids = tensors["input_ids"].long()
        ids = ids[None] if ids.dim() == 1 else ids
        mask = tensors.get("attention_mask")
        for i in range(ids.shape[0]):
            out.append((ids[i], None if mask is None else mask[i].float()))
    elif path.suffix in (".txt", ".jsonl") and path.is_file():
        tok = None
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                obj = json.loads(line)
                if "input_ids" in obj:
                    out.append((torch.tensor(obj["input_ids"], dtype=torch.long), None))
                    continue
                text = obj.get("text")
                if text is None:
                    raise SystemExit(f"--data: a line of {path} has neither 'input_ids' nor 'text'")
            else:
                text = line
            tok = tok or _tokenizer(checkpoint)
            out.append((torch.tensor(tok.encode(text), dtype=torch.long), None))
            if limit is not None and len(out) >= limit:
                break
    elif path.exists():
        raise SystemExit(f"--data: {path}: expected .txt, .jsonl or .safetensors")
    else:
        try:
            from pulse.data import available_tasks
        except Exception as e:  # noqa: BLE001
            raise SystemExit(f"--data: {data!r} is not a file, and pulse.data failed to import ({e})")
        if data not in available_tasks():
            raise SystemExit(f"--data: {data!r} is neither a file nor a task ({available_tasks()})")
        batch = _data_task(checkpoint, data).eval_set(n=limit, seq_len=seq_len)
        for i in range(batch["input_ids"].shape[0]):
            m = batch.get("attention_mask")
            out.append((batch["input_ids"][i], None if m is None else m[i].float()))
    if seq_len is not None:
        out = [(ids[:seq_len], None if m is None else m[:seq_len]) for ids, m in out]
    out = [(ids, m) for ids, m in out if ids.numel() > 0]
    return out[:limit] if limit is not None else out


def rank_and_world() -> tuple[int, int]:
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1 or not 0 <= rank < world:
        raise SystemExit(f"RANK/WORLD_SIZE: need 0 <= RANK < WORLD_SIZE, got {rank}/{world}")
    return rank, world


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m probes.trace_corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="save_pretrained folder")
    p.add_argument("--data", required=True, help=".txt / .jsonl / .safetensors file, or a task name")
    p.add_argument("--out", required=True, help="output folder of the partitioned dataset")
    p.add_argument("--limit", type=int, default=None, help="at most this many examples (before sharding)")
    p.add_argument("--names", action="append", default=None, help="hook-name glob (repeatable); default all")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--seq-len", type=int, default=None, help="truncate examples to this length")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pulse import load_pretrained

    ckpt = Path(args.checkpoint)
    model = load_pretrained(ckpt).eval()
    rank, world = rank_and_world()
    examples = load_examples(args.data, ckpt, args.limit, args.seq_len)
    task = checkpoint_task(ckpt)  # scores the tokens the model was trained on; None: every token
    loss_name = task.loss_name if task is not None else "all-token loss"
    mine = list(range(rank, len(examples), world))
    out = Path(args.out)
    tmp_files: dict[str, tuple[Path, Path]] = {}
    writers: dict[str, pq.ParquetWriter] = {}

    def write(kind: str, df) -> None:
        table = _arrow(df)
        if kind not in writers:
            final = out / kind / f"shard={rank}" / f"part-{rank:05d}.parquet"
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
            tmp_files[kind] = (tmp, final)
            writers[kind] = pq.ParquetWriter(str(tmp), table.schema)
        elif table.schema != writers[kind].schema:
            table = table.cast(writers[kind].schema)
        writers[kind].write_table(table)

    iterator: Any = mine
    if not args.no_progress:
        from tqdm import tqdm

        iterator = tqdm(mine, desc=f"trace rank {rank}/{world}", unit="example", file=sys.stderr)
    tokenizer = None
    meta: dict[str, Any] = {}
    ok = False
    try:
        for n, ex in enumerate(iterator):
            ids, mask = examples[ex]
            labels = None if task is None else task.labels_for(ids[None], None if mask is None else mask[None])
            _, tr = run_with_trace(model, ids[None], attention_mask=None if mask is None else mask[None],
                                   names=args.names, tokenizer=tokenizer, top_k=args.top_k, labels=labels)
            kinds = tr.available_frames()
            for kind in stored_kinds(per_piece=True):
                if kind in kinds:
                    df = tr.frame(kind)
                    df.insert(0, "example", ex)
                    write(kind, df)
            if n == 0:
                meta = {k: v for k, v in tr.metadata.items() if k != "created"}
                if rank == 0:
                    for kind in stored_kinds(per_piece=False):
                        if kind in kinds:
                            write(kind, tr.frame(kind))
        ok = True
    finally:
        for w in writers.values():
            w.close()
        for tmp, final in tmp_files.values():
            if ok:
                os.replace(tmp, final)
            elif tmp.exists():
                tmp.unlink()
    (out / "_meta").mkdir(parents=True, exist_ok=True)
    from pulse.io import atomic_write_text

    atomic_write_text(out / "_meta" / f"shard={rank}.json", json.dumps(
        {"rank": rank, "world_size": world, "examples": mine, "num_examples_total": len(examples),
         "data": args.data, "checkpoint": str(ckpt), "names": args.names, "tables": sorted(writers), "loss": loss_name,
         "metadata": meta}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
