"""Claim checks that measure: effect sizes with bootstrap confidence intervals, on the tokens
the model was trained to predict, repeated over seeds, with a verdict fixed in advance.

Every check returns ``{claim, statistic, value, verdict, details}``; ``verdict`` is one of
``"supported"``, ``"not supported"``, ``"inconclusive"``. ``run_claim_checks(model, task)``
(or ``check_checkpoint(folder)``) runs all of them on a checkpoint task's held-out split
(``task.make_split("test", n)``, n >= 256 by default).

What is measured
----------------
* **Loss** is the answer-token loss: per example, the mean of ``per_token_loss`` (logits at
  t-1 predict ``labels[t]``) over the positions with ``labels != -100``, i.e. the tokens the
  model was trained to predict (the answers for story-world and recall tasks, every real
  token for language models). An example without such a token is left out. Calls without
  ``labels`` fall back to next-token loss on every input token and say so in
  ``details["loss_on"]``.
* **Intervals** are percentile bootstrap intervals (``CONFIDENCE`` = 95%, ``N_BOOT``
  resamples) over held-out examples (stories); for ``pruning_beats_random`` the random
  halves are resampled too.
* **Seeds** (``SEEDS``, at least 3) seed every random part: the bootstrap, the random
  pruning halves, the label shuffles and the probes' train/test splits. Each seed gives its
  own estimate and interval (``details["per_seed"]``); ``value`` is the mean estimate over
  seeds and ``details["ci_low"] / ["ci_high"]`` is the union of the seeds' intervals.

Effects are oriented so that **positive is the claim's direction**:

========================================  ==========================================  ===========
claim                                      effect                                      negligible
========================================  ==========================================  ===========
``importance_predicts_ablation``           Spearman rho(slot importance, mean answer-  0.1
                                           loss increase when the slot is ablated)
``pruning_beats_random``                   mean loss increase of random halves minus   0.01 nats
                                           that of the lowest-importance half
``slot_specialisation``                    MI(argmax routed slot; ground-truth         0.05
                                           category) minus its shuffled-label mean,
                                           as a fraction of the category's entropy
``slower_decay_attends_further``           Spearman rho(head half-life, measured mean  0.1
                                           attention distance) over heads
========================================  ==========================================  ===========

The verdict rule
----------------
With the effect's interval ``[lo, hi]`` (the union over seeds) and the claim's negligible
effect size ``delta > 0`` (the table above):

1. **inconclusive** when a precondition fails: fewer than ``min_examples`` examples, fewer
   than ``MIN_POINTS`` (5) slots or heads to correlate, or nothing to rank (all importances
   equal to 1e-6, all half-lives equal), or a non-finite interval;
2. **not supported** when ``hi < delta``: the interval excludes every effect in the claim's
   direction of at least the negligible size (the effect is negative, zero or negligible);
   for ``importance_predicts_ablation`` also when no slot's ablation matters (every slot's
   damage interval lies below 0.01 nats: there is nothing for importance to predict);
3. **supported** when ``lo > 0``: the interval excludes the null in the claim's direction;
4. **inconclusive** otherwise (the interval holds 0 and reaches ``delta``).

Because the union interval is used, a claim is supported only when every seed's interval
excludes the null, and not supported only when every seed's interval lies below ``delta``.
Each result repeats its rule in ``details["rule"]``.
"""

from __future__ import annotations

import math
import os
from fnmatch import fnmatchcase
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from scipy.stats import rankdata, spearmanr
from torch import nn

from probes.interventions import ablate_slot, intervene, prune_slots
from pulse.hooks import hook_sites
from probes.trace import Trace, per_token_loss, trace

SEEDS: tuple[int, ...] = (0, 1, 2)
N_BOOT = 1000
CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE
MIN_POINTS = 5
MIN_EXAMPLES = 30
N_EXAMPLES = 256
NEGLIGIBLE_RHO = 0.1
NEGLIGIBLE_NATS = 0.01
NEGLIGIBLE_MI = 0.05  # of the category's entropy
NEGLIGIBLE_ACCURACY = 0.02

RULE = ("interval [lo, hi] = union over seeds of the 95% bootstrap intervals of the effect (positive = the "
        "claim's direction); precondition fails -> inconclusive; hi < {delta} -> not supported; lo > 0 -> "
        "supported; else inconclusive")


