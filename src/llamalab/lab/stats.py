"""Summary statistics over repeated measurements.

llama-bench reports mean ± sample standard deviation of tokens/s; the studies report
min / median / max over repeats and percentiles of per-token latency. Both live here,
as pure functions of plain lists, so tests can check them by hand.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence


@dataclass(frozen=True)
class Summary:
    """One metric over n repeats."""

    n: int
    mean: float
    stddev: float  # sample standard deviation (n - 1), 0 for a single value
    median: float
    min: float
    max: float
    p90: float

    def as_dict(self) -> dict:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (NumPy's default)."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sample stddev, median, min, max and p90 of a non-empty list."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("summarize needs at least one value")
    n = len(xs)
    mean = math.fsum(xs) / n
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
    return Summary(n=n, mean=mean, stddev=math.sqrt(var), median=percentile(xs, 50), min=min(xs),
                   max=max(xs), p90=percentile(xs, 90))


def rate(tokens: int, seconds: float | None) -> float | None:
    """tokens / seconds, or None when nothing was timed."""
    if not seconds or seconds <= 0 or tokens <= 0:
        return None
    return tokens / seconds


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline, None when either is missing or the baseline is zero."""
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline
