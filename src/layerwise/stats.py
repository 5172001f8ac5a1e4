"""Statistics shared by the chapters: bootstrap intervals, binomial tests, retention ratios.

Every confidence interval in the book comes from here:

- :func:`paired_bootstrap`: a statistic of per-unit arrays (sequences, groups of sequences, weight
  matrices) and its percentile interval, resampling units; paired (one resample of indices for every
  array: the same sequences fed to every model) or not.
- :func:`two_level_bootstrap`: a treatment minus the mean of several control draws, resampling both the
  units (prompts) and the draws (random control channels).
- :func:`bootstrap_indices`, :func:`bootstrap_aggregates`, :func:`paired_retention`: retention (a
  metric as a fraction of the unmodified model's) with a paired bootstrap over evaluation items, for
  any of lm-eval's aggregations; :func:`retention_ratio` is the point estimate.
- :func:`wilson_interval`: a binomial proportion's interval; :func:`above_chance_pvalue`: one-sided
  binomial test of 0/1 scores against a chance level.
- :func:`difference_interval`: the difference of two independent estimates, intervals combined in
  quadrature.
- :func:`seed_item_interval`: one estimate per training seed, each with its item-level interval,
  combined into an interval that covers both the training seed and the evaluation items.

All intervals are two-sided at ``level`` (0.95 by default), percentile intervals unless said otherwise.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import LayerwiseError

Interval = tuple[float, float]


# ---------------------------------------------------------------------------------------------
# Bootstrap over units
# ---------------------------------------------------------------------------------------------


def percentile_interval(samples: Sequence[float] | np.ndarray, level: float = 0.95) -> Interval:
    """The central ``level`` percentile interval of bootstrap ``samples`` (NaNs ignored; NaN if none left)."""
    arr = np.asarray(samples, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(arr, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_bootstrap(statistic: Callable[..., float], *per_unit: np.ndarray, n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95, paired: bool = True) -> tuple[float, Interval]:
    """``statistic(*arrays)`` and its percentile bootstrap interval, resampling *units* (first axis).

    Each array is ``[n_units, ...]`` (e.g. the ``per_sequence`` of a layer-similarity probe: one row
    per sequence). With ``paired=True`` all arrays hold the same units in the same order (models fed
    the same ``input_ids``) and one resample of unit indices is applied to all, keeping the pairing;
    with ``paired=False`` (models with different tokenizers see different windows) each array is
    resampled independently.
    """
    n = [a.shape[0] for a in per_unit]
    if paired and len(set(n)) != 1:
        raise LayerwiseError(f"per-sequence arrays have different numbers of sequences {n}: run every model on "
                             "the same input_ids with keep_per_sequence=True, or pass paired=False")
    rng = np.random.default_rng(seed)
    value = float(statistic(*per_unit))
    boots = []
    for _ in range(n_boot):
        if paired:
            idx = rng.integers(0, n[0], size=n[0])
            boots.append(statistic(*(a[idx] for a in per_unit)))
        else:
            boots.append(statistic(*(a[rng.integers(0, len(a), size=len(a))] for a in per_unit)))
    lo, hi = np.quantile(np.asarray(boots, dtype=float), [(1 - level) / 2, (1 + level) / 2])
    return value, (float(lo), float(hi))


def two_level_bootstrap(treated: np.ndarray, control: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, Interval]:
    """Mean over units of ``treated[p] - mean_d control[d, p]``, with a two-level percentile interval.

    ``treated`` is ``[P]`` (one value per unit, e.g. prompt), ``control`` ``[D, P]`` (one row per control
    draw, e.g. a random channel). Each bootstrap sample resamples the units and, independently, the
    draws, so the interval covers both the unit sample and the choice of control. NaN entries (e.g. a
    repetition score of a text shorter than n) are ignored.
    """
    o, c = np.asarray(treated, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if o.ndim != 1 or c.ndim != 2 or c.shape[1] != o.shape[0]:
        raise LayerwiseError(f"treated must be [P] and control [D, P], got {o.shape} and {c.shape}: "
                             "pivot the control draws to rows and the units to columns")
    P, D = o.size, c.shape[0]
    rng = np.random.default_rng(seed)
    pi = rng.integers(0, P, (n_boot, P))
    di = rng.integers(0, D, (n_boot, D))
    with warnings.catch_warnings():  # NaN metrics may empty a slice
        warnings.simplefilter("ignore", RuntimeWarning)
        c_b = np.stack([np.nanmean(c[di[b]][:, pi[b]], 0) for b in range(n_boot)])  # [B, P]
        diffs = np.nanmean(o[pi] - c_b, 1)
        diff = float(np.nanmean(o - np.nanmean(c, 0)))
    q = (1 - level) / 2
    return diff, (float(np.nanquantile(diffs, q)), float(np.nanquantile(diffs, 1 - q)))


# ---------------------------------------------------------------------------------------------
# Retention over evaluation items (paired bootstrap)
# ---------------------------------------------------------------------------------------------


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """``[n_boot, n]`` resampled item indices (the same draws for a baseline and every run)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_boot, n)) if n else np.zeros((n_boot, 0), dtype=int)


