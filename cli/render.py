"""Output for ``det``: aligned tables, CSV, JSON and YAML, in Determined's formats.

Determined prints tables with ``tabulate(..., tablefmt="presto")``. :func:`format_table`
reproduces that format without the dependency, byte for byte on the cases the CLI produces:

- a header row, a ``-----+-----`` rule, then one line per row (more for cells with newlines);
- every cell padded by one space each side, columns joined by ``|``, trailing blanks trimmed;
- a column is at least two characters wider than its header;
- a column whose non-empty cells are all numbers (``3``, ``"0"``, ``1.5``; not booleans) is
  right-aligned, with decimal points lined up; everything else is left-aligned;
- ``None`` renders as an empty cell, floats with ``format(x, "g")``, other values with ``str``.
"""

from __future__ import annotations

import csv
import datetime
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import yaml

# tabulate's MIN_PADDING: a column is at least this much wider than its header.
_HEADER_MIN_PADDING = 2


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def _is_number(value: Any, text: str) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if not isinstance(value, str) or "\n" in text:
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _after_point(text: str) -> int:
    """Characters after the decimal point (or exponent); -1 for integers, as tabulate counts."""
    if _is_int(text):
        return -1
    pos = text.rfind(".")
    if pos < 0:
        pos = text.lower().rfind("e")
    return len(text) - pos - 1 if pos >= 0 else -1


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Render ``rows`` under ``headers`` as a presto-style table (see the module docstring)."""
    raw_rows = [list(row) for row in rows]
    ncols = len(headers)
    for row in raw_rows:
        if len(row) != ncols:
            raise ValueError(f"row has {len(row)} cells but there are {ncols} headers: {row!r}")
    texts = [[_cell_text(value) for value in row] for row in raw_rows]

    numeric = []
    for col in range(ncols):
        present = [(row[col], text[col]) for row, text in zip(raw_rows, texts, strict=True)]
        present = [(v, t) for v, t in present if t != ""]
        numeric.append(bool(present) and all(_is_number(v, t) for v, t in present))

    # Decimal alignment: pad numbers on the right so their points line up.
    for col in range(ncols):
        if not numeric[col]:
            continue
        afters = [_after_point(t[col]) for t in texts if t[col] != ""]
        most = max(afters, default=-1)
        for t in texts:
            if t[col] != "":
                t[col] = t[col] + " " * (most - _after_point(t[col]))

    widths = []
    for col in range(ncols):
        cell_width = max(
            (len(line) for t in texts for line in t[col].split("\n")),
            default=0,
        )
        widths.append(max(len(headers[col]) + _HEADER_MIN_PADDING, cell_width))

    def line(cells: Sequence[str]) -> str:
        padded = [
            " " + (cell.rjust(width) if numeric[col] else cell.ljust(width)) + " "
            for col, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "|".join(padded).rstrip()

    out = [line(headers), "+".join("-" * (w + 2) for w in widths)]
    for t in texts:
        split = [cell.split("\n") for cell in t]
        height = max((len(parts) for parts in split), default=1)
        for i in range(height):
            out.append(line([parts[i] if i < len(parts) else "" for parts in split]))
    return "\n".join(out)


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
