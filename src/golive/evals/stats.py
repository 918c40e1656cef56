"""Summary statistics and the paired bootstrap used by `golive eval compare`."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

from golive.observe.requestlog import percentile


def mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def std(xs: list[float]) -> float | None:
    """Sample standard deviation (n - 1); 0 for a single value, None for none."""
    if not xs:
        return None
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def p(xs: list[float], q: float) -> float | None:
    return percentile(xs, q)


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    n: int  # paired cases
    mean_a: float
    mean_b: float
    diff: float  # mean(b - a)
    ci_low: float
    ci_high: float
    p_value: float  # two-sided: how often a resampled difference crosses zero
    samples: int

    @property
    def verdict(self) -> str:
        if self.ci_low > 0:
            return "better"
        if self.ci_high < 0:
            return "worse"
        return "no significant difference"


def paired_bootstrap(a: list[float], b: list[float], samples: int = 10_000,
                     confidence: float = 0.95, seed: int = 0) -> BootstrapResult:
    """Resample cases with replacement, keeping each case's (a, b) pair together.

    Pairing removes the between-case variance (some questions are hard for every
    variant), so a real difference shows with far fewer cases than two
    independent means would need. The interval is the percentile interval of the
    resampled mean differences; the p-value is twice the smaller tail mass at 0.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    if not a:
        raise ValueError("no paired cases to compare")
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = xb - xa
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(samples, len(d)))
    means = d[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    if np.all(d == 0):
        pv = 1.0
    else:
        pv = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return BootstrapResult(len(d), float(xa.mean()), float(xb.mean()), float(d.mean()),
                           float(lo), float(hi), pv, samples)


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
