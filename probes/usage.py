"""What a model uses: held-out answer accuracy and loss with each mechanism switched off.

    from probes.usage import checkpoint_usage, measure_usage
    report = checkpoint_usage("checkpoints/story-world-pulse", n=256)   # reads/writes usage.json
    report.frame()        # tidy DataFrame, one row per intervention (the first row: intact)
    report.to_dict()      # JSON-able; UsageReport.from_dict(d) reads it back
    report.markdown()     # the table of a model card
    report.sentence("state_bank")   # one line: how much zeroing the bank read changes accuracy

    report = measure_usage(model, task.make_split("test", 256), loss_name=task.loss_name)

Interventions (each found from the model's hook sites, so only the mechanisms the model has
are listed; every one replaces a value on the forward pass through ``probes.intervene``):

==================  ===============================================  ==========================
mechanism           what is switched off                             hook
==================  ===============================================  ==========================
state_bank          the bank's read := 0 (the bank adds nothing)     ``blocks.{l}.states.hook_read``
memory              the memory read := 0 (``memory_off``)            ``blocks.{l}.memory.hook_read``
recurrent_state     the recurrent state r_t := 0 at every position   ``blocks.{l}.recurrent.hook_state``
linear_attention    the linear-attention output := 0                 ``blocks.{l}.attn.hook_out``
attention           (a model whose attention has no decay) output 0  ``blocks.{l}.attn.hook_out``
convolution         the local convolution's output := 0              ``blocks.{l}.conv.hook_out``
decay_short         one head's decay gamma := 0.5 ** (1 / h), a      ``blocks.{l}.attn.hook_decay``
                    half-life of h tokens (default h = 1; ``set_decay``)
==================  ===============================================  ==========================

Rows are per layer (``layer`` "0", "1", …), and, where a mechanism is in more than one layer,
also switched off in every layer at once (``layer`` "all"); ``decay_short`` rows are per head
(``head``) and every head of every layer (``layer`` "all"). The intact model is the row with
``mechanism`` "intact" (``layer`` "-").

Measures
--------
* ``accuracy``: top-1 next-token prediction at the task's answer positions (``answer_mask``:
  logits at t-1 predict token t), pooled over the answer tokens of all examples, as
  ``pulse.evaluate`` does.
* ``loss``: mean cross entropy on the tokens the model was trained to predict (``labels`` !=
  -100: the answers of an answers-only task, every token of a language model; ``loss_name``
  says which), pooled over those tokens.
* ``answers_changed``: fraction of answer tokens whose top-1 prediction differs from intact.
* ``max_abs_logit_change``: the largest change of any logit at any real position (0 would mean
  the intervention did not change the forward pass).

Confidence intervals: a paired percentile bootstrap over *examples* (rows of the split):
``n_boot`` resamples (default 1000) of the examples with replacement, the same resamples for
every row, so the interval of a change (``delta_*``) is paired with intact. ``confidence``
(default 0.95). ``n_examples``, ``n_answer_tokens`` and ``n_loss_tokens`` give the sample size.

Cache: :func:`checkpoint_usage` keeps the result in the checkpoint folder's ``usage.json``
(atomic write), keyed by :func:`pulse.io.weights_hash` and the measurement settings; a cache
computed for other weights is refused (:class:`UsageCacheError` from :func:`read_usage_cache`;
``checkpoint_usage`` recomputes and replaces it).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from probes.interventions import Intervention, intervene, memory_off, set_decay
from probes.trace import canonical_name, hook_sites, per_token_loss

__all__ = [
    "USAGE_FILE", "USAGE_VERSION", "MECHANISM_NAMES", "UsageCacheError", "Mechanism", "UsageReport",
    "find_mechanisms", "measure_usage", "checkpoint_usage", "read_usage_cache", "write_usage_cache",
    "bootstrap_weights", "bootstrap_ratio",
]

USAGE_FILE = "usage.json"
USAGE_VERSION = 1
FORMAT = "pulse-usage"

# key -> (short name, what the intervention does)
MECHANISM_NAMES: dict[str, tuple[str, str]] = {
    "intact": ("intact", "nothing switched off"),
    "state_bank": ("state bank", "state-bank read := 0"),
    "memory": ("memory", "memory read := 0"),
    "recurrent_state": ("recurrent state", "recurrent state := 0"),
    "linear_attention": ("linear attention", "linear-attention output := 0"),
    "attention": ("attention", "attention output := 0"),
    "convolution": ("convolution", "convolution output := 0"),
    "decay_short": ("attention decay", "head decay set short"),
    "mixer": ("mixer", "mixer output := 0"),  # an adapted family's token mixer (e.g. Mamba's selective SSM)
}
_ZERO_SITES = {  # mechanism -> hook (relative to blocks.{l}.)
    "state_bank": "states.hook_read",
    "recurrent_state": "recurrent.hook_state",
    "convolution": "conv.hook_out",
    "mixer": "mixer.hook_out",
}
_ORDER = ["state_bank", "memory", "recurrent_state", "linear_attention", "attention", "convolution", "decay_short", "mixer"]
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")

COLUMNS = [
    "layer", "mechanism", "head", "label", "intervention",
    "accuracy", "acc_lo", "acc_hi", "delta_accuracy", "delta_acc_lo", "delta_acc_hi",
    "loss", "loss_lo", "loss_hi", "delta_loss", "delta_loss_lo", "delta_loss_hi",
    "answers_changed", "answers_changed_lo", "answers_changed_hi", "max_abs_logit_change",
    "n_examples", "n_answer_tokens", "n_loss_tokens",
]


class UsageCacheError(ValueError):
    """A usage.json that cannot be used: computed for other weights, or not a usage file."""


def _zero(v: torch.Tensor, name: str) -> torch.Tensor:
    return torch.zeros_like(v)


def _zero_intervention(pattern: str, description: str) -> Intervention:
    return Intervention(pattern, _zero, description)


@dataclass
class Mechanism:
    """One row of the usage table: what is switched off, and the interventions that do it."""

    mechanism: str
    layer: str  # "0", "1", ..., "all", or "-" (intact)
    head: int | None
    label: str
    interventions: list[Intervention] = field(default_factory=list)


def _tokens(h: float) -> str:
    return f"{h:g} token{'' if h == 1 else 's'}"


def _num_heads(model: nn.Module, layer: int) -> int:
    mods = {canonical_name(n): m for n, m in model.named_modules()}
    attn = mods.get(f"blocks.{layer}.attn")
    h = getattr(attn, "num_heads", None)
    if not isinstance(h, int) or h < 1:
        raise ValueError(f"blocks.{layer}.attn: cannot tell its number of heads")
    return h


def find_mechanisms(model: nn.Module, short_half_life: float = 1.0, all_layers: bool = True,
                    per_head: bool = True) -> list[Mechanism]:
    """The interventions of the usage table for this model (see the module doc), intact first.
    Only mechanisms whose hook sites the model has are listed."""
    if not short_half_life > 0:
        raise ValueError(f"short_half_life: must be > 0 tokens, got {short_half_life}")
    gamma = 0.5 ** (1.0 / short_half_life)
    sites = hook_sites(model)
    per_layer: dict[str, list[int]] = {k: [] for k in _ORDER}
    for name in sites:
        m = _BLOCK.match(name)
        if not m:
            continue
        layer, rest = int(m.group(1)), m.group(2)
        if rest == "states.hook_read":
            per_layer["state_bank"].append(layer)
        elif rest == "memory.hook_read":
            per_layer["memory"].append(layer)
        elif rest == "recurrent.hook_state":
            per_layer["recurrent_state"].append(layer)
        elif rest == "conv.hook_out":
            per_layer["convolution"].append(layer)
        elif rest == "mixer.hook_out":
            per_layer["mixer"].append(layer)
        elif rest == "attn.hook_out":
            kind = "linear_attention" if f"blocks.{layer}.attn.hook_decay" in sites else "attention"
            per_layer[kind].append(layer)
            if kind == "linear_attention":
                per_layer["decay_short"].append(layer)
    hl = _tokens(short_half_life)
    out = [Mechanism("intact", "-", None, "intact", [])]

    def ivs(kind: str, layer: int) -> list[Intervention]:
        if kind == "memory":
            return [memory_off(layer)]
        if kind in ("linear_attention", "attention"):
            return [_zero_intervention(f"blocks.{layer}.attn.hook_out", f"{kind}_off({layer})")]
        if kind == "decay_short":
            return [set_decay(layer, h, gamma) for h in range(_num_heads(model, layer))]
        return [_zero_intervention(f"blocks.{layer}.{_ZERO_SITES[kind]}", f"{kind}_off({layer})")]

    for kind in _ORDER:
        layers = sorted(set(per_layer[kind]))
        if not layers:
            continue
        short, what = MECHANISM_NAMES[kind]
        if kind == "decay_short":
            for layer in layers:
                if per_head:
                    for h in range(_num_heads(model, layer)):
                        out.append(Mechanism(kind, str(layer), h, f"L{layer} head {h} decay half-life → {hl}",
                                             [set_decay(layer, h, gamma)]))
                else:
                    out.append(Mechanism(kind, str(layer), None, f"L{layer} every head's decay half-life → {hl}",
                                         ivs(kind, layer)))
        else:
            for layer in layers:
                out.append(Mechanism(kind, str(layer), None, f"L{layer} {what}", ivs(kind, layer)))
        if all_layers and (len(layers) > 1 or (kind == "decay_short" and per_head)):
            scope = "all layers" if len(layers) > 1 else f"L{layers[0]}"
            label = (f"{scope}: every head's decay half-life → {hl}" if kind == "decay_short"
                     else f"{scope}: {what}")
            out.append(Mechanism(kind, "all", None, label, [iv for layer in layers for iv in ivs(kind, layer)]))
    return out


# ------------------------------------------------------------------ bootstrap
def bootstrap_weights(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """[n_boot, n] counts: how often each of ``n`` examples is drawn in each resample."""
    if n < 1:
        raise ValueError(f"n: need at least one example, got {n}")
    if n_boot < 1:
        raise ValueError(f"n_boot: must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _ratio(w: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ num) / (w @ den)


def bootstrap_ratio(num: Sequence[float], den: Sequence[float], weights: np.ndarray | None = None,
                    n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(point, lo, hi) of ``sum(num) / sum(den)`` over examples, with a percentile bootstrap
    interval over examples (``weights`` from :func:`bootstrap_weights`, else drawn here)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"num, den: expected two 1-D arrays of one length, got {num.shape} and {den.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    w = bootstrap_weights(len(num), n_boot, seed) if weights is None else weights
    point = float(num.sum() / den.sum()) if den.sum() > 0 else float("nan")
    stats = _ratio(w, num, den)
    stats = stats[np.isfinite(stats)]
    if not stats.size:
        return point, float("nan"), float("nan")
    a = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [a, 1 - a])
    return point, float(lo), float(hi)


# ------------------------------------------------------------------ measuring
@dataclass
class _Acc:
    correct: list[np.ndarray] = field(default_factory=list)
    changed: list[np.ndarray] = field(default_factory=list)
    loss_sum: list[np.ndarray] = field(default_factory=list)
    max_change: float = 0.0

    def cat(self, name: str) -> np.ndarray:
        return np.concatenate(getattr(self, name))


def _answer_stats(logits: torch.Tensor, ids: torch.Tensor, answer: torch.Tensor, labels: torch.Tensor,
                  attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per example: (correct answers, loss sum on label tokens, top-1 ids at answer positions [B, T-1])."""
    top1 = logits[:, :-1].argmax(-1)
    correct = ((top1 == ids[:, 1:]) & answer).sum(1)
    loss = per_token_loss(logits, labels, attn)
    return correct, torch.nan_to_num(loss, nan=0.0).double().sum(1), top1


