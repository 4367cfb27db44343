"""Metric values as the master stores them: finite JSON numbers.

Training code hands over whatever it computed: Python floats, numpy scalars, one-element torch
tensors. Those are converted here, on the trial's side, so that a NaN loss or a forgotten
``.item()`` fails in the training script with the metric's name rather than as an opaque 400
from the master (JSON has no NaN) or a silently wrong chart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

Number = int | float


class InvalidMetricError(ValueError):
    """A metric that is not a finite number; the message names it and says what it was."""


def to_number(value: Any, name: str) -> Number:
    """``value`` as a finite ``int`` or ``float``; numpy and torch scalars are unwrapped."""
    if isinstance(value, bool):
        raise InvalidMetricError(
            f"metric {name!r} is a bool ({value}); report a number (e.g. float({value}))"
        )
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        number: Number = value
    elif callable(getattr(value, "item", None)):
        # numpy scalars and arrays, torch tensors: anything with exactly one element.
        size = _element_count(value)
        if size is not None and size != 1:
            raise InvalidMetricError(
                f"metric {name!r} is a {type(value).__name__} with {size} elements; report one "
                "number (for example loss.item() or values.mean().item())"
            )
        try:
            item = value.item()
        except (ValueError, RuntimeError, TypeError) as exc:
            raise InvalidMetricError(f"metric {name!r} is not a single number: {exc}") from None
        return to_number(item, name)
    else:
        raise InvalidMetricError(
            f"metric {name!r} must be a number, got {type(value).__name__} {value!r:.80}"
        )
    if not math.isfinite(number):
        raise InvalidMetricError(
            f"metric {name!r} is {number}: metrics must be finite numbers (a diverging loss? "
            "check the learning rate)"
        )
    return number


def check_metrics(metrics: Mapping[str, Any], what: str = "metrics") -> dict[str, Number]:
    """Every value of ``metrics`` through :func:`to_number`; names must be non-empty strings."""
    if not isinstance(metrics, Mapping):
        raise InvalidMetricError(
            f"{what} must be a dict of metric names to numbers, got {type(metrics).__name__}"
        )
    checked: dict[str, Number] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise InvalidMetricError(
                f"{what}: metric names must be non-empty strings, got {name!r}"
            )
        checked[name] = to_number(value, name)
    return checked


def _element_count(value: Any) -> int | None:
    numel = getattr(value, "numel", None)
    if callable(numel):
        count = numel()
        return int(count) if isinstance(count, int) else None
    size = getattr(value, "size", None)
    return size if isinstance(size, int) else None
