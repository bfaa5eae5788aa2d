"""Table-driven tests of the statistics behind the scores, with hand-worked values."""

from __future__ import annotations

import math
import random

import pytest
from mimamori.detect.stats import (
    beacon_score,
    bowley_skewness,
    mad,
    median,
    quantile,
    regularity_gate,
    robust_z,
    shannon_entropy,
)


def _times(gaps: list[float]) -> list[float]:
    out = [0.0]
    for g in gaps:
        out.append(out[-1] + g)
    return out


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1, 2, 3, 4, 5], 0.5, 3.0),
        ([1, 2, 3, 4], 0.5, 2.5),  # interpolated between 2 and 3
        ([1, 2, 3, 4, 5], 0.25, 2.0),  # position 1.0
        ([0, 10], 0.25, 2.5),  # position 0.25 of the way from 0 to 10
    ],
)
def test_quantile(values: list[float], q: float, expected: float) -> None:
    assert quantile(values, q) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "tolerance", "expected"),
    [
        ([10, 10, 10, 10], 0.0, 0.0),  # no spread: no skew
        ([1, 2, 3, 4, 5], 0.0, 0.0),  # symmetric
        # Q1=2, Q2=2, Q3=10 (positions 1, 2, 3 of 5): (10 + 2 - 4) / 8 = 1
        ([1, 2, 2, 10, 11], 0.0, 1.0),
        # Q1=1, Q2=9, Q3=10: (10 + 1 - 18) / 9 = -7/9
        ([0, 1, 9, 10, 10], 0.0, -7 / 9),
        # 9 equal sizes and 4 larger ones (13 values): Q1 = Q2 = 1773 (positions 3, 6),
        # Q3 = 1839 (position 9). Untolerated that reads as skew (1839+1773-3546)/66 = 1;
        # but the IQR (66) is within 10 % of the median, so it is not skew at all.
        ([1773] * 9 + [1839, 1905, 1971, 2037], 0.1, 0.0),
        ([1773] * 9 + [1839, 1905, 1971, 2037], 0.0, 1.0),
    ],
)
def test_bowley_skewness(values: list[float], tolerance: float, expected: float) -> None:
    assert bowley_skewness(values, tolerance=tolerance) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([1, 2, 3, 4, 5], 1.0), ([10, 10, 10], 0.0), ([1, 1, 2, 2, 4, 6, 9], 1.0)],
)
def test_mad(values: list[float], expected: float) -> None:
    assert mad(values) == pytest.approx(expected)


def test_beacon_score_perfectly_regular() -> None:
    # 20 call-backs every 10 s, 100 bytes each. Gaps: no spread -> skew part 1, MAD part 1;
    # count 20/50 = 0.4. Sizes: skew 1, MAD 1, smallness 1 - 100/65535.
    s = beacon_score(_times([10] * 19), [100] * 20, full_count=50, size_reference_bytes=65535)
    assert (s.interval_skew, s.interval_madm, s.count) == (1.0, 1.0, 0.4)
    assert s.size_smallness == pytest.approx(1 - 100 / 65535)
    assert s.interval == pytest.approx(2.4 / 3)
    assert s.size == pytest.approx((2 + 1 - 100 / 65535) / 3)
    assert s.score == pytest.approx((0.8 + (3 - 100 / 65535) / 3) / 2)  # 0.899746
    assert s.timing == 1.0
    assert s.median_interval == 10


def test_beacon_score_symmetric_jitter() -> None:
    # Gaps cycle 8, 9, 10, 11, 12 (20 gaps, 21 call-backs): Q1 9, Q2 10, Q3 11 -> skew 0;
    # deviations from 10 are 2,1,0,1,2 -> MAD 1 -> MAD part 1 - 1/10 = 0.9; count 21/50.
    s = beacon_score(
        _times([8, 9, 10, 11, 12] * 4), [100] * 21, full_count=50, size_reference_bytes=65535
    )
    assert s.interval_skew == pytest.approx(1.0)
    assert s.interval_madm == pytest.approx(0.9)
    assert s.count == pytest.approx(0.42)
    assert s.timing == pytest.approx(0.95)
    assert s.score == pytest.approx(((1 + 0.9 + 0.42) / 3 + (3 - 100 / 65535) / 3) / 2)


def test_beacon_score_large_transfers_lose_smallness() -> None:
    # Regular but every call moves 64 KiB: the smallness part drops to 0.
    s = beacon_score(_times([60] * 49), [65535] * 50, full_count=50, size_reference_bytes=65535)
    assert s.size_smallness == 0.0
    assert s.count == 1.0


def test_beacon_score_random_arrivals_do_not_look_clocked() -> None:
    # Poisson arrivals: gaps exponential. Expected Bowley skew about 0.26 and MAD/median
    # about 0.69, so the timing part sits near 0.52, well under the 0.7 gate.
    rng = random.Random(7)
    gaps = [rng.expovariate(1 / 30) for _ in range(400)]
    s = beacon_score(_times(gaps), [500] * 401, full_count=50, size_reference_bytes=65535)
    # Exponential gaps: MAD/median is about 0.69, so the MAD part is about 0.31.
    assert 0.15 < s.interval_madm < 0.5
    assert s.timing < 0.65


def test_beacon_score_rejects_short_series() -> None:
    with pytest.raises(ValueError):
        beacon_score([0, 1], [1, 1], full_count=50, size_reference_bytes=65535)


@pytest.mark.parametrize(
    ("gaps", "expected"),
    [
        (19, 0.5 + 1.2 / math.sqrt(19)),  # 0.775: a short series must be clearly clocked
        (25, 0.74),  # 0.5 + 1.2 / 5
        (36, 0.7),  # 0.5 + 1.2 / 6 meets the floor
        (400, 0.7),  # the floor
        (0, 1.0),
    ],
)
def test_regularity_gate(gaps: int, expected: float) -> None:
    assert regularity_gate(gaps, floor=0.7, random_madm=0.5, k=1.2) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0.0),
        ("aaaa", 0.0),
        ("ab", 1.0),
        ("abcd", 2.0),
        ("0123456789abcdef", 4.0),  # every hex digit once: log2(16)
    ],
)
def test_shannon_entropy(text: str, expected: float) -> None:
    assert shannon_entropy(text) == pytest.approx(expected)


def test_median_and_robust_z() -> None:
    history = [10.0, 12.0, 11.0, 9.0, 10.0]  # median 10, MAD 1 -> spread 1.4826
    assert median(history) == 10
    assert robust_z(10 + 1.4826 * 6, history) == pytest.approx(6.0)
    assert math.isfinite(robust_z(5.0, [3.0, 3.0, 3.0]))  # zero MAD stays finite
