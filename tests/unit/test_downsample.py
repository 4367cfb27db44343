"""master/downsample.py: at most max_points, a subsequence, the first, last and extreme points
kept, short series whole."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from master.downsample import downsample, downsample_points

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


def test_a_short_series_comes_back_whole() -> None:
    assert downsample([1, 2, 3], [5.0, 4.0, 3.0], 3) == [0, 1, 2]
    assert downsample([], [], 10) == []


def test_a_spike_in_a_flat_series_survives() -> None:
    xs = list(range(10_000))
    ys = [1.0] * 10_000
    ys[4_321] = 100.0
    ys[7_000] = -3.0
    kept = downsample(xs, ys, 100)
    assert len(kept) <= 100
    assert 4_321 in kept and 7_000 in kept
    assert kept[0] == 0 and kept[-1] == 9_999


def test_points_variant_keeps_pairs() -> None:
    points = [(float(i), math.sin(i / 10)) for i in range(1_000)]
    kept = downsample_points(points, 50)
    assert len(kept) <= 50
    assert kept[0] == points[0] and kept[-1] == points[-1]
    assert max(y for _, y in kept) == max(y for _, y in points)


def test_fewer_than_two_points_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        downsample([1, 2, 3], [1.0, 2.0, 3.0], 1)
    with pytest.raises(ValueError, match="differ in length"):
        downsample([1, 2], [1.0], 5)


@given(ys=st.lists(finite, max_size=400), max_points=st.integers(2, 120))
def test_properties(ys: list[float], max_points: int) -> None:
    xs = list(range(len(ys)))
    kept = downsample(xs, ys, max_points)
    assert len(kept) <= max(max_points, 0) or len(ys) <= max_points
    assert len(kept) <= max_points
    assert kept == sorted(set(kept)), "ascending, no repeats"
    assert all(0 <= i < len(ys) for i in kept)
    if len(ys) <= max_points:
        assert kept == xs
        return
    assert kept[0] == 0 and kept[-1] == len(ys) - 1
    if max_points >= 4:
        chosen = [ys[i] for i in kept]
        assert min(chosen) == min(ys) and max(chosen) == max(ys)