def bootstrap_aggregates(agg: Callable[[list], float], items: Sequence[Any], idx: np.ndarray) -> np.ndarray:
    """``agg`` over each row of resampled item indices ``idx`` [n_boot, n] -> [n_boot].

    lm-eval's common aggregations (``mean``, ``perplexity``, ``weighted_perplexity``,
    ``bits_per_byte``) are vectorised with numpy (the formulas of lm_eval.api.metrics); any other is
    called on Python lists.
    """
    name = getattr(agg, "__name__", "")
    if name in ("mean", "perplexity"):
        arr = np.asarray(items, dtype=np.float64)[idx].mean(1)
        return np.exp(-arr) if name == "perplexity" else arr
    if name in ("weighted_perplexity", "bits_per_byte"):
        pairs = np.asarray(items, dtype=np.float64)  # [n, 2] = (loglikelihood, weight)
        wm = pairs[idx, 0].sum(1) / pairs[idx, 1].sum(1)
        return np.exp(-wm) if name == "weighted_perplexity" else -wm / math.log(2)
    return np.array([agg([items[i] for i in row]) for row in idx], dtype=np.float64)


def retention_ratio(value: np.ndarray | float, base: np.ndarray | float, higher_is_better: bool) -> Any:
    """Retention: ``value / base`` when higher is better, ``base / value`` otherwise (1 = unchanged;
    NaN where the denominator is 0)."""
    num, den = (value, base) if higher_is_better else (base, value)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.asarray(den) == 0, np.nan, np.asarray(num, dtype=np.float64) / np.asarray(den))


def paired_retention(agg: Callable[[list], float], base_items: Sequence[Any], run_items: Sequence[Any],
                     idx: np.ndarray, *, higher_is_better: bool, level: float = 0.95) -> Interval:
    """Percentile interval of the retention of ``run_items`` relative to ``base_items`` (same items).

    Paired: the same resampled item indices ``idx`` (:func:`bootstrap_indices`) for the baseline and the
    run, so the interval reflects how item-level changes add up, not the spread of item difficulty.
    """
    if idx.shape[1] == 0:
        return float("nan"), float("nan")
    ratios = retention_ratio(bootstrap_aggregates(agg, run_items, idx), bootstrap_aggregates(agg, base_items, idx),
                             higher_is_better)
    return percentile_interval(ratios, level)


# ---------------------------------------------------------------------------------------------
# Proportions
# ---------------------------------------------------------------------------------------------


def above_chance_pvalue(items: Sequence[float], chance: float | None) -> float:
    """One-sided binomial test that 0/1 scores exceed ``chance`` (nan when not applicable)."""
    if chance is None:
        return float("nan")
    arr = np.asarray(items, dtype=np.float64)
    if arr.size == 0 or not np.all((arr == 0) | (arr == 1)):
        return float("nan")
    from scipy.stats import binomtest

    return float(binomtest(int(arr.sum()), int(arr.size), min(max(chance, 0.0), 1.0), alternative="greater").pvalue)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> Interval:
    """95% Wilson score interval of a binomial proportion (well-behaved at 0 and n, unlike Wald)."""
    if n <= 0:
        raise LayerwiseError(f"a proportion needs n >= 1 trials, got n={n}")
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # the interval always holds p (exactly so at 0 and n, where rounding could put a bound past it)
    return max(0.0, min(p, mid - half)), min(1.0, max(p, mid + half))


