"""Claim checks: each returns ``{claim, statistic, value, verdict, details}`` with
``verdict`` in ``("supported", "not supported", "inconclusive")``.

Verdict rules (conservative, stated once here and in each ``details["rule"]``):

* correlation claims (``importance_predicts_ablation``, ``slower_decay_attends_further``):
  Spearman rho with its two-sided p-value; fewer than ``min_points`` (5) points ->
  inconclusive; p < alpha (0.05) and rho > 0 -> supported; p < alpha and rho < 0 -> not
  supported; otherwise inconclusive below 10 points and not supported from 10 points on.
* ``slot_specialisation``: mutual information (nats, plug-in) between the argmax routed slot
  and the token category, against ``n_shuffles`` category permutations. supported if the
  permutation p-value < alpha *and* MI exceeds twice the shuffled mean; not supported if
  p >= alpha with at least 200 tokens; else inconclusive.
* ``pruning_beats_random``: mean loss change when pruning the lowest-importance half of each
  bank vs. ``n_random`` random halves of the same size. Inconclusive when importances are
  (nearly) all equal (range < 1e-6: the ranking carries no information); supported if the
  lowest-importance half hurts less than *every* random half; not supported if it hurts
  more than the median random half; otherwise inconclusive.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from probes.interventions import ablate_slot, compare, intervene, prune_slots
from probes.trace import Trace, per_token_loss

ALPHA = 0.05
MIN_POINTS = 5


def _result(claim: str, statistic: str, value: float, verdict: str, **details: Any) -> dict[str, Any]:
    return {"claim": claim, "statistic": statistic, "value": float(value) if value is not None else float("nan"),
            "verdict": verdict, "details": details}


def _correlation_verdict(rho: float, p: float, n: int, min_points: int = MIN_POINTS, alpha: float = ALPHA) -> str:
    if n < min_points or not np.isfinite(rho):
        return "inconclusive"
    if p < alpha:
        return "supported" if rho > 0 else "not supported"
    return "inconclusive" if n < 10 else "not supported"


_CORR_RULE = ("n < 5 -> inconclusive; p < 0.05 & rho > 0 -> supported; p < 0.05 & rho < 0 -> not supported; "
              "else inconclusive (n < 10) / not supported (n >= 10)")


def _banks(model: nn.Module, layers: Sequence[int] | None) -> list[tuple[int, nn.Module]]:
    banks = list(model.state_banks()) if hasattr(model, "state_banks") else []
    if layers is not None:
        banks = [(i, b) for i, b in banks if i in set(layers)]
    if not banks:
        raise ValueError("model: no state bank (config num_states = 0) in the chosen layers")
    return banks


def _mean_loss(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor | None,
               attention_mask: torch.Tensor | None) -> float:
    with torch.no_grad():
        logits = model(input_ids, attention_mask=attention_mask)["logits"]
    return float(torch.nanmean(per_token_loss(logits, input_ids if labels is None else labels, attention_mask)))


def importance_predicts_ablation(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                                 layers: Sequence[int] | None = None, attention_mask: torch.Tensor | None = None,
                                 mode: str = "zero") -> dict[str, Any]:
    """Spearman correlation between each alive slot's learned importance and the mean loss
    increase when that slot is ablated (``ablate_slot``)."""
    points = []
    for layer, bank in _banks(model, layers):
        imp = bank.get_importance_scores()
        for s in range(imp.numel()):
            if not bool(bank.alive[s]):
                continue
            res = compare(model, input_ids, [ablate_slot(layer, s, mode)], labels=labels, attention_mask=attention_mask)
            points.append({"layer": layer, "slot": s, "importance": float(imp[s]),
                           "delta_loss": res.summary()["mean_delta_loss"]})
    x = [p["importance"] for p in points]
    y = [p["delta_loss"] for p in points]
    if len(points) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0:
        rho, p = spearmanr(x, y)
        rho, p = float(rho), float(p)
    else:
        rho, p = float("nan"), float("nan")
    return _result("importance_predicts_ablation", "spearman_rho", rho, _correlation_verdict(rho, p, len(points)),
                   p_value=p, n=len(points), points=points, rule=_CORR_RULE)


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) between two integer label arrays."""
    a = np.asarray(a)
    b = np.asarray(b)
    if len(a) == 0:
        return 0.0
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def slot_specialisation(tr: Trace, categories: np.ndarray | Sequence, layer: int = 0, n_shuffles: int = 200,
                        seed: int = 0) -> dict[str, Any]:
    """MI between the argmax routed slot (``states.hook_routing``) and the token category.
    ``categories``: [B, T] or flat [B*T] labels (ints or strings; None/-1 = skip); padding
    positions are skipped."""
    routing = tr[f"blocks.{layer}.states.hook_routing"]  # [B, T, S]
    B, T, S = routing.shape
    cats = np.asarray(categories, dtype=object).reshape(-1)
    if cats.shape[0] != B * T:
        raise ValueError(f"categories: {cats.shape[0]} labels for {B}x{T} tokens")
    slot = routing.argmax(-1).reshape(-1).numpy()
    keep = np.array([c is not None and not (isinstance(c, (int, np.integer)) and c < 0) for c in cats])
    mask = tr.attention_mask
    if mask is not None and tuple(mask.shape) == (B, T):
        keep &= mask.reshape(-1).numpy() > 0.5
    keep &= routing.sum(-1).reshape(-1).numpy() > 0
    cat_codes = np.unique(cats[keep].astype(str), return_inverse=True)[1] if keep.any() else np.array([], int)
    slot_k = slot[keep]
    mi = mutual_information(slot_k, cat_codes)
    rng = np.random.default_rng(seed)
    null = np.array([mutual_information(slot_k, rng.permutation(cat_codes)) for _ in range(n_shuffles)])
    p = float((1 + (null >= mi - 1e-12).sum()) / (1 + n_shuffles))
    null_mean = float(null.mean()) if n_shuffles else float("nan")
    n = int(keep.sum())
    if p < ALPHA and mi > 2 * null_mean:
        verdict = "supported"
    elif p >= ALPHA and n >= 200:
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    return _result("slot_specialisation", "mutual_information_nats", mi, verdict, p_value=p,
                   shuffled_mean=null_mean, n_tokens=n, n_slots_used=int(len(np.unique(slot_k))), layer=layer,
                   rule="p < 0.05 & MI > 2x shuffled mean -> supported; p >= 0.05 & n >= 200 -> not supported; "
                        "else inconclusive")


