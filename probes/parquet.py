"""Parquet export of traces: exact round trips, atomic folders, appended pieces.

Layout of a trace folder (``tr.to_parquet(d)``, ``Trace.from_parquet(d)``; long texts are
streamed into one by :func:`probes.trace_stream.trace_to_parquet_streaming`)::

    d/metadata.json              schema version, tensor index (name, file, shape, dtype,
                                 layout, kind, step axis, ...), model config, weights hash,
                                 prompt, created, events, hook_sites (layout and kind by name)
    d/tokens.parquet             sample, pos, token_id, real, token
    d/tensors/NNNN_<name>.parquet  one file per recorded tensor, long form:
                                 name (string), step (int64), elem (int64), value (native dtype)
    d/<kind>.parquet             tidy tables of probes.frames: every stored kind of the frame
                                 registry (routing, gates, importance, decay, token_loss, ...)
                                 that the trace has; per-piece kinds are appended piece by
                                 piece, per-parameter kinds written once when the folder closes

The tidy tables are for queries::

    duckdb.sql("select layer, avg(weight) from 'd/routing.parquet' group by layer")

The ``tensors/`` files are the exact record: a tensor is stored with its step axis
(the axis ``pos`` or ``update`` of the layout its hook site declares; see probes.trace)
moved to the front and flattened to ``[steps, elems]``: row ``(step, elem)`` holds one
element, ``step`` is absolute (streamed pieces keep counting). Each file's Parquet schema
metadata names the tensor's layout and kind too (keys ``pulse.name``, ``pulse.layout``
(JSON list), ``pulse.kind``). Values keep their dtype (float16/bfloat16 are
stored as their raw 16-bit patterns, ``encoding: "bits16"``), so reading gives back
bitwise-identical tensors. All tensors read as one dataset with
``read_parquet('d/tensors/*.parquet', union_by_name=true)`` (values then widen to a common type).
Only the merged tensors are stored (per-parameter hooks: the last call).

Folders are written into a temporary sibling and renamed into place, so a reader never
sees a half-written folder under the final name. Reading checks the schema version, the
files and the shapes, raising :class:`TraceFormatError` with the reason.

This module sits below :mod:`probes.trace` (whose ``Trace`` writes and reads through it):
it takes traces by their methods and is handed the class to build on reading. It reads
which tidy tables to write from the frame registry of :mod:`probes.frames`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from probes.frames import stored_kinds

# 2: tensor entries and hook_sites carry the declared layout and kind of each tensor
SCHEMA_VERSION = 2
FORMAT_NAME = "pulse-trace"
# the frame kinds written per piece / once (live views of the frame registry, probes.frames)
PIECE_KINDS = stored_kinds(per_piece=True)
PARAM_KINDS = stored_kinds(per_piece=False)

_NP_DTYPES = {
    torch.float32: np.float32, torch.float64: np.float64, torch.int64: np.int64, torch.int32: np.int32,
    torch.int16: np.int16, torch.int8: np.int8, torch.uint8: np.uint8, torch.bool: np.bool_,
}
_BITS16 = {torch.float16, torch.bfloat16}


class TraceFormatError(ValueError):
    """A trace folder is missing, damaged, or written with another schema version."""


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _encode(t: torch.Tensor, name: str, step_start: int, axis: int | None, layout: Iterable[str] | None = None,
            kind: str | None = None) -> tuple[pa.Table, dict[str, Any]]:
    """Long-form table of one tensor (step axis ``axis`` first) and its index entry."""
    a = t.detach().cpu()
    if axis is not None:
        a = a.movedim(axis, 0)
        steps = a.shape[0]
    else:
        a = a.reshape(1, *a.shape)
        steps = 1
    a = a.contiguous()
    rest = int(np.prod(a.shape[1:])) if a.dim() > 1 else 1
    if t.dtype in _BITS16:
        values = a.view(torch.int16).reshape(-1).numpy()
        encoding = "bits16"
    elif t.dtype in _NP_DTYPES:
        values = a.reshape(-1).numpy()
        encoding = "plain"
    else:
        raise TypeError(f"{name}: dtype {t.dtype} cannot be stored")
    n = values.shape[0]
    idx = np.arange(n, dtype=np.int64)
    start = step_start if axis is not None else 0
    layout = None if layout is None else list(layout)
    table = pa.table({
        "name": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([name], pa.string())),
        "step": idx // max(rest, 1) + start if rest else idx,
        "elem": idx % max(rest, 1),
        "value": values,
    }, metadata={"pulse.name": name, "pulse.layout": json.dumps(layout), "pulse.kind": json.dumps(kind)})
    entry = {"name": name, "shape": list(t.shape), "dtype": _dtype_name(t.dtype), "encoding": encoding,
             "layout": layout, "kind": kind, "step_axis": axis, "step_start": start}
    return table, entry


def _decode(table: pa.Table, entry: dict[str, Any], where: str) -> torch.Tensor:
    shape = [int(s) for s in entry["shape"]]
    axis = entry.get("step_axis")
    dtype = getattr(torch, entry["dtype"], None)
    if not isinstance(dtype, torch.dtype):
        raise TraceFormatError(f"{where}: unknown dtype {entry['dtype']!r}")
    expected = int(np.prod(shape)) if shape else 1
    if table.num_rows != expected:
        raise TraceFormatError(f"{where}: {table.num_rows} values for shape {shape} (expected {expected})")
    try:
        step = table.column("step").to_numpy()
        elem = table.column("elem").to_numpy()
        values = table.column("value").to_numpy(zero_copy_only=False)
    except KeyError as e:
        raise TraceFormatError(f"{where}: missing column ({e})") from e
    if expected and not (np.all(np.diff(step) >= 0)):
        order = np.lexsort((elem, step))
        values = values[order]
    values = np.ascontiguousarray(values)
    if entry.get("encoding") == "bits16":
        flat = torch.from_numpy(values.astype(np.int16)).view(dtype)
    else:
        flat = torch.from_numpy(values.copy()).to(dtype) if values.dtype != _NP_DTYPES.get(dtype) else \
            torch.from_numpy(values.copy())
    if axis is not None:
        moved = [shape[axis]] + [s for i, s in enumerate(shape) if i != axis]
        return flat.reshape(moved).movedim(0, axis).contiguous()
    return flat.reshape(shape)


def _arrow(df: pd.DataFrame) -> pa.Table:
    """DataFrame -> Arrow table; text columns (also all-None ones) become ``string``."""
    df = df.reset_index(drop=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    fields = [pa.field(f.name, pa.string()) if (pa.types.is_null(f.type) or pa.types.is_large_string(f.type))
              else f for f in table.schema]
    return table.cast(pa.schema(fields))


class _FolderWriter:
    """Appends trace pieces to a temporary folder, then renames it into place."""

    def __init__(self, directory: str | os.PathLike, overwrite: bool = True, tables: bool = True) -> None:
        self.final = Path(directory)
        if self.final.exists() and not overwrite:
            raise FileExistsError(f"directory: {self.final} exists (pass overwrite=True)")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.final.parent, prefix=f".{self.final.name}.tmp-"))
        (self.tmp / "tensors").mkdir()
        self.tables = tables
        self.entries: dict[str, dict[str, Any]] = {}
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.table_writers: dict[str, pq.ParquetWriter] = {}
        self.last_param: dict[str, torch.Tensor] = {}
        self.metadata: dict[str, Any] = {}
        self.token_strings = False
        self.order: list[str] = []
        self.trace_cls: type | None = None  # the class of the pieces: builds the per-parameter tables

    def _write(self, store: dict[str, pq.ParquetWriter], key: str, path: Path, table: pa.Table,
               **options: Any) -> None:
        w = store.get(key)
        if w is None:
            w = store[key] = pq.ParquetWriter(str(path), table.schema, **options)
        elif table.schema != w.schema:
            table = table.cast(w.schema)
        w.write_table(table)

    def append(self, piece: Trace) -> None:
        self.metadata = dict(piece.metadata)
        self.trace_cls = type(piece)
        for name in piece.names:
            if name not in self.order:
                self.order.append(name)
            t = piece[name]
            axis = piece.step_axis(name)
            if axis is None:
                self.last_param[name] = t
                continue
            table, entry = _encode(t, name, piece.step_start(name), axis, piece.layout(name), piece.kind(name))
            old = self.entries.get(name)
            if old is None:
                entry["file"] = f"tensors/{len(self.entries) + len(self.last_param):04d}_{_safe(name)}.parquet"
                self.entries[name] = entry
            else:
                ax = entry["step_axis"]
                a, b = list(old["shape"]), list(entry["shape"])
                if a[:ax] + a[ax + 1:] != b[:ax] + b[ax + 1:] or old["dtype"] != entry["dtype"]:
                    raise ValueError(f"{name}: piece shape {b} / {entry['dtype']} does not continue {a} / {old['dtype']}")
                old["shape"][ax] += b[ax]
            # only the name column is worth a dictionary (step/elem/value are high-cardinality)
            self._write(self.writers, name, self.tmp / self.entries[name]["file"], table, use_dictionary=["name"])
        toks = piece.tokens
        if toks is not None:
            mask = piece.attention_mask
            B, T = toks.shape
            s, p = np.unravel_index(np.arange(B * T), (B, T))
            df = pd.DataFrame({"sample": s.astype(np.int64), "pos": (p + piece.pos_start).astype(np.int64),
                               "token_id": toks.reshape(-1).numpy().astype(np.int64),
                               "real": (mask.reshape(-1).numpy() > 0.5) if mask is not None else np.ones(B * T, bool)})
            if piece.token_strings is not None:
                self.token_strings = True
                df["token"] = [piece.token_strings[i][j] for i, j in zip(s, p)]
            else:
                df["token"] = None
            self._write(self.table_writers, "__tokens__", self.tmp / "tokens.parquet", _arrow(df))
        if self.tables:
            available = piece.available_frames()
            for kind in PIECE_KINDS:
                if kind in available:
                    df = piece.frame(kind)
                    self._write(self.table_writers, kind, self.tmp / f"{kind}.parquet", _arrow(df))

    def close(self, extra_metadata: dict[str, Any] | None = None) -> Path:
        try:
            params = self.trace_cls(dict(self.metadata)) if self.trace_cls is not None else None
            for name, t in self.last_param.items():
                params.add(name, t)
                table, entry = _encode(t, name, 0, None, params.layout(name), params.kind(name))
                entry["file"] = f"tensors/{len(self.entries):04d}_{_safe(name)}.parquet"
                self.entries[name] = entry
                pq.write_table(table, str(self.tmp / entry["file"]))
            if self.tables and params is not None:
                available = params.available_frames()
                for kind in PARAM_KINDS:
                    if kind in available:
                        df = params.frame(kind)
                        pq.write_table(_arrow(df), str(self.tmp / f"{kind}.parquet"))
            for w in list(self.writers.values()) + list(self.table_writers.values()):
                w.close()
            self.writers, self.table_writers = {}, {}
            meta = {k: v for k, v in self.metadata.items() if k != "schema_version"}
            meta.update(extra_metadata or {})
            tables = sorted(p.stem for p in self.tmp.glob("*.parquet") if p.stem != "tokens")
            doc = {
                "format": FORMAT_NAME,
                "schema_version": SCHEMA_VERSION,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "names": [n for n in self.order if n in self.entries],
                "tensors": [self.entries[n] for n in self.order if n in self.entries],
                "tokens_file": "tokens.parquet" if (self.tmp / "tokens.parquet").exists() else None,
                "tables": tables,
                "metadata": meta,
            }
            (self.tmp / "metadata.json").write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
            self._swap()
            return self.final
        except BaseException:
            self.abort()
            raise

    def _swap(self) -> None:
        backup = None
        if self.final.exists():
            backup = self.final.parent / f".{self.final.name}.old-{os.getpid()}-{time.time_ns()}"
            os.replace(self.final, backup)
        os.replace(self.tmp, self.final)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)

    def abort(self) -> None:
        for w in list(self.writers.values()) + list(self.table_writers.values()):
            try:
                w.close()
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_trace(tr: Trace, directory: str | os.PathLike, tables: bool = True, overwrite: bool = True) -> Path:
    """Write ``tr`` to ``directory`` atomically (see the module doc for the layout)."""
    w = _FolderWriter(directory, overwrite=overwrite, tables=tables)
    try:
        w.append(tr)
    except BaseException:
        w.abort()
        raise
    return w.close({"pos_start": tr.pos_start})


def _read_table(path: Path) -> pa.Table:
    if not path.is_file():
        raise TraceFormatError(f"{path}: file missing")
    try:
        return pq.read_table(str(path))
    except Exception as e:  # noqa: BLE001 - any parse error means a damaged file
        raise TraceFormatError(f"{path}: not a readable Parquet file ({e})") from e


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    d = Path(directory)
    if not d.is_dir():
        raise TraceFormatError(f"{d}: not a trace folder (missing)")
    path = d / "metadata.json"
    if not path.is_file():
        raise TraceFormatError(f"{d}: no metadata.json (not a trace folder, or an unfinished write)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TraceFormatError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise TraceFormatError(f"{path}: not a {FORMAT_NAME} metadata file")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise TraceFormatError(f"{path}: schema_version {version!r} is not supported (this code reads "
                               f"version {SCHEMA_VERSION})")
    return doc


def read_folder(directory: str | os.PathLike, trace_cls: type) -> Trace:
    """A ``trace_cls`` (:class:`probes.trace.Trace`) holding the folder written by
    :func:`write_trace` or the streaming recorder; ``Trace.from_parquet`` and
    ``probes.read_trace`` call it."""
    d = Path(directory)
    doc = read_metadata(d)
    meta = dict(doc.get("metadata") or {})
    meta["schema_version"] = doc["schema_version"]
    tr = trace_cls(meta)
    try:
        for entry in doc["tensors"]:
            table = _read_table(d / entry["file"])
            tr.add(entry["name"], _decode(table, entry, str(d / entry["file"])), int(entry.get("step_start", 0)),
                   layout=entry.get("layout"), kind=entry.get("kind"))
    except (KeyError, TypeError, ValueError) as e:
        raise TraceFormatError(f"{d}/metadata.json: malformed tensor index ({e})") from e
    tr._pos_start = int(meta.get("pos_start", 0) or 0)
    if doc.get("tokens_file"):
        df = _read_table(d / doc["tokens_file"]).to_pandas()
        if len(df):
            B = int(df["sample"].max()) + 1
            T = len(df) // B
            df = df.sort_values(["sample", "pos"])
            ids = torch.from_numpy(df["token_id"].to_numpy().astype(np.int64).reshape(B, T))
            mask = torch.from_numpy(df["real"].to_numpy().reshape(B, T).astype(np.float32))
            tr.set_tokens(ids, mask)
            if df["token"].notna().any():
                tr.token_strings = [list(r) for r in df["token"].to_numpy().reshape(B, T)]
    return tr
