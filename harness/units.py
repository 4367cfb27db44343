"""Shorthand units shared by every config model: durations like ``30s``, ``20m``, ``off``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
ALLOWED_SECONDS = "a number of seconds, or a number followed by ms|s|m|h|d (e.g. 500ms, 10s, 5m)"
ALLOWED_DURATIONS = (
    "a number of seconds, or a number followed by ms|s|m|h|d (e.g. 30s, 20m), or 'off'"
)


def parse_duration(value: object) -> timedelta | None:
    """Parse ``30s``/``20m``/``1.5h``/``90`` (seconds) into a timedelta; ``off`` means None.

    Raises ValueError naming the allowed forms for anything else, so pydantic reports it against
    the field that held it.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in {"off", "none"}):
        return None
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: expected {ALLOWED_DURATIONS}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"invalid duration {value!r}: expected {ALLOWED_DURATIONS}")
    return timedelta(seconds=float(match.group(1)) * _SECONDS[match.group(2)])


def format_duration(value: timedelta | None) -> str:
    """The inverse of :func:`parse_duration`, for docs and messages."""
    if value is None:
        return "off"
    seconds = value.total_seconds()
    for unit in ("d", "h", "m"):
        if seconds >= _SECONDS[unit] and seconds % _SECONDS[unit] == 0:
            return f"{int(seconds // _SECONDS[unit])}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
"""A required duration field: ``30s``, ``20m``, seconds as a number."""

OptionalDuration = Annotated[
    timedelta | None,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""A duration field that may be ``off``."""


def parse_seconds(value: object) -> object:
    """A duration as float seconds, for fields that hold seconds: ``"500ms"``, ``"10s"``,
    ``"5m"`` or a number. ``off`` is refused (these fields need a value)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    try:
        parsed = parse_duration(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValueError(f"invalid duration {value!r}: expected {ALLOWED_SECONDS}")
    return parsed.total_seconds()


Seconds = Annotated[float, BeforeValidator(parse_seconds)]
"""A duration field stored as float seconds."""