# ------------------------------------------------------------------ verdicts and intervals
def interval_verdict(lo: float, hi: float, negligible: float) -> str:
    """The verdict of an effect interval ``[lo, hi]`` (positive = the claim's direction):
    ``hi < negligible`` -> not supported; else ``lo > 0`` -> supported; else inconclusive.
    A non-finite bound -> inconclusive."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if hi < negligible:
        return "not supported"
    if lo > 0:
        return "supported"
    return "inconclusive"


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (non-finite replicates dropped; NaN when
    fewer than half are finite)."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0 or s.size < 0.5 * np.asarray(samples).size:
        return float("nan"), float("nan")
    a = (1.0 - confidence) / 2
    return float(np.quantile(s, a)), float(np.quantile(s, 1 - a))


def _combine(claim: str, statistic: str, per_seed: list[dict[str, Any]], negligible: float,
             precondition: str | None = None, extra_rule: str = "", **details: Any) -> dict[str, Any]:
    """Result dict from per-seed ``{seed, value, ci_low, ci_high}``; verdict by the module rule
    on the union interval (``precondition``: the reason a precondition failed, or None)."""
    vals = [p["value"] for p in per_seed if math.isfinite(p["value"])]
    value = float(np.mean(vals)) if vals else float("nan")
    lo = min((p["ci_low"] for p in per_seed), default=float("nan"))
    hi = max((p["ci_high"] for p in per_seed), default=float("nan"))
    if any(not math.isfinite(p["ci_low"]) or not math.isfinite(p["ci_high"]) for p in per_seed):
        lo = hi = float("nan")
    for p in per_seed:
        p["verdict"] = "inconclusive" if precondition else interval_verdict(p["ci_low"], p["ci_high"], negligible)
    verdict = "inconclusive" if precondition else interval_verdict(lo, hi, negligible)
    if details.pop("_force_not_supported", False) and precondition is None:
        verdict = "not supported"
        for p in per_seed:
            p["verdict"] = "not supported"
    return {"claim": claim, "statistic": statistic, "value": value, "verdict": verdict,
            "details": {"ci_low": lo, "ci_high": hi, "confidence": CONFIDENCE, "negligible": negligible,
                        "seeds": [p["seed"] for p in per_seed], "per_seed": per_seed,
                        "precondition_failed": precondition,
                        "rule": RULE.format(delta=negligible) + extra_rule, **details}}


def _inconclusive(claim: str, statistic: str, reason: str, negligible: float, **details: Any) -> dict[str, Any]:
    return {"claim": claim, "statistic": statistic, "value": float("nan"), "verdict": "inconclusive",
            "details": {"ci_low": float("nan"), "ci_high": float("nan"), "confidence": CONFIDENCE,
                        "negligible": negligible, "seeds": [], "per_seed": [], "precondition_failed": reason,
                        "rule": RULE.format(delta=negligible), **details}}


def _seeds(seeds: Sequence[int] | None, seed: int = 0) -> list[int]:
    return [int(s) for s in seeds] if seeds is not None else [seed + i for i in range(len(SEEDS))]


def _boot_index(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    return rng.integers(0, n, size=(n_boot, n))


def _spearman_rows(x: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Spearman rho between ``x`` [P] and each row of ``Y`` [R, P] (NaN for constant rows)."""
    rx = rankdata(x)
    rx = rx - rx.mean()
    rY = rankdata(Y, axis=1)
    rY = rY - rY.mean(1, keepdims=True)
    den = np.sqrt((rx ** 2).sum() * (rY ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rY @ rx) / np.where(den > 0, den, 1.0), np.nan)


# ------------------------------------------------------------------ losses
def _banks(model: nn.Module, layers: Sequence[int] | None) -> list[tuple[int, nn.Module]]:
    banks = list(model.state_banks()) if hasattr(model, "state_banks") else []
    if layers is not None:
        banks = [(i, b) for i, b in banks if i in set(layers)]
    if not banks:
        raise ValueError("model: no state bank (config num_states = 0) in the chosen layers")
    return banks


def _loss_on(labels: torch.Tensor | None) -> str:
    return ("next-token loss on every input token (no labels given)" if labels is None
            else "answer-token loss: positions with labels != -100 (the tokens the model was trained to predict)")


@torch.no_grad()
def example_losses(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                   attention_mask: torch.Tensor | None = None, interventions: Sequence = (),
                   batch_size: int = 64) -> np.ndarray:
    """[B] per-example mean loss over the labelled positions (labels != -100; labels default to
    the inputs), with ``interventions`` applied; NaN for an example without one."""
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    labels = input_ids if labels is None else labels
    out = []
    with intervene(model, *interventions):
        for i in range(0, input_ids.shape[0], batch_size):
            sl = slice(i, i + batch_size)
            mask = None if attention_mask is None else attention_mask[sl]
            logits = model(input_ids[sl], attention_mask=mask)["logits"]
            tl = per_token_loss(logits, labels[sl], mask)
            n = (~torch.isnan(tl)).sum(1)
            s = torch.nan_to_num(tl, nan=0.0).sum(1)
            out.append(torch.where(n > 0, s / n.clamp_min(1), torch.full_like(s, float("nan"))).cpu())
    return torch.cat(out).double().numpy()


def _mean_loss(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor | None,
               attention_mask: torch.Tensor | None) -> float:
    return float(np.nanmean(example_losses(model, input_ids, labels, attention_mask)))


