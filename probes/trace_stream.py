"""Trace a long text chunk by chunk into one Parquet trace folder.

    from probes import trace_to_parquet_streaming
    folder = trace_to_parquet_streaming(model, ids, "trace/", chunk_len=512)
    tr = Trace.from_parquet(folder)          # the same folder layout as tr.to_parquet

The recorder runs the model (carrying its state from chunk to chunk) under
:func:`probes.trace.trace` and appends each chunk's records to the folder writer of
:mod:`probes.parquet`; a whole evaluation set is traced by :mod:`probes.trace_corpus`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probes.parquet import _FolderWriter
from probes.trace import NameFilter, _decode_tokens, add_predictions, trace


@torch.no_grad()
def trace_to_parquet_streaming(
    model: nn.Module,
    input_ids: torch.Tensor,
    directory: str | os.PathLike,
    chunk_len: int = 512,
    names: NameFilter = None,
    top_k: int = 5,
    tokenizer: Any = None,
    tables: bool = True,
    progress: bool = False,
) -> Path:
    """Trace a long text (``input_ids`` long [T] or [1, T]) chunk by chunk, carrying the model
    state, appending each chunk's records (absolute positions) to Parquet with
    ``pyarrow.parquet.ParquetWriter``. Memory is bounded by one chunk's records. Also writes
    ``loss.per_token`` (the first token of each chunk is scored with the previous chunk's last
    logits) and the top-``k`` predictions. Returns the folder."""
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids: expected a long tensor [T] or [1, T], got {tuple(input_ids.shape)}")
    if chunk_len < 1:
        raise ValueError(f"chunk_len: must be >= 1, got {chunk_len}")
    T = input_ids.shape[1]
    writer = _FolderWriter(directory, tables=tables)
    try:
        state = None
        prev_logits = None
        starts = range(0, T, chunk_len)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="trace", unit="chunk")
        with trace(model, names=names, tokenizer=tokenizer) as rec:
            for start in starts:
                ids = input_ids[:, start:start + chunk_len]
                out = model(ids, state=state)
                state = out["state"]
                add_predictions(rec, out["logits"], ids, None, None, top_k, step_start=start,
                                prev_logits=prev_logits)
                prev_logits = out["logits"][:, -1]
                piece = rec.drain()
                if tokenizer is not None:
                    piece.token_strings = _decode_tokens(tokenizer, piece.tokens)
                writer.append(piece)
        writer.metadata.update({k: v for k, v in rec.metadata.items() if k not in writer.metadata})
        return writer.close({"pos_start": 0, "streamed": {"chunk_len": chunk_len, "num_tokens": T}})
    except BaseException:
        writer.abort()
        raise
