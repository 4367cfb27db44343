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


def test_cost_table_names_the_idle_line_and_the_efficiency(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from cli import cluster

    asked: list[dict[str, str]] = []

    class Client:
        def get(self, path: str, params: dict[str, str]) -> dict[str, object]:
            asked.append(params)
            return {
                "since": "2026-03-01T00:00:00Z",
                "until": "2026-03-01T12:00:00Z",
                "totalUsd": 3.0,
                "idleUsd": 1.0,
                "instanceHours": 3.0,
                "efficiency": 2 / 3,
                "groups": [
                    {"key": "7", "usd": 2.0, "slotHours": 2.0, "idle": False},
                    {"key": "idle", "usd": 1.0, "slotHours": 1.0, "idle": True},
                ],
            }

    class Session:
        client = Client()

    monkeypatch.setattr(cluster, "setup_session", lambda args: Session())
    args = argparse.Namespace(
        since="2026-03-01T00:00:00", until="2026-03-01T12:00:00", by="experiment", json=False
    )
    cluster.show_cost(args)
    out = capsys.readouterr().out
    assert asked == [
        {"since": "2026-03-01T00:00:00Z", "groupBy": "experiment", "until": "2026-03-01T12:00:00Z"}
    ]
    assert "(idle: no task on it)" in out
    assert "67% of the paid slot-time ran tasks" in out


def test_an_ordinary_users_cost_says_it_is_their_share(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from cli import cluster

    class Client:
        def get(self, path: str, params: dict[str, str]) -> dict[str, object]:
            return {
                "since": "2026-03-01T00:00:00Z",
                "until": "2026-03-01T12:00:00Z",
                "totalUsd": 2.0,
                "idleUsd": 0.0,
                "instanceHours": 0.0,
                "efficiency": None,
                "groups": [{"key": "alice", "usd": 2.0, "slotHours": 2.0, "idle": False}],
            }

    class Session:
        client = Client()

    monkeypatch.setattr(cluster, "setup_session", lambda args: Session())
    cluster.show_cost(argparse.Namespace(since="24h", until=None, by="user", json=False))
    out = capsys.readouterr().out
    assert "Your tasks' share: $2.00" in out and "idle (no task on it)" not in out
