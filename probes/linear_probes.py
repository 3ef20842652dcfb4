"""Linear probes: multinomial logistic regression from traced features to ground-truth labels.

    feats = {"resid_post.L0": token_features(tr, "blocks.0.hook_resid_post"),
             **slot_token_features(tr, layer=0)}                 # name -> [N, F]
    table = run_probes(feats, labels)                             # DataFrame

``fit_softmax_probe`` is a small, deterministic torch softmax regression (full-batch L-BFGS,
L2 weight decay, standardised features); sklearn is not needed. ``run_probes`` splits the
examples once (seeded), fits one probe per feature set and reports test accuracy next to
the majority-class baseline (the most frequent training label, scored on the test set).
Labels are integers; ``-1`` marks examples to skip (e.g. tokens without ground truth).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from probes.trace import Trace


@dataclass
class SoftmaxProbe:
    weight: torch.Tensor  # [F, C]
    bias: torch.Tensor  # [C]
    mean: torch.Tensor  # [F]
    std: torch.Tensor  # [F]
    classes: torch.Tensor  # [C] original label values

    def predict(self, X: np.ndarray | torch.Tensor) -> np.ndarray:
        X = torch.as_tensor(np.asarray(X), dtype=torch.float64)
        z = ((X - self.mean) / self.std) @ self.weight + self.bias
        return self.classes[z.argmax(-1)].numpy()

    def accuracy(self, X, y) -> float:
        y = np.asarray(y)
        return float((self.predict(X) == y).mean()) if len(y) else float("nan")


def fit_softmax_probe(X: np.ndarray | torch.Tensor, y: np.ndarray | Sequence[int], weight_decay: float = 1e-3,
                      max_iter: int = 200) -> SoftmaxProbe:
    """Fit softmax regression (mean cross entropy + ``weight_decay * |W|^2``) by L-BFGS from
    zeros, in float64: deterministic for the same data."""
    X = torch.as_tensor(np.asarray(X), dtype=torch.float64)
    y = np.asarray(y)
    if X.dim() != 2 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X: expected [N, F] matching y [N], got {tuple(X.shape)} and {y.shape}")
    classes, yi = np.unique(y, return_inverse=True)
    mean, std = X.mean(0), X.std(0).clamp_min(1e-8)
    Xs = (X - mean) / std
    C = len(classes)
    W = torch.zeros(X.shape[1], C, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(C, dtype=torch.float64, requires_grad=True)
    target = torch.as_tensor(yi, dtype=torch.long)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Xs @ W + b, target) + weight_decay * (W * W).sum()
        loss.backward()
        return loss

    if C > 1:
        opt.step(closure)
    return SoftmaxProbe(W.detach(), b.detach(), mean, std, torch.as_tensor(classes))


def train_test_split(n: int, test_fraction: float = 0.3, seed: int = 0,
                     groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test). With ``groups`` [n] (e.g. the sample each token comes from),
    whole groups go to one side, so neighbouring tokens of one text never straddle the split."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        k = max(1, int(round(n * test_fraction)))
        return np.sort(perm[k:]), np.sort(perm[:k])
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups: expected shape ({n},), got {groups.shape}")
    ids = np.unique(groups)
    if len(ids) < 2:
        raise ValueError("groups: need at least two groups to split by group")
    perm = rng.permutation(ids)
    k = min(len(ids) - 1, max(1, int(round(len(ids) * test_fraction))))
    test = np.isin(groups, perm[:k])
    return np.flatnonzero(~test), np.flatnonzero(test)


def _meta_from_name(name: str) -> dict[str, int | None]:
    layer = re.search(r"(?:^|\.)L(\d+)(?:\.|$)", name) or re.search(r"blocks\.(\d+)\.", name)
    slot = re.search(r"(?:^|\.)slot(\d+)(?:\.|$)", name)
    return {"layer": int(layer.group(1)) if layer else None, "slot": int(slot.group(1)) if slot else None}


def run_probes(features: Mapping[str, np.ndarray | torch.Tensor], labels: np.ndarray | Sequence[int],
               test_fraction: float = 0.3, seed: int = 0, weight_decay: float = 1e-3,
               groups: np.ndarray | Sequence[int] | None = None) -> pd.DataFrame:
    """One probe per feature set (each ``[N, F]``, rows aligned with ``labels`` [N]).
    ``groups`` [N] (e.g. the sample index of each token row) splits train/test by group, so
    tokens of one text are never on both sides; labels < 0 are left out.

    Returns a DataFrame: feature, layer, slot (parsed from names like ``"slots.L0.slot2"``,
    else None), n_train, n_test, n_classes, train_accuracy, accuracy (test), majority_baseline,
    above_baseline."""
    y = np.asarray(labels)
    keep = y >= 0
    group_keep = None if groups is None else np.asarray(groups)[keep]
    train, test = train_test_split(int(keep.sum()), test_fraction, seed, group_keep)
    rows = []
    for name, X in features.items():
        X = np.asarray(X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else X, dtype=np.float64)
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"features[{name!r}]: {X.shape[0]} rows for {y.shape[0]} labels")
        Xk, yk = X[keep], y[keep]
        probe = fit_softmax_probe(Xk[train], yk[train], weight_decay)
        vals, counts = np.unique(yk[train], return_counts=True)
        majority = vals[np.argmax(counts)]
        acc = probe.accuracy(Xk[test], yk[test])
        base = float((yk[test] == majority).mean())
        rows.append({"feature": name, **_meta_from_name(name), "n_train": len(train), "n_test": len(test),
                     "n_classes": len(np.unique(yk)), "train_accuracy": probe.accuracy(Xk[train], yk[train]),
                     "accuracy": acc, "majority_baseline": base, "above_baseline": acc - base})
    return pd.DataFrame(rows)


def token_features(tr: Trace, name: str) -> np.ndarray:
    """[B*T, D] features of a per-token hook ``[B, T, D]`` (rows in (sample, pos) order)."""
    t = tr[name]
    if t.dim() != 3:
        raise ValueError(f"name: {name} has shape {tuple(t.shape)}, expected [B, T, D]")
    return t.reshape(-1, t.shape[-1]).float().numpy()


def slot_token_features(tr: Trace, layer: int) -> dict[str, np.ndarray]:
    """Per-token view of the bank: for each slot s, ``[B*T, Ds]`` = the slot's value after the
    last update completed at or before each token (``states.hook_slots`` aligned by
    ``states.hook_update_positions``; zeros before the first update of the trace).
    Keys ``"slots.L{layer}.slot{s}"``."""
    base = f"blocks.{layer}.states"
    slots = tr[f"{base}.hook_slots"]  # [B, U, S, Ds]
    pos = tr[f"{base}.hook_update_positions"]  # [B, U] absolute
    B, U, S, Ds = slots.shape
    T = tr.tokens.shape[1] if tr.tokens is not None else int(pos.max().item()) + 1
    out = torch.zeros(B, T, S, Ds, dtype=torch.float32)
    t_abs = torch.arange(T) + tr.pos_start
    for b in range(B):
        for u in range(U):
            p = int(pos[b, u])
            if p < 0:
                continue
            out[b, t_abs >= p] = slots[b, u].float()
    return {f"slots.L{layer}.slot{s}": out[:, :, s].reshape(B * T, Ds).numpy() for s in range(S)}


def story_location_labels(story, entity: str, places: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Per-token label of ``entity``'s location after reading each token of a story-world
    story (index into ``places``; -1 while unknown). Returns (labels [len(story)], places)."""
    places = list(places) if places is not None else sorted(
        {loc[entity] for loc in story.locations if loc.get(entity) is not None})
    index = {p: i for i, p in enumerate(places)}
    labels = np.array([index.get(loc.get(entity), -1) if loc.get(entity) is not None else -1
                       for loc in story.locations], dtype=np.int64)
    return labels, places