def _clean(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


@torch.no_grad()
def measure_usage(model: nn.Module, data: Mapping[str, torch.Tensor], *, mechanisms: Sequence[Mechanism] | None = None,
                  n_boot: int = 1000, confidence: float = 0.95, seed: int = 0, batch_size: int = 128,
                  short_half_life: float = 1.0, all_layers: bool = True, per_head: bool = True,
                  device: str | torch.device | None = None, loss_name: str = "loss on the labelled tokens",
                  progress: Callable[[int, int], None] | None = None) -> "UsageReport":
    """The usage table of ``model`` on ``data`` (a split dict: ``input_ids``, ``labels`` (-100 =
    not trained), ``attention_mask``, ``answer_mask``). See the module doc for every column."""
    for k in ("input_ids", "labels", "attention_mask", "answer_mask"):
        if k not in data:
            raise ValueError(f"data: missing {k!r} (expected a task.make_split(...) dict)")
    ids_all = data["input_ids"]
    n = int(ids_all.shape[0])
    if n < 2:
        raise ValueError(f"data: need at least 2 examples for a bootstrap, got {n}")
    mechs = list(mechanisms) if mechanisms is not None else find_mechanisms(model, short_half_life, all_layers, per_head)
    if not mechs or mechs[0].mechanism != "intact":
        mechs = [Mechanism("intact", "-", None, "intact", [])] + [m for m in mechs if m.mechanism != "intact"]
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    answer_all = data["answer_mask"].bool()
    attn_all = data["attention_mask"]
    labels_all = data["labels"].masked_fill(attn_all == 0, -100)
    answers = (answer_all[:, 1:] & (attn_all[:, 1:] > 0)).sum(1).numpy().astype(np.float64)
    loss_tokens = (labels_all[:, 1:] != -100).sum(1).numpy().astype(np.float64)
    targets = ids_all[:, 1:][answer_all[:, 1:] & (attn_all[:, 1:] > 0)]
    if targets.numel():
        counts = torch.bincount(targets)
        chance, n_distinct = float(counts.max()) / targets.numel(), int((counts > 0).sum())
    else:
        chance, n_distinct = float("nan"), 0

    acc = [_Acc() for _ in mechs]
    was_training = model.training
    model.eval()
    t_start = time.time()
    steps, total_steps = 0, len(mechs) * math.ceil(n / batch_size)
    try:
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            ids, attn = ids_all[sl].to(dev), attn_all[sl].to(dev)
            answer = (answer_all[sl][:, 1:] & (attn_all[sl][:, 1:] > 0)).to(dev)
            labels = labels_all[sl].to(dev)
            base_logits, base_top1 = None, None
            for i, mech in enumerate(mechs):
                with intervene(model, *mech.interventions):
                    logits = model(ids, attention_mask=attn)["logits"].float()
                correct, loss_sum, top1 = _answer_stats(logits, ids, answer, labels, attn)
                if i == 0:
                    base_logits, base_top1 = logits, top1
                    changed = torch.zeros_like(correct)
                    acc[i].max_change = 0.0
                else:
                    changed = ((top1 != base_top1) & answer).sum(1)
                    real = attn.bool()
                    acc[i].max_change = max(acc[i].max_change,
                                            float((logits - base_logits).abs().amax(-1)[real].max()) if real.any() else 0.0)
                acc[i].correct.append(correct.cpu().numpy().astype(np.float64))
                acc[i].changed.append(changed.cpu().numpy().astype(np.float64))
                acc[i].loss_sum.append(loss_sum.cpu().numpy())
                steps += 1
                if progress is not None:
                    progress(steps, total_steps)
    finally:
        model.train(was_training)

    w = bootstrap_weights(n, n_boot, seed)
    a = (1 - confidence) / 2

    def ci(stats: np.ndarray) -> tuple[float, float]:
        stats = stats[np.isfinite(stats)]
        if not stats.size:
            return float("nan"), float("nan")
        lo, hi = np.quantile(stats, [a, 1 - a])
        return float(lo), float(hi)

    def point(num: np.ndarray, den: np.ndarray) -> float:
        return float(num.sum() / den.sum()) if den.sum() > 0 else float("nan")

    base_c, base_l = acc[0].cat("correct"), acc[0].cat("loss_sum")
    rows = []
    for mech, s in zip(mechs, acc):
        c, l, ch = s.cat("correct"), s.cat("loss_sum"), s.cat("changed")
        acc_lo, acc_hi = ci(_ratio(w, c, answers))
        loss_lo, loss_hi = ci(_ratio(w, l, loss_tokens))
        dacc_lo, dacc_hi = ci(_ratio(w, c - base_c, answers))
        dloss_lo, dloss_hi = ci(_ratio(w, l - base_l, loss_tokens))
        ch_lo, ch_hi = ci(_ratio(w, ch, answers))
        rows.append({
            "layer": mech.layer, "mechanism": mech.mechanism, "head": mech.head, "label": mech.label,
            "intervention": "; ".join(repr(iv) for iv in mech.interventions) or "none",
            "accuracy": point(c, answers), "acc_lo": acc_lo, "acc_hi": acc_hi,
            "delta_accuracy": point(c - base_c, answers), "delta_acc_lo": dacc_lo, "delta_acc_hi": dacc_hi,
            "loss": point(l, loss_tokens), "loss_lo": loss_lo, "loss_hi": loss_hi,
            "delta_loss": point(l - base_l, loss_tokens), "delta_loss_lo": dloss_lo, "delta_loss_hi": dloss_hi,
            "answers_changed": point(ch, answers), "answers_changed_lo": ch_lo, "answers_changed_hi": ch_hi,
            "max_abs_logit_change": s.max_change,
            "n_examples": n, "n_answer_tokens": int(answers.sum()), "n_loss_tokens": int(loss_tokens.sum()),
        })
    meta = {
        "n_examples": n, "n_answer_tokens": int(answers.sum()), "n_loss_tokens": int(loss_tokens.sum()),
        "n_boot": int(n_boot), "confidence": float(confidence), "seed": int(seed),
        "short_half_life": float(short_half_life), "loss_name": loss_name,
        "chance_accuracy": chance, "chance_rule": "always the most frequent answer token of this split",
        "n_distinct_answers": n_distinct, "device": str(dev), "seconds": round(time.time() - t_start, 2),
        "ci_method": f"paired percentile bootstrap over examples, {n_boot} resamples",
    }
    return UsageReport(rows=[{k: _clean(v) for k, v in r.items()} for r in rows], meta=meta)


# ------------------------------------------------------------------ the report
def _fmt_ci(x: float | None, lo: float | None, hi: float | None, digits: int = 3, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    if lo is None or hi is None:
        return f.format(x)
    return f"{f.format(x)} [{f.format(lo)}, {f.format(hi)}]"


@dataclass
class UsageReport:
    """The usage table: ``rows`` (dicts with :data:`COLUMNS`), ``meta`` (sample size, bootstrap
    settings, chance, loss name, and for a checkpoint: its path, weights hash, task and split)."""

    rows: list[dict[str, Any]]
    meta: dict[str, Any]
    source: str = "computed"  # "computed" or "cache" (read from usage.json)

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=COLUMNS)
        df["head"] = df["head"].astype("Int64")
        for c in COLUMNS:
            if c not in ("layer", "mechanism", "head", "label", "intervention") and c not in \
                    ("n_examples", "n_answer_tokens", "n_loss_tokens"):
                df[c] = df[c].astype(float)
        return df

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": USAGE_VERSION, "meta": self.meta, "rows": self.rows}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "cache") -> "UsageReport":
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise UsageCacheError("not a usage table (no format 'pulse-usage')")
        if d.get("version") != USAGE_VERSION:
            raise UsageCacheError(f"usage table version {d.get('version')!r}, this code reads {USAGE_VERSION}")
        rows, meta = d.get("rows"), d.get("meta")
        if not isinstance(rows, list) or not isinstance(meta, dict) or not rows or \
                any(not isinstance(r, dict) or set(COLUMNS) - set(r) for r in rows):
            raise UsageCacheError("usage table: rows or meta missing or incomplete")
        return cls(rows=[dict(r) for r in rows], meta=dict(meta), source=source)

    @property
    def intact(self) -> dict[str, Any]:
        return self.rows[0]

    @property
    def n(self) -> int:
        return int(self.meta["n_examples"])

    def mechanisms(self) -> list[str]:
        """The mechanism keys present (intact excluded), in table order."""
        seen: list[str] = []
        for r in self.rows[1:]:
            if r["mechanism"] not in seen:
                seen.append(r["mechanism"])
        return seen

    def row(self, mechanism: str, layer: str | int | None = None) -> dict[str, Any] | None:
        """The row of ``mechanism`` in ``layer`` (default: every layer at once, or the only layer)."""
        rows = [r for r in self.rows if r["mechanism"] == mechanism and r["head"] is None]
        if not rows:
            return None
        if layer is None:
            alls = [r for r in rows if r["layer"] == "all"]
            return alls[0] if alls else (rows[0] if len(rows) == 1 else max(rows, key=lambda r: -r["delta_accuracy"]
                                                                              if r["delta_accuracy"] is not None else 0))
        return next((r for r in rows if r["layer"] == str(layer)), None)

    def sentence(self, mechanism: str, layer: str | int | None = None) -> str:
        """One line: how much switching ``mechanism`` off changes answer accuracy (and loss)."""
        r = self.row(mechanism, layer)
        short, what = MECHANISM_NAMES.get(mechanism, (mechanism, mechanism))
        if r is None:
            return f"This model has no {short}."
        where = "in every layer" if r["layer"] == "all" else f"in layer {r['layer']}"
        d, lo, hi = r["delta_accuracy"], r["delta_acc_lo"], r["delta_acc_hi"]
        verb = {"state_bank": "Zeroing the state-bank read", "memory": "Zeroing the memory read",
                "recurrent_state": "Zeroing the recurrent state", "linear_attention": "Zeroing the linear-attention output",
                "attention": "Zeroing the attention output", "convolution": "Zeroing the convolution output",
                "decay_short": f"Setting every head's decay half-life to {_tokens(self.meta.get('short_half_life', 1.0))}"}
        head = verb.get(mechanism, f"Switching off {short}")
        text = (f"{head} {where} changes held-out answer accuracy by {_fmt_ci(d, lo, hi, 3, sign=True)} "
                f"(from {_fmt_ci(self.intact['accuracy'], None, None)}; n={self.n} examples, "
                f"{r['n_answer_tokens']} answers, {int(round(100 * self.meta['confidence']))}% bootstrap CI) "
                f"and the {self.meta.get('loss_name', 'loss')} by {_fmt_ci(r['delta_loss'], r['delta_loss_lo'], r['delta_loss_hi'], 3, sign=True)} nats")
        if d is None or lo is None or hi is None:
            return text + "."
        chance = self.meta.get("chance_accuracy")
        if hi < 0 and lo <= -0.05:
            tail = f": this model relies on its {short}"
            if chance is not None and r["accuracy"] is not None and r["accuracy"] <= chance + 0.05:
                tail += " (without it, accuracy is near chance)"
        elif lo <= 0 <= hi or max(abs(lo), abs(hi)) < 0.01:
            tail = f": this model does not need its {short} for its answers"
        else:
            tail = f": the {short} matters a little"
        return text + tail + "."

    def markdown(self, heads: bool = True) -> str:
        """The table of a model card (Markdown), with its sample size and method."""
        m = self.meta
        pct = int(round(100 * m["confidence"]))
        where = f" of `{m['task']}`, split `{m['split']}`" if m.get("task") else ""
        lines = [
            f"Held-out answer accuracy and {m.get('loss_name', 'loss')} with each mechanism switched off "
            f"(`probes.usage`, n = {m['n_examples']} examples{where}, {m['n_answer_tokens']} answer tokens; "
            f"[{pct}% paired bootstrap CI over examples, {m['n_boot']} resamples]). Chance "
            f"(always the most frequent answer): {m['chance_accuracy']:.3f}."
            + (f" Weights hash `{m['weights_hash']}`." if m.get("weights_hash") else ""),
            "",
            "| switched off | answer accuracy | change | loss (nats) | change | answers changed |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            if not heads and r["head"] is not None:
                continue
            lines.append(
                f"| {r['label']} | {_fmt_ci(r['accuracy'], r['acc_lo'], r['acc_hi'])} | "
                f"{'—' if r['mechanism'] == 'intact' else _fmt_ci(r['delta_accuracy'], r['delta_acc_lo'], r['delta_acc_hi'], sign=True)} | "
                f"{_fmt_ci(r['loss'], r['loss_lo'], r['loss_hi'])} | "
                f"{'—' if r['mechanism'] == 'intact' else _fmt_ci(r['delta_loss'], r['delta_loss_lo'], r['delta_loss_hi'], sign=True)} | "
                f"{'—' if r['mechanism'] == 'intact' else _fmt_ci(r['answers_changed'], None, None)} |")
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ checkpoints and the cache
def _settings(n: int, split: str, n_boot: int, confidence: float, seed: int, short_half_life: float,
              seq_len: int | None) -> dict[str, Any]:
    return {"n": int(n), "split": split, "n_boot": int(n_boot), "confidence": float(confidence), "seed": int(seed),
            "short_half_life": float(short_half_life), "seq_len": seq_len}


def read_usage_cache(folder: str | os.PathLike, weights_hash: str,
                     settings: Mapping[str, Any] | None = None) -> UsageReport | None:
    """The cached report in ``folder/usage.json``; None when there is none or it was measured with
    other ``settings``. Raises :class:`UsageCacheError` when it was computed for other weights
    (``weights_hash`` differs) or is not a usage table."""
    path = Path(folder) / USAGE_FILE
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageCacheError(f"{path}: not JSON ({e})") from None
    report = UsageReport.from_dict(d)
    cached = report.meta.get("weights_hash")
    if cached != weights_hash:
        raise UsageCacheError(f"{path}: stale, computed for weights {cached!r}, the checkpoint's weights are "
                              f"{weights_hash!r}")
    if settings is not None and report.meta.get("settings") != dict(settings):
        return None
    return report


def write_usage_cache(folder: str | os.PathLike, report: UsageReport) -> Path:
    """Write ``report`` to ``folder/usage.json`` atomically (it must carry its weights hash)."""
    from pulse.io import atomic_write_text

    if not report.meta.get("weights_hash"):
        raise ValueError("report: has no weights_hash; only a checkpoint's report can be cached")
    path = Path(folder) / USAGE_FILE
    atomic_write_text(path, json.dumps(report.to_dict(), indent=1, sort_keys=True, allow_nan=False) + "\n")
    return path


def checkpoint_usage(folder: str | os.PathLike, n: int = 256, split: str | None = None, *, n_boot: int = 1000,
                     confidence: float = 0.95, seed: int = 0, short_half_life: float = 1.0,
                     device: str | torch.device = "cpu", use_cache: bool = True, write: bool = True,
                     model: nn.Module | None = None, batch_size: int = 128,
                     progress: Callable[[int, int], None] | None = None) -> UsageReport:
    """The usage table of the checkpoint in ``folder`` on ``n`` examples of its task's held-out
    ``split`` (default ``test``; ``eval`` for text), read from ``usage.json`` when it was computed
    for these weights and settings, else measured (and written when ``write``). A cache for other
    weights is never used. ``model``: the folder's model already loaded (else loaded here)."""
    from pulse.data import load_task
    from pulse.io import read_json_object, weights_hash

    folder = Path(folder)
    if model is None:
        from probes.adapters import load_pretrained  # PULSE folders, and adapted families' (hook sites on)

        model = load_pretrained(folder, device=device)
    task, record = load_task(folder)
    if split is None:
        split = "eval" if record.get("name") == "text" else "test"
    seq_len = None
    if (folder / "training.json").is_file():
        seq_len = read_json_object(folder / "training.json", "").get("train", {}).get("seq_len")
    settings = _settings(n, split, n_boot, confidence, seed, short_half_life, seq_len)
    wh = weights_hash(model)
    if use_cache:
        try:
            cached = read_usage_cache(folder, wh, settings)
        except UsageCacheError:
            cached = None  # stale or broken: measured afresh below (and replaced when writing)
        if cached is not None:
            return cached
    data = task.make_split(split, n=n, seq_len=seq_len)
    report = measure_usage(model, data, n_boot=n_boot, confidence=confidence, seed=seed, batch_size=batch_size,
                           short_half_life=short_half_life, device=device, loss_name=task.loss_name,
                           progress=progress)
    report.meta.update({"checkpoint": str(folder), "weights_hash": wh, "task": record.get("name"), "split": split,
                        "settings": settings})
    if write:
        write_usage_cache(folder, report)
    return report
