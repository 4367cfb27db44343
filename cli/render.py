"""Output for ``det``: aligned tables, CSV, JSON and YAML, in Determined's formats.

Tables are Determined's own: ``tabulate(rows, headers, tablefmt="presto")`` (with ``wcwidth``, so
wide characters such as CJK take two columns and stay aligned). CSV has the header row first and
an empty cell for ``None``; JSON has sorted keys and two-space indents.
"""

from __future__ import annotations

import csv
import datetime
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import tabulate
import yaml


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """``rows`` under ``headers`` in Determined's table format (tabulate's ``presto``)."""
    raw_rows = [list(row) for row in rows]
    for row in raw_rows:
        if len(row) != len(headers):
            raise ValueError(
                f"row has {len(row)} cells but there are {len(headers)} headers: {row!r}"
            )
    return tabulate.tabulate(raw_rows, headers=list(headers), tablefmt="presto")


def print_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    as_csv: bool = False,
    out: TextIO | None = None,
) -> None:
    """Print a table, or CSV (header row first) when ``as_csv``."""
    stream = out or sys.stdout
    if as_csv:
        writer = csv.writer(stream)
        writer.writerow(headers)
        writer.writerows([_cell_text(v) for v in row] for row in rows)
        return
    print(format_table(headers, rows), file=stream)


def print_json(data: Any, out: TextIO | None = None) -> None:
    """Pretty JSON with sorted keys and two-space indents, as Determined's ``--json`` prints."""
    print(json.dumps(data, sort_keys=True, indent=2, default=str), file=out or sys.stdout)


def print_yaml(data: Any, out: TextIO | None = None) -> None:
    print(yaml.safe_dump(data, default_flow_style=False), file=out or sys.stdout)


def format_time(value: str | None) -> str | None:
    """``2024-05-01T12:00:00.123Z`` → ``2024-05-01 12:00:00+0000`` (UTC), like Determined.

    Unparseable input is returned unchanged rather than hidden.
    """
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S%z")


def strip_prefix(value: str | None, prefix: str) -> str | None:
    """``STATE_RUNNING`` → ``RUNNING``: enum names without their wire prefix."""
    if value is not None and value.startswith(prefix):
        return value[len(prefix) :]
    return value


def format_age(since: str | None, now: datetime.datetime | None = None) -> str:
    """``2026-01-01T00:00:00Z`` → ``3m20s`` ago (empty for None)."""
    if not since:
        return ""
    then = datetime.datetime.fromisoformat(since.replace("Z", "+00:00"))
    current = now or datetime.datetime.now(datetime.UTC)
    seconds = int((current - then).total_seconds())
    if seconds < 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_usd(value: float | None) -> str:
    if value is None:
        return ""
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"
