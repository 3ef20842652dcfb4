"""Tidy long-form tables from a :class:`~probes.trace.Trace`: ``tr.frame(kind, **options)``.

(This module sits below :mod:`probes.trace`, which imports it: ``Trace`` in the annotations
names that class without importing it.)

Every table is a pandas DataFrame with one row per observation. ``pos`` is the absolute
token position (streamed pieces keep counting), ``sample`` the batch row, ``layer`` the
block index. Padding positions (``tr.attention_mask == 0``) are left out of per-token kinds.

=================  ==========================================================================
kind               columns
=================  ==========================================================================
routing            sample, layer, pos, slot, weight            (states.hook_routing)
read_weights       sample, layer, pos, slot, weight            (states.hook_read_weights)
gates              sample, layer, update, pos, slot, gate, value (mean over the state dims;
                   ``per_dim=True`` adds ``dim`` and gives one row per dim); rows of
                   updates that did not happen (position -1) are left out
importance         layer, slot, importance, alive
pruning_events     layer, event, step, kind, slot, importance  (state-bank events at trace time)
memory_reads       sample, layer, pos, rank, slot, score, weight (entries actually read)
decay              layer, head, gamma, half_life               (attn.hook_decay)
decay_attention    sample, layer, head, t, s, weight           (``layer=``, ``head=``,
                   ``window=(t0, t1)``, ``s_start=``, ``sample=``; see probes.attention)
token_loss         sample, pos, token_id, token, loss          (loss.per_token)
predictions        sample, pos, rank, token_id, token, prob    (predictions.*)
recurrent          sample, layer, pos, input_gate_mean, state_norm, state_mean
fusion_gate        sample, layer, pos, gate                    (mean over hidden dims)
=================  ==========================================================================
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

FRAME_KINDS = (
    "routing", "read_weights", "gates", "importance", "pruning_events", "memory_reads", "decay",
    "decay_attention", "token_loss", "predictions", "recurrent", "fusion_gate",
)

GATE_SUFFIXES = {
    "reset": "states.hook_reset_gate",
    "update": "states.hook_update_gate",
    "input": "states.hook_input_gate",
    "forget": "states.hook_forget_gate",
    "output": "states.hook_output_gate",
}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    return [a.astype(np.int64) for a in np.unravel_index(np.arange(int(np.prod(shape)), dtype=np.int64), shape)] \
        if len(shape) else []


def _real(tr: Trace, B: int, T: int) -> np.ndarray | None:
    """[B, T] bool of real tokens held in this trace, or None when unknown/all real."""
    m = tr.attention_mask
    if m is None or tuple(m.shape) != (B, T):
        return None
    m = _np(m) > 0.5
    return None if m.all() else m


def _token_table(tr: Trace, name: str, value_cols: dict[str, np.ndarray], extra_dims: list[str]) -> pd.DataFrame:
    """Long form of [B, T, *extra] arrays (all with the same shape) of one hook."""
    arr0 = next(iter(value_cols.values()))
    shape = arr0.shape
    idx = _grid(shape)
    cols: dict[str, Any] = {"sample": idx[0], "pos": idx[1] + tr.step_start(name)}
    for d, a in zip(extra_dims, idx[2:]):
        cols[d] = a
    for k, v in value_cols.items():
        cols[k] = v.reshape(-1)
    df = pd.DataFrame(cols)
    real = _real(tr, shape[0], shape[1])
    if real is not None:
        df = df[real[idx[0], idx[1]]]
    return df


def _per_layer(tr: Trace, suffix: str, build: Callable[[int, str], pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = []
    for layer, name in tr.layers(suffix).items():
        df = build(layer, name)
        df.insert(0 if "sample" not in df.columns else 1, "layer", layer)
        frames.append(df)
    if not frames:
        return pd.DataFrame({c: [] for c in columns})
    return pd.concat(frames, ignore_index=True)[columns]


def _slot_frame(tr: Trace, suffix: str) -> pd.DataFrame:
    cols = ["sample", "layer", "pos", "slot", "weight"]
    return _per_layer(tr, suffix, lambda l, n: _token_table(tr, n, {"weight": _np(tr[n])}, ["slot"]), cols)


def routing(tr: Trace) -> pd.DataFrame:
    return _slot_frame(tr, "states.hook_routing")


def read_weights(tr: Trace) -> pd.DataFrame:
    return _slot_frame(tr, "states.hook_read_weights")


def gates(tr: Trace, per_dim: bool = False) -> pd.DataFrame:
    frames = []
    for gate, suffix in GATE_SUFFIXES.items():
        for layer, name in tr.layers(suffix).items():
            g = _np(tr[name])  # [B, U, S, Ds]
            pos_name = name.rsplit(".", 1)[0] + ".hook_update_positions"
            B, U, S, Ds = g.shape
            if pos_name in tr:
                upd_pos = _np(tr[pos_name])
            else:
                upd_pos = np.zeros((B, U), dtype=np.int64)
            if not per_dim:
                g = g.mean(-1)
            idx = _grid(g.shape)
            cols = {"sample": idx[0], "layer": np.full(idx[0].shape, layer), "update": idx[1] + tr.step_start(name),
                    "pos": upd_pos[idx[0], idx[1]], "slot": idx[2]}
            if per_dim:
                cols["dim"] = idx[3]
            cols["gate"] = np.full(idx[0].shape, gate, dtype=object)
            cols["value"] = g.reshape(-1)
            df = pd.DataFrame(cols)
            frames.append(df[df["pos"] >= 0] if pos_name in tr else df)
    columns = ["sample", "layer", "update", "pos", "slot"] + (["dim"] if per_dim else []) + ["gate", "value"]
    if not frames:
        return pd.DataFrame({c: [] for c in columns})
    return pd.concat(frames, ignore_index=True)[columns]


def importance(tr: Trace) -> pd.DataFrame:
    rows = []
    for layer, name in tr.layers("states.hook_importance").items():
        imp = _np(tr[name])
        alive_name = name.rsplit(".", 1)[0] + ".hook_alive"
        alive = _np(tr[alive_name]) > 0.5 if alive_name in tr else np.ones_like(imp, dtype=bool)
        rows.append(pd.DataFrame({"layer": layer, "slot": np.arange(imp.shape[0]), "importance": imp, "alive": alive}))
    if not rows:
        return pd.DataFrame({"layer": [], "slot": [], "importance": [], "alive": []})
    return pd.concat(rows, ignore_index=True)


def pruning_events(tr: Trace) -> pd.DataFrame:
    rows = []
    for layer, events in (tr.metadata.get("state_bank_events") or {}).items():
        for e_i, e in enumerate(events):
            imps = e.get("importance") or [math.nan] * len(e.get("slots", []))
            for slot, imp in zip(e.get("slots", []), imps):
                rows.append({"layer": int(layer), "event": e_i, "step": e.get("step"), "kind": e.get("kind"),
                             "slot": int(slot), "importance": float(imp)})
    return pd.DataFrame(rows, columns=["layer", "event", "step", "kind", "slot", "importance"])


def memory_reads(tr: Trace) -> pd.DataFrame:
    cols = ["sample", "layer", "pos", "rank", "slot", "score", "weight"]

    def build(layer: int, name: str) -> pd.DataFrame:
        base = name.rsplit(".", 1)[0]
        vals = {"slot": _np(tr[name])}
        for col, hook in (("score", "hook_read_scores"), ("weight", "hook_read_weights")):
            if f"{base}.{hook}" in tr:
                vals[col] = _np(tr[f"{base}.{hook}"])
            else:
                vals[col] = np.full(vals["slot"].shape, np.nan, dtype=np.float32)
        df = _token_table(tr, name, vals, ["rank"])
        return df[df["slot"] >= 0]

    return _per_layer(tr, "memory.hook_read_slots", build, cols)


def decay(tr: Trace) -> pd.DataFrame:
    rows = []
    for layer, name in tr.layers("attn.hook_decay").items():
        g = _np(tr[name]).astype(np.float64)
        with np.errstate(divide="ignore"):
            hl = np.log(0.5) / np.log(g)
        rows.append(pd.DataFrame({"layer": layer, "head": np.arange(g.shape[0]), "gamma": g, "half_life": hl}))
    if not rows:
        return pd.DataFrame({"layer": [], "head": [], "gamma": [], "half_life": []})
    return pd.concat(rows, ignore_index=True)


def decay_attention(tr: Trace, layer: int = 0, head: int = 0, window: tuple[int, int] | None = None,
                    s_start: int | None = None, sample: int = 0) -> pd.DataFrame:
    from probes.attention import decay_attention_matrix

    A, ts, ss = decay_attention_matrix(tr, layer, head, window=window, s_start=s_start, sample=sample)
    tt, sg = np.meshgrid(ts, ss, indexing="ij")
    keep = sg <= tt
    a = A.numpy()
    return pd.DataFrame({"sample": sample, "layer": layer, "head": head, "t": tt[keep], "s": sg[keep],
                         "weight": a[keep]})


def _token_strings(tr: Trace, ids: np.ndarray, rows: np.ndarray, pos_local: np.ndarray) -> np.ndarray:
    if tr.token_strings is None:
        return np.array([None] * len(rows), dtype=object)
    lookup = tr.token_strings
    return np.array([lookup[r][p] if p < len(lookup[r]) else None for r, p in zip(rows, pos_local)], dtype=object)


def token_loss(tr: Trace) -> pd.DataFrame:
    cols = ["sample", "pos", "token_id", "token", "loss"]
    if "loss.per_token" not in tr:
        return pd.DataFrame({c: [] for c in cols})
    name = "loss.per_token"
    loss = _np(tr[name])
    df = _token_table(tr, name, {"loss": loss}, [])
    toks = tr.tokens
    local = df["pos"].to_numpy() - tr.step_start(name)
    if toks is not None and tuple(toks.shape) == loss.shape:
        df["token_id"] = _np(toks)[df["sample"].to_numpy(), local]
    else:
        df["token_id"] = -1
    df["token"] = _token_strings(tr, None, df["sample"].to_numpy(), local)
    return df[cols].reset_index(drop=True)


def predictions(tr: Trace) -> pd.DataFrame:
    cols = ["sample", "pos", "rank", "token_id", "token", "prob"]
    if "predictions.top_ids" not in tr:
        return pd.DataFrame({c: [] for c in cols})
    name = "predictions.top_ids"
    df = _token_table(tr, name, {"token_id": _np(tr[name]), "prob": _np(tr["predictions.top_probs"])}, ["rank"])
    df["token"] = None
    return df[cols].reset_index(drop=True)


def recurrent(tr: Trace) -> pd.DataFrame:
    cols = ["sample", "layer", "pos", "input_gate_mean", "state_norm", "state_mean"]

    def build(layer: int, name: str) -> pd.DataFrame:
        base = name.rsplit(".", 1)[0]
        st = tr[name].float()
        vals = {"state_norm": _np(st.norm(dim=-1)), "state_mean": _np(st.mean(-1))}
        gname = f"{base}.hook_input_gate"
        vals["input_gate_mean"] = _np(tr[gname].float().mean(-1)) if gname in tr else np.full(st.shape[:2], np.nan)
        return _token_table(tr, name, vals, [])

    return _per_layer(tr, "recurrent.hook_state", build, cols)


def fusion_gate(tr: Trace) -> pd.DataFrame:
    cols = ["sample", "layer", "pos", "gate"]
    return _per_layer(tr, ".hook_fusion_gate",
                      lambda l, n: _token_table(tr, n, {"gate": _np(tr[n].float().mean(-1))}, []), cols)


_BUILDERS: dict[str, tuple[Callable[..., pd.DataFrame], Callable[[Trace], bool]]] = {
    "routing": (routing, lambda tr: bool(tr.layers("states.hook_routing"))),
    "read_weights": (read_weights, lambda tr: bool(tr.layers("states.hook_read_weights"))),
    "gates": (gates, lambda tr: any(tr.layers(s) for s in GATE_SUFFIXES.values())),
    "importance": (importance, lambda tr: bool(tr.layers("states.hook_importance"))),
    "pruning_events": (pruning_events, lambda tr: bool(tr.metadata.get("state_bank_events"))),
    "memory_reads": (memory_reads, lambda tr: bool(tr.layers("memory.hook_read_slots"))),
    "decay": (decay, lambda tr: bool(tr.layers("attn.hook_decay"))),
    "decay_attention": (decay_attention, lambda tr: all(tr.layers(f"attn.hook_{s}") for s in
                                                         ("q_features", "k_features", "decay", "normalizer"))),
    "token_loss": (token_loss, lambda tr: "loss.per_token" in tr),
    "predictions": (predictions, lambda tr: "predictions.top_ids" in tr and "predictions.top_probs" in tr),
    "recurrent": (recurrent, lambda tr: bool(tr.layers("recurrent.hook_state"))),
    "fusion_gate": (fusion_gate, lambda tr: bool(tr.layers(".hook_fusion_gate"))),
}


def available_kinds(tr: Trace) -> list[str]:
    """Frame kinds this trace has the hooks for."""
    return [k for k, (_, ok) in _BUILDERS.items() if ok(tr)]


def frame(tr: Trace, kind: str, **kwargs: Any) -> pd.DataFrame:
    """``tr.frame(kind)``; an unknown kind raises ``ValueError``, one whose hooks were not
    recorded raises ``KeyError``; both list the kinds available."""
    if kind not in _BUILDERS:
        raise ValueError(f"kind: {kind!r} is not a frame kind; known kinds: {list(FRAME_KINDS)}; "
                         f"available in this trace: {available_kinds(tr)}")
    build, ok = _BUILDERS[kind]
    if not ok(tr):
        raise KeyError(f"kind: {kind!r} needs hook sites this trace did not record; available in this "
                       f"trace: {available_kinds(tr)}")
    return build(tr, **kwargs)