def pruning_beats_random(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                         layers: Sequence[int] | None = None, n_random: int = 8, seed: int = 0,
                         attention_mask: torch.Tensor | None = None) -> dict[str, Any]:
    """Loss change when pruning the lowest-importance half of every bank vs random halves."""
    banks = _banks(model, layers)
    base = _mean_loss(model, input_ids, labels, attention_mask)
    alive = {i: [s for s in range(b.alive.numel()) if bool(b.alive[s])] for i, b in banks}
    imps = {i: b.get_importance_scores() for i, b in banks}
    half = {i: len(alive[i]) // 2 for i, _ in banks}
    lowest = {i: sorted(alive[i], key=lambda s: (float(imps[i][s]), s))[:half[i]] for i, _ in banks}

    def delta(choice: dict[int, list[int]]) -> float:
        with intervene(model, *[prune_slots(i, sl) for i, sl in choice.items() if sl]):
            return _mean_loss(model, input_ids, labels, attention_mask) - base

    d_low = delta(lowest)
    rng = np.random.default_rng(seed)
    d_rand = [delta({i: sorted(rng.choice(alive[i], size=half[i], replace=False).tolist()) for i, _ in banks})
              for _ in range(n_random)]
    spread = max(float(imps[i][alive[i]].max() - imps[i][alive[i]].min()) for i, _ in banks)
    stat = d_low - float(np.mean(d_rand))
    if spread < 1e-6 or all(h == 0 for h in half.values()):
        verdict = "inconclusive"
    elif d_low < min(d_rand):
        verdict = "supported"
    elif d_low > float(np.median(d_rand)):
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    return _result("pruning_beats_random", "delta_lowest_minus_mean_random", stat, verdict,
                   delta_lowest=d_low, delta_random=d_rand, lowest=lowest, importance_range=spread, base_loss=base,
                   rule="importance range < 1e-6 -> inconclusive; lowest < all random -> supported; "
                        "lowest > median random -> not supported; else inconclusive")


def slower_decay_attends_further(tr: Trace, window: tuple[int, int] | None = None, sample: int = 0) -> dict[str, Any]:
    """Spearman between each head's half-life and its measured mean attention distance
    (from the materialised decay-weighted attention, probes.attention.head_summary)."""
    from probes.attention import head_summary

    df = head_summary(tr, window=window, sample=sample)
    ok = df[np.isfinite(df["half_life"]) & np.isfinite(df["mean_distance"])]
    if len(ok) >= 2 and ok["half_life"].nunique() > 1 and ok["mean_distance"].nunique() > 1:
        rho, p = spearmanr(ok["half_life"], ok["mean_distance"])
        rho, p = float(rho), float(p)
    else:
        rho, p = float("nan"), float("nan")
    return _result("slower_decay_attends_further", "spearman_rho", rho, _correlation_verdict(rho, p, len(ok)),
                   p_value=p, n=len(ok), heads=df.to_dict("records"), rule=_CORR_RULE)
