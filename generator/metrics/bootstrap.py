"""Bootstrap confidence intervals, their p-values, and verdicts that wait for the data.

Every number on the Findings page is a mean over photos (or units) with a 95 % **BCa** bootstrap
interval (bias-corrected and accelerated; Efron 1987, Efron & Tibshirani 1993): resample the n
values with replacement ``resamples`` times (seeded), take the mean of each resample, and read the
interval off those means at percentiles moved by the bias correction z₀ (how many resampled means
fall below the sample mean) and the acceleration a (the skewness of the jackknife means). At small n
the plain percentile interval is too narrow for skewed data; the tests check the BCa interval's
coverage on simulated normal and skewed samples at :data:`MIN_N`.

A verdict against a threshold needs at least :data:`MIN_N` values (``[findings] min_n``): below it
the page shows the numbers and "not enough photos (n = k < 20): the full build decides". At or above
it the verdict is given only when the whole interval lies on one side of the threshold; otherwise it
is "undecided at n = …". :func:`p_values` gives the one-sided significance levels that go with the
interval, for the multiple-comparison correction of the verdicts (:func:`.verdicts.holm`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri, stdtr, stdtrit

LEVEL = 0.95
RESAMPLES = 2000
#: the fewest values (photos) a verdict is given on
MIN_N = 20
METHODS = ("bca", "percentile")

#: what a verdict says when n is below the minimum (the profile that builds the full n decides)
FEW = "not enough photos (n = {n} < {min_n}): the full build decides"


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}


def _finite(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def _means(v: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The means of ``resamples`` seeded resamples of ``v`` (with replacement)."""
    n = v.size
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for s in range(0, resamples, 500):  # bounded memory for large n
        k = min(500, resamples - s)
        means[s : s + k] = v[rng.integers(0, n, size=(k, n))].mean(1)
    return means


def _bca_constants(v: np.ndarray, means: np.ndarray) -> tuple[float, float]:
    """z₀ (bias correction: the share of resampled means below the mean, ties counted half) and
    a (acceleration: from the jackknife means; for the mean it is Σd³ / (6 (Σd²)^1.5), d = x − x̄)."""
    m = float(v.mean())
    b = means.size
    share = (np.count_nonzero(means < m) + 0.5 * np.count_nonzero(means == m)) / b
    z0 = float(ndtri(np.clip(share, 1.0 / (b + 1), b / (b + 1.0))))
    d = v - m
    ss = float((d * d).sum())
    a = float((d ** 3).sum() / (6.0 * ss ** 1.5)) if ss > 0 else 0.0
    return z0, a


def _expanded(p: float, n: int) -> float:
    """The normal quantile BCa uses for level ``p`` at ``n`` values, widened as in Hesterberg's (2015)
    expanded percentile interval: √(n / (n − 1)) × Student's t quantile with n − 1 degrees of freedom
    (the resampled means spread by the plug-in variance, 1/n instead of 1/(n − 1), and a z quantile
    is too short for an estimated spread)."""
    return float(np.sqrt(n / (n - 1.0)) * stdtrit(n - 1, p))


def _unexpanded(z: float, n: int) -> float:
    """The level (0–1) whose :func:`_expanded` quantile is ``z``."""
    return float(stdtr(n - 1, z / np.sqrt(n / (n - 1.0))))


def _bca_level(z: float, z0: float, a: float) -> float:
    """The percentile (0–1) of the resampled means at which BCa puts the normal quantile ``z``."""
    u = z0 + z
    den = 1.0 - a * u
    if den <= 0:  # beyond what the acceleration can reach: the extreme resample
        return 1.0 if u > 0 else 0.0
    return float(ndtr(z0 + u / den))


def mean_ci(values, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0,
            method: str = "bca") -> Interval:
    """Mean of ``values`` (NaNs dropped) with its bootstrap interval: ``"bca"`` (default) or
    ``"percentile"`` (the 2.5th and 97.5th percentiles of the resampled means)."""
    if method not in METHODS:
        raise ValueError(f"unknown interval method {method!r}; known: {', '.join(METHODS)}")
    v = _finite(values)
    n = int(v.size)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    m = float(v.mean())
    if n == 1:
        return Interval(m, float("nan"), float("nan"), 1)
    if np.all(v == v[0]):  # no spread: every resample has the same mean
        return Interval(m, m, m, n)
    means = _means(v, resamples, seed)
    a2 = (1.0 - level) / 2.0
    if method == "percentile":
        q = [a2, 1.0 - a2]
    else:
        z0, acc = _bca_constants(v, means)
        z = _expanded(1.0 - a2, n)
        q = [_bca_level(-z, z0, acc), _bca_level(z, z0, acc)]
    lo, hi = np.quantile(means, q)
    return Interval(m, float(min(lo, m)), float(max(hi, m)), n)


#: beyond these shares of the resampled means the share is too coarse for a p-value: the tail is extended
TAIL = (0.01, 0.05)


