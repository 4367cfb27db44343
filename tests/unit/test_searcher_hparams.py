"""Hyperparameter sampling and grid expansion (``master.searcher.hparams``)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.experiment_config import normalize_hyperparameters
from master.searcher import grid_points, sample_hparams
from master.searcher.hparams import round_half_away

SPACE = normalize_hyperparameters(
    {
        "global_batch_size": 32,
        "layers": {"type": "int", "minval": 1, "maxval": 4},
        "dropout": {"type": "double", "minval": 0.1, "maxval": 0.5},
        "lr": {"type": "log", "minval": -4, "maxval": -1, "base": 10},
        "act": {"type": "categorical", "vals": ["relu", "tanh", {"kind": "gelu"}]},
        "optimizer": {
            "name": "adam",
            "betas": {"b1": {"type": "double", "minval": 0.8, "maxval": 0.99}},
        },
    }
)


def test_sample_shapes_and_constants() -> None:
    point = sample_hparams(SPACE, random.Random(1))
    assert list(point) == ["global_batch_size", "layers", "dropout", "lr", "act", "optimizer"]
    assert point["global_batch_size"] == 32
    assert point["optimizer"]["name"] == "adam"
    assert set(point["optimizer"]["betas"]) == {"b1"}
    assert isinstance(point["layers"], int)


def test_samples_cover_the_int_range_inclusively_and_every_category() -> None:
    rng = random.Random(3)
    points = [sample_hparams(SPACE, rng) for _ in range(400)]
    assert {p["layers"] for p in points} == {1, 2, 3, 4}
    assert {str(p["act"]) for p in points} == {"relu", "tanh", "{'kind': 'gelu'}"}


def test_sampled_values_are_copies() -> None:
    rng = random.Random(0)
    point = sample_hparams(SPACE, rng)
    point["optimizer"]["name"] = "sgd"
    if isinstance(point["act"], dict):
        point["act"]["kind"] = "changed"
    assert SPACE["optimizer"]["name"]["val"] == "adam"
    assert SPACE["act"]["vals"][2] == {"kind": "gelu"}


def test_same_seed_same_samples_other_seed_differs() -> None:
    def draw(seed: int) -> list[dict[str, Any]]:
        rng = random.Random(seed)
        return [sample_hparams(SPACE, rng) for _ in range(5)]

    assert draw(11) == draw(11)
    assert draw(11) != draw(12)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    lo=st.integers(min_value=-50, max_value=50),
    width=st.integers(min_value=0, max_value=30),
    dlo=st.floats(min_value=-10, max_value=10),
    dwidth=st.floats(min_value=0, max_value=10),
    base=st.sampled_from([2.0, math.e, 10.0]),
)
def test_samples_stay_within_bounds(
    seed: int, lo: int, width: int, dlo: float, dwidth: float, base: float
) -> None:
    space = normalize_hyperparameters(
        {
            "i": {"type": "int", "minval": lo, "maxval": lo + width},
            "d": {"type": "double", "minval": dlo, "maxval": dlo + dwidth},
            "g": {"type": "log", "minval": dlo, "maxval": dlo + dwidth, "base": base},
        }
    )
    point = sample_hparams(space, random.Random(seed))
    assert lo <= point["i"] <= lo + width
    assert dlo <= point["d"] <= dlo + dwidth
    exponent = math.log(point["g"], base)
    assert dlo - 1e-9 <= exponent <= dlo + dwidth + 1e-9


# ---- grid ----------------------------------------------------------------------------------


def grid(space: dict[str, Any]) -> list[dict[str, Any]]:
    return grid_points(normalize_hyperparameters(space))


def test_grid_is_the_cartesian_product_first_name_slowest() -> None:
    points = grid(
        {
            "a": {"type": "categorical", "vals": ["x", "y"]},
            "b": {"type": "int", "minval": 0, "maxval": 10, "count": 3},
            "c": 7,
        }
    )
    assert points == [
        {"a": "x", "b": 0, "c": 7},
        {"a": "x", "b": 5, "c": 7},
        {"a": "x", "b": 10, "c": 7},
        {"a": "y", "b": 0, "c": 7},
        {"a": "y", "b": 5, "c": 7},
        {"a": "y", "b": 10, "c": 7},
    ]


def test_grid_nested_groups() -> None:
    points = grid(
        {
            "opt": {"name": "sgd", "lr": {"type": "double", "minval": 0, "maxval": 1, "count": 2}},
            "empty": {},
        }
    )
    assert points == [
        {"opt": {"name": "sgd", "lr": 0.0}, "empty": {}},
        {"opt": {"name": "sgd", "lr": 1.0}, "empty": {}},
    ]


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        ({"type": "int", "minval": 1, "maxval": 4, "count": 10}, [1, 2, 3, 4]),
        ({"type": "int", "minval": 0, "maxval": 9, "count": 4}, [0, 3, 6, 9]),
        ({"type": "int", "minval": 0, "maxval": 10, "count": 4}, [0, 3, 7, 10]),
        ({"type": "int", "minval": 1, "maxval": 4, "count": 1}, [3]),  # 2.5 rounds away from 0
        ({"type": "int", "minval": -4, "maxval": -1, "count": 1}, [-3]),
        ({"type": "int", "minval": 5, "maxval": 5, "count": 3}, [5]),
        ({"type": "double", "minval": 0, "maxval": 1, "count": 5}, [0, 0.25, 0.5, 0.75, 1]),
        ({"type": "double", "minval": 2, "maxval": 4, "count": 1}, [3.0]),
        ({"type": "log", "minval": -3, "maxval": -1, "count": 3}, [1e-3, 1e-2, 1e-1]),
        ({"type": "log", "minval": 1, "maxval": 3, "base": 2, "count": 1}, [4.0]),
        ({"type": "categorical", "vals": [1, "two", None]}, [1, "two", None]),
        ({"type": "const", "val": [1, 2]}, [[1, 2]]),
    ],
)
def test_grid_axis(spec: dict[str, Any], values: list[Any]) -> None:
    got = [p["h"] for p in grid({"h": spec})]
    assert got == pytest.approx(values) if spec["type"] in ("double", "log") else got == values


@settings(max_examples=80, deadline=None)
@given(
    lo=st.integers(min_value=-100, max_value=100),
    width=st.integers(min_value=0, max_value=60),
    count=st.integers(min_value=1, max_value=80),
)
def test_int_grid_points_are_distinct_sorted_and_in_range(lo: int, width: int, count: int) -> None:
    got = [
        p["h"]
        for p in grid({"h": {"type": "int", "minval": lo, "maxval": lo + width, "count": count}})
    ]
    assert got == sorted(set(got))
    assert len(got) == min(count, width + 1)
    assert all(lo <= v <= lo + width for v in got)
    if len(got) > 1:
        assert got[0] == lo and got[-1] == lo + width


def test_grid_without_count_names_the_path() -> None:
    with pytest.raises(ValueError, match=r"^hyperparameters\.lr: the grid searcher needs `count`$"):
        grid({"lr": {"type": "double", "minval": 0, "maxval": 1}})
    with pytest.raises(ValueError, match=r"^hyperparameters\.opt\.decay: the grid searcher"):
        grid({"opt": {"decay": {"type": "log", "minval": -3, "maxval": 0}}})


def test_grid_of_no_hyperparameters_is_one_point() -> None:
    assert grid({}) == [{}]
    assert grid({"a": 1}) == [{"a": 1}]


def test_round_half_away_from_zero() -> None:
    assert [round_half_away(x) for x in (0.5, 1.5, 2.5, -0.5, -2.5, 2.4, -2.6)] == [
        1,
        2,
        3,
        -1,
        -3,
        2,
        -3,
    ]