# ------------------------------------------------------------------ importance vs ablation
def importance_predicts_ablation(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                                 layers: Sequence[int] | None = None, attention_mask: torch.Tensor | None = None,
                                 mode: str = "zero", seeds: Sequence[int] | None = None, n_boot: int = N_BOOT,
                                 min_examples: int = MIN_EXAMPLES, batch_size: int = 64) -> dict[str, Any]:
    """Spearman rho between each alive slot's learned importance and its ablation damage (the
    increase of the per-example answer-token loss when the slot's reads are removed,
    ``ablate_slot(layer, slot, mode)``), over all alive slots of the chosen banks. Interval:
    bootstrap over examples (the slots are this model's slots, held fixed). Not supported
    also when no slot's damage interval reaches ``NEGLIGIBLE_NATS`` (see the module doc)."""
    claim, stat = "importance_predicts_ablation", "spearman_rho"
    base = example_losses(model, input_ids, labels, attention_mask, batch_size=batch_size)
    ok = np.isfinite(base)
    points, damages = [], []
    for layer, bank in _banks(model, layers):
        imp = bank.get_importance_scores()
        for s in range(imp.numel()):
            if not bool(bank.alive[s]):
                continue
            after = example_losses(model, input_ids, labels, attention_mask, [ablate_slot(layer, s, mode)], batch_size)
            d = after - base
            damages.append(d)
            points.append({"layer": layer, "slot": s, "importance": float(imp[s]),
                           "delta_loss": float(np.nanmean(d[ok])) if ok.any() else float("nan")})
    n = int(ok.sum())
    x = np.array([p["importance"] for p in points])
    common = dict(n=len(points), n_examples=n, points=points, loss_on=_loss_on(labels), mode=mode)
    if n < min_examples:
        return _inconclusive(claim, stat, f"{n} examples < {min_examples}", NEGLIGIBLE_RHO, **common)
    if len(points) < MIN_POINTS:
        return _inconclusive(claim, stat, f"{len(points)} slots < {MIN_POINTS}", NEGLIGIBLE_RHO, **common)
    if np.ptp(x) < 1e-6:
        return _inconclusive(claim, stat, "all importances equal: no ranking", NEGLIGIBLE_RHO, **common)
    D = np.stack(damages)[:, ok]  # [P, n]
    per_seed, max_damage_hi = [], -np.inf
    for seed in _seeds(seeds):
        idx = _boot_index(np.random.default_rng([seed, 11]), n, n_boot)
        boot = D[:, idx].mean(-1)  # [P, n_boot]
        rho_b = _spearman_rows(x, boot.T)
        lo, hi = percentile_interval(rho_b)
        dmg = [percentile_interval(boot[i]) for i in range(len(points))]
        max_damage_hi = max(max_damage_hi, max(h for _, h in dmg))
        for p, (dl, dh) in zip(points, dmg):
            p.setdefault("delta_loss_ci", []).append((dl, dh))
        rho = _spearman_rows(x, D.mean(1)[None])[0]
        per_seed.append({"seed": seed, "value": float(rho), "ci_low": lo, "ci_high": hi})
    rho_all, p_all = (spearmanr(x, D.mean(1)) if np.ptp(D.mean(1)) > 0 else (float("nan"), float("nan")))
    nothing = bool(max_damage_hi < NEGLIGIBLE_NATS)
    return _combine(claim, stat, per_seed, NEGLIGIBLE_RHO, _force_not_supported=nothing,
                    extra_rule=f"; every slot's damage interval < {NEGLIGIBLE_NATS} nats -> not supported",
                    no_slot_matters=nothing, max_damage_ci_high=float(max_damage_hi),
                    p_value=float(p_all), **common)