def _z_at(means: np.ndarray, t: float) -> float:
    """Φ⁻¹ of the bootstrap distribution at ``t``: the share of resampled means below ``t`` (ties counted
    half); beyond the outer :data:`TAIL` [0] of the resamples, where a share of 2,000 cannot resolve the
    levels a correction over hundreds of verdicts needs, the straight line in Φ⁻¹ through the outer 1 %
    and 5 % quantiles (a normal tail fitted there; the bootstrap standard error where they coincide)."""
    b = means.size
    srt = np.sort(means)
    p1, p5 = TAIL
    q = np.quantile(srt, [p1, p5, 1 - p5, 1 - p1])
    z1, z5 = float(ndtri(p1)), float(ndtri(p5))
    se = float(means.std(ddof=1))
    if t < q[0]:
        slope = (z5 - z1) / (q[1] - q[0]) if q[1] > q[0] else 1.0 / se
        return z1 + (t - q[0]) * slope
    if t > q[3]:
        slope = (z5 - z1) / (q[3] - q[2]) if q[3] > q[2] else 1.0 / se
        return -z1 + (t - q[3]) * slope
    below = np.searchsorted(srt, t, "left")
    share = (below + 0.5 * (np.searchsorted(srt, t, "right") - below)) / b
    return float(ndtri(np.clip(share, 0.5 / b, 1 - 0.5 / b)))


def p_values(values, threshold: float, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """One-sided BCa significance levels ``(p_above, p_below)`` of the claims "the mean is at or above
    ``threshold``" and "the mean is below it": the level at which the BCa bound of :func:`mean_ci`
    (same resamples) reaches the threshold, so that the interval clears the threshold exactly when
    the two-sided level (:func:`p_two_sided`) is below 5 %. With the bootstrap distribution at
    Φ(w) at the threshold (:func:`_z_at`), z* solves BCa's z₀ + (z₀ + z*) / (1 − a (z₀ + z*)) = w,
    i.e. z* = (w − z₀) / (1 + a (w − z₀)) − z₀, and p_above = Φ(z*), p_below = Φ(−z*) (Φ widened for n
    as the interval is). NaN, NaN with fewer than 2 values; with no spread 0 on the side the values
    lie (the threshold itself counts as "at or above") and 1 on the other."""
    v = _finite(values)
    if v.size < 2:
        return float("nan"), float("nan")
    m = float(v.mean())
    if np.all(v == v[0]):
        return (0.0, 1.0) if m >= threshold else (1.0, 0.0)
    means = _means(v, resamples, seed)
    if not float(means.std()) > 0:
        return (0.0, 1.0) if m >= threshold else (1.0, 0.0)
    z0, a = _bca_constants(v, means)
    w = _z_at(means, float(threshold)) - z0
    den = 1.0 + a * w
    if den <= 0:  # the threshold lies beyond every level BCa can reach on that side
        z = -np.inf if w < 0 else np.inf
    else:
        z = w / den - z0
    return _unexpanded(z, v.size), _unexpanded(-z, v.size)


def p_two_sided(values, threshold: float, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """2 × the smaller one-sided level of :func:`p_values` (capped at 1): the p-value that goes with
    the rule "a verdict when the 95 % interval lies on one side of the threshold"."""
    pa, pb = p_values(values, threshold, resamples, seed)
    return float(min(1.0, 2.0 * min(pa, pb))) if pa == pa else float("nan")


def few(n: int, min_n: int = MIN_N) -> str:
    return FEW.format(n=n, min_n=min_n)


def verdict(iv: Interval, threshold: float, above: str, below: str, min_n: int = MIN_N) -> str:
    """``above`` when the interval lies entirely at/above ``threshold``, ``below`` when entirely
    under it, else ``"undecided at n = …"``; below ``min_n`` values "not enough photos (…)"."""
    if iv.n < min_n:
        return few(iv.n, min_n)
    if iv.n < 2 or not np.isfinite(iv.lo):
        return f"undecided at n = {iv.n}"
    if iv.lo >= threshold:
        return above
    if iv.hi < threshold:
        return below
    return f"undecided at n = {iv.n}"


#: how the texts that are no verdict begin
NOT_DECIDED = ("undecided", "not enough photos", "no map", "not measured")


def decided(text: str) -> bool:
    return not text.startswith(NOT_DECIDED)


def too_few(text: str) -> bool:
    """The verdict waits for more photos (n below the minimum)."""
    return text.startswith("not enough photos")


def fmt(iv: Interval | dict, nd: int = 2) -> str:
    """"0.53 [0.41, 0.66]" (real minus signs; NaN as an en dash)."""
    d = iv.as_dict() if isinstance(iv, Interval) else iv

    def f(x):
        x = float(x)
        return "–" if x != x else f"{x:.{nd}f}".replace("-", "−")

    return f"{f(d['mean'])} [{f(d['lo'])}, {f(d['hi'])}]"
