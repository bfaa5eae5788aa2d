"""Small robust statistics behind the scores (pure functions over plain numbers).

The beacon score follows the idea of RITA's beacon analysis: a call-back series is
suspicious when the intervals between connections, and the sizes of the requests, are
both tightly clustered and symmetric. "Tight" and "symmetric" are measured with
statistics that ignore outliers (quartiles and medians), so a beacon with jitter or a few
missed check-ins still scores high, while a human's bursty use does not.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of already sorted values, by linear interpolation."""
    if not sorted_values:
        raise ValueError("quantile of an empty series")
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    """Median of unsorted values."""
    return quantile(sorted(values), 0.5)


def bowley_skewness(values: Sequence[float], *, tolerance: float = 0.0) -> float:
    """Bowley's quartile skewness, (Q3 + Q1 - 2*Q2) / (Q3 - Q1), in [-1, 1].

    0 means the middle half of the values is symmetric around the median. A series whose
    interquartile range is at most ``tolerance`` times its median has no spread worth
    calling skewed: 0. (Without this, 20 identical sizes and 3 slightly larger ones put
    Q1 = Q2 and read as skew 1, the opposite of the truth.)
    """
    s = sorted(values)
    q1, q2, q3 = quantile(s, 0.25), quantile(s, 0.5), quantile(s, 0.75)
    if q3 - q1 <= max(0.0, tolerance * abs(q2)):
        return 0.0
    return (q3 + q1 - 2 * q2) / (q3 - q1)


def mad(values: Sequence[float]) -> float:
    """Median absolute deviation from the median: the robust counterpart of std dev."""
    m = median(values)
    return median([abs(v - m) for v in values])


@dataclass(frozen=True)
class BeaconScore:
    """Parts of a beacon score, each in [0, 1] (1 = most beacon-like)."""

    interval_skew: float
    interval_madm: float
    count: float
    size_skew: float
    size_madm: float
    size_smallness: float
    connections: int
    median_interval: float
    median_size: float

    @property
    def timing(self) -> float:
        """Regularity of the gaps alone (skew and MAD parts), without the count."""
        return (self.interval_skew + self.interval_madm) / 2

    @property
    def interval(self) -> float:
        """Timing regularity: mean of the interval parts."""
        return (self.interval_skew + self.interval_madm + self.count) / 3

    @property
    def size(self) -> float:
        """Size regularity: mean of the size parts."""
        return (self.size_skew + self.size_madm + self.size_smallness) / 3

    @property
    def score(self) -> float:
        """Overall score: the mean of timing and size regularity."""
        return (self.interval + self.size) / 2


def beacon_score(
    times: Sequence[float],
    sizes: Sequence[float],
    *,
    full_count: int,
    size_reference_bytes: int,
    skew_tolerance: float = 0.0,
) -> BeaconScore:
    """Score a call-back series: ``times`` (sorted starts) and per-call ``sizes`` (bytes).

    Interval parts: ``1 - |Bowley skew|`` of the gaps; ``1 - MAD/median`` of the gaps
    (dispersion relative to the period, so 10 s of jitter matters on a 30 s beacon and
    not on an hourly one); ``n / full_count`` capped at 1 (more evidence, more weight).
    Size parts: the same skew and relative MAD over sizes, and smallness
    ``1 - mode/size_reference_bytes`` (C2 check-ins are small; bulk transfers are not).
    Skews of series whose interquartile range is within ``skew_tolerance`` of their
    median count as 0 (see :func:`bowley_skewness`).
    """
    if len(times) < 3 or len(sizes) != len(times):
        raise ValueError("a beacon score needs at least 3 call-backs, with one size each")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    gap_median = median(gaps)
    gap_madm = 1.0 - mad(gaps) / gap_median if gap_median > 0 else 0.0
    size_median = median(sizes)
    size_madm = 1.0 - mad(sizes) / size_median if size_median > 0 else 1.0
    # The mode of sizes, rounded to 10 bytes so that near-equal requests count as equal.
    mode = Counter(round(s, -1) for s in sizes).most_common(1)[0][0]
    return BeaconScore(
        interval_skew=1.0 - abs(bowley_skewness(gaps, tolerance=skew_tolerance)),
        interval_madm=max(0.0, gap_madm),
        count=min(1.0, len(times) / full_count),
        size_skew=1.0 - abs(bowley_skewness(sizes, tolerance=skew_tolerance)),
        size_madm=max(0.0, size_madm),
        size_smallness=max(0.0, 1.0 - mode / size_reference_bytes),
        connections=len(times),
        median_interval=gap_median,
        median_size=size_median,
    )


def regularity_gate(n_gaps: int, *, floor: float, random_madm: float, k: float) -> float:
    """The interval MAD part a series of ``n_gaps`` gaps must reach to count as clocked.

    ``floor``, raised for small samples to ``random_madm + k / sqrt(n)``: uniformly random
    gaps score ``random_madm`` on average with a sampling spread of about 0.52/sqrt(n), so
    a short random series must not pass by luck.
    """
    if n_gaps <= 0:
        return 1.0
    return max(floor, random_madm + k / math.sqrt(n_gaps))


def shannon_entropy(text: str) -> float:
    """Shannon entropy of the characters of ``text``, in bits per character."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def robust_z(value: float, history: Sequence[float]) -> float:
    """How many robust standard deviations (1.4826 x MAD) ``value`` lies above the median.

    A zero MAD (a perfectly steady history) is replaced by 1 byte so the result stays
    finite; the caller's ratio and floor thresholds keep that case sane.
    """
    m = median(history)
    spread = 1.4826 * mad(history) or 1.0
    return (value - m) / spread
