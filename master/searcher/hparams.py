"""Hyperparameter values from their normalized specs: random samples and grid points.

The config (``harness.experiment_config.normalize_hyperparameters``) has already made every leaf
a spec dict with ``type``; a dict without ``type`` is a nested group, which becomes a nested dict
of values here. Randomness comes only from the ``random.Random`` passed in, so a seeded searcher
samples the same values again after a restore.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Iterator
from typing import Any

ROOT = "hyperparameters"


def _is_leaf(spec: Any) -> bool:
    return isinstance(spec, dict) and "type" in spec


def sample_hparams(space: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One random point of ``space``: const → its value; int → uniform over minval..maxval
    inclusive; double → uniform in [minval, maxval]; log → base ** uniform(minval, maxval);
    categorical → a uniformly chosen value. Names are visited in the order of ``space``."""
    out: dict[str, Any] = {}
    for name, spec in space.items():
        out[name] = _sample_one(spec, rng) if _is_leaf(spec) else sample_hparams(spec, rng)
    return out


def _sample_one(spec: dict[str, Any], rng: random.Random) -> Any:
    kind = spec["type"]
    if kind == "const":
        return copy.deepcopy(spec["val"])
    if kind == "int":
        return rng.randint(int(spec["minval"]), int(spec["maxval"]))
    if kind == "double":
        return rng.uniform(float(spec["minval"]), float(spec["maxval"]))
    if kind == "log":
        exponent = rng.uniform(float(spec["minval"]), float(spec["maxval"]))
        return float(spec["base"]) ** exponent
    if kind == "categorical":
        return copy.deepcopy(rng.choice(spec["vals"]))
    raise ValueError(f"unknown hyperparameter type {kind!r}")


def round_half_away(x: float) -> int:
    """Round like Go's ``math.Round`` (half away from zero), not Python's banker's rounding, so
    grid points and rung lengths do not depend on whether x.5 sits on an even number."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def grid_values(spec: dict[str, Any], path: str) -> list[Any]:
    """The grid axis of one hyperparameter (Determined's ``grid.go`` rules).

    int: ``count`` integers evenly spaced from minval to maxval, rounded; count is clamped to
    the number of integers in the range so the points are distinct. double: ``count`` points
    evenly spaced including both ends. log: base ** (those points over the exponent range).
    ``count == 1`` gives the midpoint (of the exponents for log). categorical: all ``vals``;
    const: its value.
    """
    kind = spec["type"]
    if kind == "const":
        return [copy.deepcopy(spec["val"])]
    if kind == "categorical":
        return copy.deepcopy(list(spec["vals"]))
    count = spec.get("count")
    if count is None:
        raise ValueError(f"{path}: the grid searcher needs `count`")
    if kind == "int":
        lo, hi = int(spec["minval"]), int(spec["maxval"])
        count = min(int(count), hi - lo + 1)
        if count == 1:
            return [round_half_away((lo + hi) / 2)]
        points = [round_half_away(lo + i * (hi - lo) / (count - 1)) for i in range(count)]
        return list(dict.fromkeys(points))  # spacing >= 1 keeps them distinct; belt and braces
    if kind in ("double", "log"):
        lo_f, hi_f = float(spec["minval"]), float(spec["maxval"])
        if count == 1:
            xs = [(lo_f + hi_f) / 2]
        else:
            xs = [lo_f + i * (hi_f - lo_f) / (count - 1) for i in range(count)]
        if kind == "log":
            base = float(spec["base"])
            return [base**x for x in xs]
        return xs
    raise ValueError(f"{path}: unknown hyperparameter type {kind!r}")


def _leaves(
    space: dict[str, Any], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, spec in space.items():
        where = (*path, name)
        if _is_leaf(spec):
            yield where, spec
        else:
            yield from _leaves(spec, where)


def _build(
    space: dict[str, Any], values: dict[tuple[str, ...], Any], path: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A point shaped like ``space`` (same key order, groups as nested dicts)."""
    out: dict[str, Any] = {}
    for name, spec in space.items():
        where = (*path, name)
        out[name] = copy.deepcopy(values[where]) if _is_leaf(spec) else _build(spec, values, where)
    return out


def grid_points(space: dict[str, Any]) -> list[dict[str, Any]]:
    """The cartesian product of every hyperparameter's grid axis, the first hyperparameter
    varying slowest. No hyperparameters at all is one point, ``{}``. Raises ``ValueError``
    naming the path of the first int/double/log hyperparameter without ``count``."""
    leaves = list(_leaves(space))
    axes = [grid_values(spec, ".".join((ROOT, *path))) for path, spec in leaves]
    paths = [path for path, _ in leaves]
    return [
        _build(space, dict(zip(paths, combo, strict=True))) for combo in itertools.product(*axes)
    ]