# ---------------------------------------------------------------------------------------------
# Combining intervals
# ---------------------------------------------------------------------------------------------


def difference_interval(a: float, a_ci: Interval, b: float, b_ci: Interval) -> tuple[float, Interval]:
    """``a - b`` with an interval whose half-width combines the two half-widths in quadrature.

    A normal approximation that treats the two estimates' errors as independent (e.g. two models
    evaluated separately); asymmetric intervals enter through their mean half-width.
    """
    half = float(np.hypot((a_ci[1] - a_ci[0]) / 2, (b_ci[1] - b_ci[0]) / 2))
    diff = float(a - b)
    return diff, (diff - half, diff + half)


@dataclass(frozen=True)
class SeedCombined:
    """An estimate over training seeds: the mean, its interval, and how the seeds spread.

    ``n_seeds`` 1 means the seed variance was not measured (``interval`` is then the one seed's item
    interval); ``seed_sd`` is the sample standard deviation of the seeds' values (NaN for one seed).
    """

    value: float
    interval: Interval
    n_seeds: int
    seed_values: tuple[float, ...]
    seed_sd: float
    note: str


def seed_item_interval(values: Sequence[float], intervals: Sequence[Interval], level: float = 0.95) -> SeedCombined:
    """Combine per-seed estimates (each with its item-level ``level`` interval) into one interval.

    The estimate is the mean over seeds. The interval is a t-interval over the seed values widened by
    the mean item variance::

        half = sqrt( t_{k-1}^2 * s^2 / k  +  z^2 * mean_i(se_i^2) ),   se_i = (hi_i - lo_i) / (2 z)

    Why this form: the seeds differ in training (initial weights, data order, masking noise) but are
    scored on the *same* evaluation items, so the item noise is shared across seeds and does not
    average out with more seeds; the spread of the seed values ``s`` measures the training-seed
    variance (plus each seed's independent part of the item noise), and a t quantile with ``k - 1``
    degrees of freedom keeps the interval honest for the few seeds one can afford (2-5). Adding the
    mean item variance on top is conservative (the item noise is partly counted twice) but never
    narrower than either source alone. A hierarchical bootstrap (seeds, then items) would need the
    item-level scores of every seed; this combination needs only what the result files keep (a value
    and an interval per seed). With one seed the item interval is returned unchanged and the note
    says that the seed variance was not measured.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0 or len(intervals) != v.size:
        raise LayerwiseError(f"need one interval per seed value, got {v.size} values and {len(intervals)} intervals: "
                             "pass the per-seed estimates and their item intervals in the same order")
    ci = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(v)) or not np.all(np.isfinite(ci)):
        raise LayerwiseError("a seed's value or interval is missing: combine only seeds that produced a number")
    if v.size == 1:
        return SeedCombined(float(v[0]), (float(ci[0, 0]), float(ci[0, 1])), 1, (float(v[0]),), float("nan"),
                            "one training seed: seed variance not measured")
    from scipy.stats import norm, t

    z = float(norm.ppf((1 + level) / 2))
    tq = float(t.ppf((1 + level) / 2, df=v.size - 1))
    se_items = (ci[:, 1] - ci[:, 0]) / (2 * z)
    sd = float(v.std(ddof=1))
    half = math.sqrt(tq ** 2 * sd ** 2 / v.size + z ** 2 * float(np.mean(se_items ** 2)))
    mean = float(v.mean())
    return SeedCombined(mean, (mean - half, mean + half), int(v.size), tuple(float(x) for x in v), sd,
                        f"mean of {v.size} training seeds; interval: seed t-interval widened by the item variance")
