"""``det cluster cost``'s time parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cli.cluster import parse_since
from cli.errors import CliError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30m", "2026-03-01T11:30:00Z"),
        ("24h", "2026-02-28T12:00:00Z"),
        ("7d", "2026-02-22T12:00:00Z"),
        ("2026-02-01T00:00:00", "2026-02-01T00:00:00Z"),
        ("2026-02-01T01:00:00+01:00", "2026-02-01T00:00:00Z"),
    ],
)
def test_since_accepts_durations_and_times(value: str, expected: str) -> None:
    assert parse_since(value, NOW) == expected


def test_since_rejects_nonsense_with_the_allowed_forms() -> None:
    with pytest.raises(CliError, match="expected a duration like 30m, 24h, 7d or an ISO time"):
        parse_since("yesterday", NOW)