# ------------------------------------------------------------------ pruning vs random
def pruning_beats_random(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                         layers: Sequence[int] | None = None, n_random: int = 8, seed: int = 0,
                         attention_mask: torch.Tensor | None = None, seeds: Sequence[int] | None = None,
                         n_boot: int = N_BOOT, min_examples: int = MIN_EXAMPLES, batch_size: int = 64) -> dict[str, Any]:
    """Pruning the lowest-importance half of every chosen bank (``prune_slots``, the bank's
    real pruning) against ``n_random`` random halves of the same sizes per seed. Effect =
    mean answer-loss increase of the random halves minus that of the lowest half (positive:
    pruning by importance hurts less). Interval: bootstrap over examples and random halves."""
    claim, stat = "pruning_beats_random", "random_minus_lowest_delta_loss"
    banks = _banks(model, layers)
    base = example_losses(model, input_ids, labels, attention_mask, batch_size=batch_size)
    ok = np.isfinite(base)
    n = int(ok.sum())
    alive = {i: [s for s in range(b.alive.numel()) if bool(b.alive[s])] for i, b in banks}
    imps = {i: b.get_importance_scores() for i, b in banks}
    half = {i: len(alive[i]) // 2 for i, _ in banks}
    lowest = {i: sorted(alive[i], key=lambda s: (float(imps[i][s]), s))[:half[i]] for i, _ in banks}
    spread = max(float(imps[i][alive[i]].max() - imps[i][alive[i]].min()) if alive[i] else 0.0 for i, _ in banks)
    common = dict(lowest=lowest, importance_range=spread, n_examples=n, n_random=n_random,
                  base_loss=float(np.nanmean(base)) if ok.any() else float("nan"), loss_on=_loss_on(labels))
    if spread < 1e-6 or all(h == 0 for h in half.values()):
        return _inconclusive(claim, stat, "all importances equal or nothing to prune", NEGLIGIBLE_NATS, **common)
    if n < min_examples:
        return _inconclusive(claim, stat, f"{n} examples < {min_examples}", NEGLIGIBLE_NATS, **common)

    def damage(choice: Mapping[int, list[int]]) -> np.ndarray:
        ivs = [prune_slots(i, sl) for i, sl in choice.items() if sl]
        return (example_losses(model, input_ids, labels, attention_mask, ivs, batch_size) - base)[ok]

    d_low = damage(lowest)
    per_seed = []
    for sd in _seeds(seeds, seed):
        rng = np.random.default_rng([sd, 23])
        halves = [{i: sorted(rng.choice(alive[i], size=half[i], replace=False).tolist()) for i, _ in banks}
                  for _ in range(n_random)]
        d_rand = np.stack([damage(h) for h in halves])  # [K, n]
        idx = _boot_index(rng, n, n_boot)
        kidx = rng.integers(0, n_random, size=(n_boot, n_random))
        rand_means = d_rand[:, idx].mean(-1)  # [K, n_boot]
        boot = rand_means[kidx, np.arange(n_boot)[:, None]].mean(1) - d_low[idx].mean(-1)
        lo, hi = percentile_interval(boot)
        per_seed.append({"seed": sd, "value": float(d_rand.mean() - d_low.mean()), "ci_low": lo, "ci_high": hi,
                         "delta_random": d_rand.mean(1).tolist(), "random_halves": halves})
    res = _combine(claim, stat, per_seed, NEGLIGIBLE_NATS, delta_lowest=float(d_low.mean()),
                   delta_lowest_ci=percentile_interval(d_low[_boot_index(np.random.default_rng(7), n, n_boot)].mean(-1)),
                   **common)
    res["details"]["delta_random"] = [v for p in per_seed for v in p["delta_random"]]
    return res


# ------------------------------------------------------------------ slot specialisation
def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) between two integer label arrays."""
    a = np.asarray(a)
    b = np.asarray(b)
    if len(a) == 0:
        return 0.0
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    return _mi_codes(ai, bi, int(ai.max()) + 1, int(bi.max()) + 1)


def _mi_codes(a: np.ndarray, b: np.ndarray, na: int, nb: int) -> float:
    """MI (nats) of code arrays ``a`` in [0, na), ``b`` in [0, nb) (fast: one bincount)."""
    n = len(a)
    if n == 0:
        return 0.0
    joint = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb) / n
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def _entropy_codes(c: np.ndarray, nc: int) -> float:
    p = np.bincount(c, minlength=nc) / max(1, len(c))
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _group_resample(rng: np.random.Generator, starts: np.ndarray, counts: np.ndarray, half: bool = False) -> np.ndarray:
    """Token indices of one resample of whole groups (tokens sorted by group): a bootstrap
    resample (with replacement), or with ``half`` a half-sample (half the groups, without
    replacement)."""
    g = (rng.choice(len(starts), size=max(1, len(starts) // 2), replace=False) if half
         else rng.integers(0, len(starts), size=len(starts)))
    c = counts[g]
    offs = np.repeat(starts[g] - np.concatenate([[0], np.cumsum(c)[:-1]]), c)
    return np.arange(int(c.sum())) + offs


def excess_mi(slot: np.ndarray, cat: np.ndarray, groups: np.ndarray, seed: int, n_boot: int = N_BOOT,
              n_shuffles: int = 200, n_boot_shuffles: int = 4) -> dict[str, Any]:
    """MI(slot; cat) minus its mean over ``n_shuffles`` permutations of ``cat`` (the plug-in
    bias), with the permutation p-value and an interval over groups (stories) by half-sampling:
    ``n_boot`` draws of half the groups without replacement, each with its own shuffled mean
    (``n_boot_shuffles`` permutations). Half-sampling without replacement has, for smooth
    statistics, the variance of the full-sample estimate, and unlike the with-replacement
    bootstrap it never duplicates a story: duplicates inflate a plug-in MI against its
    shuffled baseline (the interval would sit above the estimate). Inputs: integer arrays.

    ``value`` and the interval are the excess MI as a fraction of the category's entropy
    H(cat) (each resample divided by its own): the share of the uncertainty about the
    category that the slot resolves beyond chance (1 = the slot names the category, 0 = it
    says nothing); ``mi``, ``shuffled_mean`` and ``entropy`` are in nats."""
    _, s = np.unique(slot, return_inverse=True)
    _, c = np.unique(cat, return_inverse=True)
    ns, nc = int(s.max()) + 1 if len(s) else 1, int(c.max()) + 1 if len(c) else 1
    rng = np.random.default_rng([seed, 31])
    mi = _mi_codes(s, c, ns, nc)
    null = np.array([_mi_codes(s, rng.permutation(c), ns, nc) for _ in range(n_shuffles)])
    order = np.argsort(groups, kind="stable")
    s_o, c_o = s[order], c[order]
    _, starts, counts = np.unique(groups[order], return_index=True, return_counts=True)
    boot = np.empty(n_boot)
    for r in range(n_boot):
        idx = _group_resample(rng, starts, counts, half=True)
        sb, cb = s_o[idx], c_o[idx]
        nullb = np.mean([_mi_codes(sb, rng.permutation(cb), ns, nc) for _ in range(n_boot_shuffles)])
        hb = _entropy_codes(cb, nc)
        boot[r] = (_mi_codes(sb, cb, ns, nc) - nullb) / hb if hb > 0 else np.nan
    lo, hi = percentile_interval(boot)
    h = _entropy_codes(c, nc)
    value = (mi - float(null.mean())) / h if n_shuffles and h > 0 else float("nan")
    return {"mi": mi, "shuffled_mean": float(null.mean()) if n_shuffles else float("nan"), "entropy": h,
            "excess_mi_nats": mi - float(null.mean()) if n_shuffles else float("nan"),
            "value": value, "ci_low": lo, "ci_high": hi,
            "p_value": float((1 + (null >= mi - 1e-12).sum()) / (1 + n_shuffles))}


def routing_probe(X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int, n_boot: int = N_BOOT) -> dict[str, Any]:
    """Linear (softmax) probe from routing weights ``X`` [N, S] to labels ``y`` [N], split by
    group (story); against a probe trained on shuffled training labels and the majority class.
    ``value`` = test accuracy minus the shuffled-label probe's, with a paired bootstrap interval
    over test groups."""
    from probes.linear_probes import fit_softmax_probe, train_test_split

    rng = np.random.default_rng([seed, 47])
    train, test = train_test_split(len(y), 0.3, seed, groups)
    probe = fit_softmax_probe(X[train], y[train])
    shuffled = fit_softmax_probe(X[train], rng.permutation(y[train]))
    vals, counts = np.unique(y[train], return_counts=True)
    hit = (probe.predict(X[test]) == y[test]).astype(float)
    hit_sh = (shuffled.predict(X[test]) == y[test]).astype(float)
    hit_maj = (y[test] == vals[np.argmax(counts)]).astype(float)
    g = groups[test]
    order = np.argsort(g, kind="stable")
    _, starts, cnts = np.unique(g[order], return_index=True, return_counts=True)
    diff = (hit - hit_sh)[order]
    boot = np.array([diff[_group_resample(rng, starts, cnts)].mean() for _ in range(n_boot)])
    lo, hi = percentile_interval(boot)
    return {"accuracy": float(hit.mean()), "shuffled_accuracy": float(hit_sh.mean()),
            "majority_baseline": float(hit_maj.mean()), "value": float(hit.mean() - hit_sh.mean()),
            "ci_low": lo, "ci_high": hi, "n_train": int(len(train)), "n_test": int(len(test)),
            "n_classes": int(len(np.unique(y)))}


def _category_codes(categories: np.ndarray | Sequence, B: int, T: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    cats = np.asarray(categories, dtype=object).reshape(-1)
    if cats.shape[0] != B * T:
        raise ValueError(f"{what}: {cats.shape[0]} labels for {B}x{T} tokens")
    valid = np.array([c is not None and not (isinstance(c, (int, np.integer)) and c < 0)
                      and not (isinstance(c, float) and not math.isfinite(c)) for c in cats])
    codes = np.full(B * T, -1, dtype=np.int64)
    if valid.any():
        codes[valid] = np.unique(cats[valid].astype(str), return_inverse=True)[1]
    return codes, valid


def slot_specialisation(tr: Trace, categories: np.ndarray | Sequence, layer: int = 0, n_shuffles: int = 200,
                        seed: int = 0, seeds: Sequence[int] | None = None, n_boot: int = N_BOOT,
                        min_examples: int = MIN_EXAMPLES, also: Mapping[str, np.ndarray | Sequence] | None = None,
                        probe: bool = True) -> dict[str, Any]:
    """Do slots specialise by ground-truth category? Effect: the mutual information between a
    token's argmax routed slot (``blocks.{layer}.states.hook_routing``) and its category, minus
    the same MI with the categories shuffled (``n_shuffles`` permutations), as a fraction of
    the category's entropy (:func:`excess_mi`); interval: half-sampling over samples (rows).
    Entity names are single tokens, so routing by token identity already counts as
    specialisation by entity (an untrained model can show some). ``categories``: [B, T] or flat [B*T] labels
    (ints or strings; None/-1 = skip); padding and unrouted tokens are skipped.

    Reported beside it (``details``): ``probe`` (a linear probe from the routing weights to the
    category, against a shuffled-label probe), ``position`` (the same excess MI and probe
    against the token's chunk index ``pos // chunk_size`` and against its position, on the same
    tokens: how much routing follows where a token is rather than what it is), and ``also``
    (excess MI for other category grids, e.g. ``{"location": ...}``)."""
    claim, stat = "slot_specialisation", "excess_mi_fraction_of_entropy"
    routing = tr[f"blocks.{layer}.states.hook_routing"].float()  # [B, T, S]
    B, T, S = routing.shape
    codes, keep = _category_codes(categories, B, T, "categories")
    routed = routing.sum(-1).reshape(-1).numpy() > 0  # padding and unrouted tokens are skipped
    mask = tr.attention_mask
    if mask is not None and tuple(mask.shape) == (B, T):
        routed &= mask.reshape(-1).numpy() > 0.5
    keep &= routed
    slot = routing.argmax(-1).reshape(-1).numpy()
    rows = np.repeat(np.arange(B), T)
    pos = np.tile(np.arange(T), B) + tr.pos_start
    chunk_size = int((tr.metadata.get("config") or {}).get("chunk_size") or 1)
    n_tok, n_ex = int(keep.sum()), int(len(np.unique(rows[keep])))
    common = dict(layer=layer, n_tokens=n_tok, n_examples=n_ex, n_slots_used=int(len(np.unique(slot[keep]))),
                  n_categories=int(len(np.unique(codes[keep]))))
    if n_ex < min_examples or common["n_categories"] < 2:
        why = f"{n_ex} examples < {min_examples}" if n_ex < min_examples else "fewer than 2 categories"
        return _inconclusive(claim, stat, why, NEGLIGIBLE_MI, **common)
    X = routing.reshape(-1, S).numpy()[keep].astype(np.float64)
    g, sk = rows[keep], slot[keep]
    others = {"chunk": (pos // chunk_size)[keep], "position": pos[keep]}
    extra = {}
    for name, grid in (also or {}).items():
        c2, k2 = _category_codes(grid, B, T, name)
        k2 &= routed
        extra[name] = (c2, k2)
    per_seed, probes_, position, also_out = [], [], {"chunk": [], "position": []}, {k: [] for k in extra}
    for sd in _seeds(seeds, seed):
        e = excess_mi(sk, codes[keep], g, sd, n_boot, n_shuffles)
        per_seed.append({"seed": sd, **e})
        if probe:
            probes_.append({"seed": sd, **routing_probe(X, codes[keep], g, sd, n_boot)})
        for name, lab in others.items():
            position[name].append({"seed": sd, **excess_mi(sk, lab, g, sd, n_boot, n_shuffles)})
        for name, (c2, k2) in extra.items():
            if len(np.unique(rows[k2])) >= 2 and len(np.unique(c2[k2])) >= 2:
                also_out[name].append({"seed": sd, **excess_mi(slot[k2], c2[k2], rows[k2], sd, n_boot, n_shuffles)})
    if probe:
        position["chunk_probe"] = [{"seed": sd, **routing_probe(X, others["chunk"], g, sd, n_boot)}
                                   for sd in _seeds(seeds, seed)] if len(np.unique(others["chunk"])) > 1 else []
    summary = lambda lst: ({"value": float(np.mean([x["value"] for x in lst])),  # noqa: E731
                            "ci_low": min(x["ci_low"] for x in lst), "ci_high": max(x["ci_high"] for x in lst)}
                           if lst else None)
    pr = summary(probes_)
    if pr is not None:
        pr.update(verdict=interval_verdict(pr["ci_low"], pr["ci_high"], NEGLIGIBLE_ACCURACY),
                  accuracy=float(np.mean([x["accuracy"] for x in probes_])),
                  shuffled_accuracy=float(np.mean([x["shuffled_accuracy"] for x in probes_])),
                  majority_baseline=float(np.mean([x["majority_baseline"] for x in probes_])), per_seed=probes_)
    return _combine(claim, stat, per_seed, NEGLIGIBLE_MI,
                    mi=float(np.mean([p["mi"] for p in per_seed])),
                    shuffled_mean=float(np.mean([p["shuffled_mean"] for p in per_seed])),
                    p_value=float(max(p["p_value"] for p in per_seed)), probe=pr,
                    position={k: {**(summary(v) or {}), "per_seed": v} for k, v in position.items()},
                    also={k: {**(summary(v) or {}), "per_seed": v} for k, v in also_out.items()},
                    chunk_size=chunk_size, **common)


# ------------------------------------------------------------------ decay vs distance
def head_distances(tr: Trace, window: tuple[int, int] | None = None, samples: Sequence[int] | None = None,
                   ) -> tuple[list[dict[str, Any]], np.ndarray]:
    """(heads, M): one dict per (layer, head) with gamma and half-life, and ``M`` [heads, samples]
    the attention-weighted mean distance of each head on each sample, from the decay-weighted
    attention materialised for all samples at once (the formula of
    :func:`probes.attention.decay_attention_matrix`, full causal past; distances in real tokens,
    real query rows only, as :func:`probes.attention.attention_distances`). NaN where a sample
    has no real row in the window."""
    from probes.attention import _eps, _layer_name, half_life

    layers = sorted(tr.layers("attn.hook_q_features"))
    if not layers:
        raise KeyError("the trace has no attn.hook_q_features (trace names='blocks.*.attn.*')")
    q0 = tr[_layer_name(tr, layers[0], "hook_q_features")]
    B, T = q0.shape[0], q0.shape[2]
    samples = list(range(B)) if samples is None else [int(s) for s in samples]
    t0, t1 = (0, T) if window is None else (int(window[0]), int(window[1]))
    if not 0 <= t0 < t1 <= T:
        raise ValueError(f"window: need 0 <= t0 < t1 <= {T}, got {window}")
    m = tr.attention_mask
    real = (torch.ones(B, T, dtype=torch.float64) if m is None or tuple(m.shape) != (B, T)
            else (m > 0.5).double())[samples]
    c = torch.cumsum(real, 1)
    dist = (c[:, t0:t1, None] - c[:, None, :t1]).clamp_min(0)  # [b, Tt, Ts]
    causal = torch.arange(t1)[None, :] <= torch.arange(t0, t1)[:, None]
    rows = real[:, t0:t1] > 0.5
    heads, M = [], []
    for li in layers:
        g = tr[_layer_name(tr, li, "hook_decay")]
        q = tr[_layer_name(tr, li, "hook_q_features")][samples].double()
        k = tr[_layer_name(tr, li, "hook_k_features")][samples].double()
        nrm = tr[_layer_name(tr, li, "hook_normalizer")][samples].double()
        for h in range(g.shape[0]):
            gh = float(g[h])
            heads.append({"layer": li, "head": h, "gamma": gh, "half_life": float(half_life(gh))})
            cum = torch.cumsum(real * math.log(gh), 1)
            expo = (cum[:, t0:t1, None] - cum[:, None, :t1]).masked_fill(~causal, float("-inf"))
            A = (torch.exp(expo) * (q[:, h, t0:t1] @ k[:, h, :t1].transpose(1, 2))
                 / (nrm[:, h, t0:t1, None] + _eps(tr))).clamp_min(0)
            tot = A.sum(-1)
            ok = rows & (tot > 0)
            per_row = (A * dist).sum(-1) / torch.where(ok, tot, torch.ones_like(tot))
            cnt = ok.sum(1)
            md = torch.where(cnt > 0, (per_row * ok).sum(1) / cnt.clamp_min(1), torch.full_like(tot[:, 0], float("nan")))
            M.append(md.numpy())
    return heads, np.array(M, dtype=float).reshape(len(heads), len(samples))


def slower_decay_attends_further(tr: Trace, window: tuple[int, int] | None = None, sample: int | None = None,
                                 seeds: Sequence[int] | None = None, n_boot: int = N_BOOT,
                                 min_examples: int = MIN_EXAMPLES, samples: Sequence[int] | None = None) -> dict[str, Any]:
    """Spearman rho over heads between a head's half-life and its measured mean attention
    distance (mean over samples of the per-sample distance, :func:`head_distances`); interval:
    bootstrap over samples. ``sample`` (one row) or ``samples`` restricts the rows; default all."""
    claim, stat = "slower_decay_attends_further", "spearman_rho"
    if sample is not None and samples is None:
        samples = [sample]
    heads, M = head_distances(tr, window, samples)
    keep = np.isfinite(M).all(0)
    M = M[:, keep]
    n = int(M.shape[1])
    hl = np.array([h["half_life"] for h in heads])
    for h, d in zip(heads, M.mean(1) if n else [float("nan")] * len(heads)):
        h["mean_distance"] = float(d)
    md = np.array([h["mean_distance"] for h in heads])
    p = (float(spearmanr(hl, md)[1]) if len(heads) >= 3 and np.isfinite(md).all() and np.ptp(hl) > 0
         and np.ptp(md) > 0 else float("nan"))
    common = dict(n=len(heads), n_examples=n, heads=heads, p_value=p)  # p: Spearman test over heads
    if n < min_examples:
        return _inconclusive(claim, stat, f"{n} examples < {min_examples}", NEGLIGIBLE_RHO, **common)
    if len(heads) < MIN_POINTS or np.ptp(hl) < 1e-9:
        return _inconclusive(claim, stat, f"{len(heads)} heads < {MIN_POINTS} or equal half-lives", NEGLIGIBLE_RHO,
                             **common)
    per_seed = []
    for sd in _seeds(seeds):
        idx = _boot_index(np.random.default_rng([sd, 59]), n, n_boot)
        boot = M[:, idx].mean(-1)  # [H, n_boot]
        lo, hi = percentile_interval(_spearman_rows(hl, boot.T))
        for h, (dl, dh) in zip(heads, (percentile_interval(b) for b in boot)):
            h.setdefault("mean_distance_ci", []).append((dl, dh))
        per_seed.append({"seed": sd, "value": float(_spearman_rows(hl, M.mean(1)[None])[0]), "ci_low": lo, "ci_high": hi})
    return _combine(claim, stat, per_seed, NEGLIGIBLE_RHO, **common)


# ------------------------------------------------------------------ held-out runner
def story_ground_truth(stories: Sequence[Any], T: int) -> dict[str, np.ndarray]:
    """[B, T] object grids of story-world ground truth (None = no label): ``entity`` (the
    character or object a token names), ``location`` (the place a place token names; answers
    excluded), ``role`` (every token's role)."""
    out = {k: np.full((len(stories), T), None, dtype=object) for k in ("entity", "location", "role")}
    for b, s in enumerate(stories):
        for i, (ent, role) in enumerate(zip(s.entities, s.roles)):
            if i >= T:
                break
            out["role"][b, i] = role
            if role in ("character", "object"):
                out["entity"][b, i] = ent
            elif role == "place":
                out["location"][b, i] = ent
    return out


def run_claim_checks(model: nn.Module, task: Any, n: int = N_EXAMPLES, seeds: Sequence[int] = SEEDS,
                     split: str = "test", n_random: int = 8, n_boot: int = N_BOOT, n_shuffles: int = 200,
                     batch_size: int = 64,
                     progress: Callable[[int, int, str], None] | None = None) -> list[dict[str, Any]]:
    """Every claim check that fits ``model``, on ``n`` examples of ``task``'s held-out ``split``
    (labels from the task: the tokens the model was trained to predict). Slot specialisation
    needs per-token ground truth (story-world tasks: the entity each token names, with the
    place a token names reported beside it); other tasks get an inconclusive result saying so.
    ``progress(done, total, message)`` is called before each check and once at the end."""
    model = model.eval()
    batch = task.make_split(split, n)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    has_banks = hasattr(model, "state_banks") and bool(list(model.state_banks()))
    names = ["blocks.*.attn.hook_q_features", "blocks.*.attn.hook_k_features", "blocks.*.attn.hook_normalizer",
             "blocks.*.attn.hook_decay"] + (["blocks.*.states.hook_routing"] if has_banks else [])
    # only the sites this model has: a model without decay-weighted attention or a state bank
    # (e.g. a Mamba through probes.adapters) gets the checks that fit it, possibly none
    sites = list(hook_sites(model))
    names = [n for n in names if any(fnmatchcase(s, n) for s in sites)]
    if not names:
        if progress is not None:
            progress(1, 1, "no claim applies to this model")
        return []
    n_banks = len(list(model.state_banks())) if has_banks else 0
    total = 2 + (n_banks + 2 if n_banks else 0)
    step = [0]

    def tick(message: str) -> None:
        if progress is not None:
            progress(step[0], total, message)
        step[0] += 1

    tick(f"tracing {int(ids.shape[0])} held-out examples")
    with torch.no_grad(), trace(model, names=names) as tr:  # one call: several calls would be stream pieces
        model(ids, attention_mask=mask)
    results = []
    tick("slower_decay_attends_further")
    if tr.layers("attn.hook_q_features"):
        results.append(slower_decay_attends_further(tr, seeds=seeds, n_boot=n_boot))
    if has_banks:
        stories = task.stories(split, n) if hasattr(task, "stories") else None
        for layer, _ in model.state_banks():
            tick(f"slot_specialisation (layer {layer})")
            if stories is None:
                r = _inconclusive("slot_specialisation", "excess_mi_fraction_of_entropy",
                                  "no per-token ground truth for this task", NEGLIGIBLE_MI, layer=layer)
            else:
                gt = story_ground_truth(stories, ids.shape[1])
                r = slot_specialisation(tr, gt["entity"], layer=layer, seeds=seeds, n_boot=n_boot,
                                        n_shuffles=n_shuffles, also={"location": gt["location"]})
                r["details"]["categories"] = "entity named by the token (characters and objects)"
            r["claim"] = f"slot_specialisation (layer {layer})"
            results.append(r)
        tick("importance_predicts_ablation (one forward per slot)")
        results.append(importance_predicts_ablation(model, ids, labels, attention_mask=mask, seeds=seeds,
                                                    n_boot=n_boot, batch_size=batch_size))
        tick("pruning_beats_random")
        results.append(pruning_beats_random(model, ids, labels, attention_mask=mask, n_random=n_random, seeds=seeds,
                                            n_boot=n_boot, batch_size=batch_size))
    for r in results:
        r["details"].setdefault("split", split)
        r["details"]["held_out_examples"] = int(ids.shape[0])
    if progress is not None:
        progress(total, total, "done")
    return results


def check_checkpoint(folder: str | os.PathLike, **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`run_claim_checks` on the checkpoint in ``folder`` and its task (``load_task``)."""
    from pulse.data import load_task
    from pulse.pretrained import load_pretrained

    task, _ = load_task(folder)
    return run_claim_checks(load_pretrained(folder).eval(), task, **kwargs)
