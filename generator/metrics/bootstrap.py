"""Bootstrap confidence intervals and verdicts that wait for the data.

Every number on the Findings page is a mean over photos (or units) with a 95 %
percentile-bootstrap interval (Efron & Tibshirani 1993): resample the n values with
replacement ``resamples`` times (seeded), take the mean of each resample, and report
the 2.5th and 97.5th percentiles of those means. A verdict against a threshold is
given only when the whole interval lies on one side of it; otherwise it is
"undecided at n = …".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}


def mean_ci(values, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Mean of ``values`` (NaNs dropped) with its percentile-bootstrap interval."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    m = float(v.mean())
    if n == 1:
        return Interval(m, float("nan"), float("nan"), 1)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for s in range(0, resamples, 500):  # bounded memory for large n
        k = min(500, resamples - s)
        means[s : s + k] = v[rng.integers(0, n, size=(k, n))].mean(1)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return Interval(m, float(lo), float(hi), n)


def verdict(iv: Interval, threshold: float, above: str, below: str) -> str:
    """``above`` when the interval lies entirely at/above ``threshold``, ``below`` when
    entirely under it, else ``"undecided at n = …"``."""
    if iv.n < 2 or not np.isfinite(iv.lo):
        return f"undecided at n = {iv.n}"
    if iv.lo >= threshold:
        return above
    if iv.hi < threshold:
        return below
    return f"undecided at n = {iv.n}"


def decided(text: str) -> bool:
    return not text.startswith("undecided")


def fmt(iv: Interval | dict, nd: int = 2) -> str:
    """"0.53 [0.41, 0.66]" (real minus signs; NaN as an en dash)."""
    d = iv.as_dict() if isinstance(iv, Interval) else iv

    def f(x):
        x = float(x)
        return "–" if x != x else f"{x:.{nd}f}".replace("-", "−")

    return f"{f(d['mean'])} [{f(d['lo'])}, {f(d['hi'])}]"
