"""Chosen metrics of ``trial_metrics`` rows, taken out of each row's JSON by the database.

A series cache's first read of one metric (the console's chart asks for one by name) need not
decode every row's whole JSON in Python: the database extracts the value of each asked name
(``json_extract`` on SQLite, ``->`` on PostgreSQL) and only that value's JSON text comes back,
decoded in bulk here. Numbers, booleans and strings keep their JSON form, so what counts as a
point is decided exactly as for a whole row (:func:`number`).

SQLite's JSON functions refuse a row Python's ``json`` wrote with ``NaN`` or ``Infinity`` in
it; such a row's whole text comes back instead and is decoded here. A name SQLite's JSON path
cannot quote (a double quote or backslash in it) is not extracted: the caller reads whole rows.

Also the series the cache (``master.api.metric_series``) keeps: :class:`Series`,
:class:`TrialGroup`, and :func:`add_column` to fill one from a :class:`Block`.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, Text, and_, case, cast, func, null, or_, select

from master import models

FLOAT_MAX = 1.7976931348623157e308
ROW_CHUNK = 20_000  # rows fetched and decoded at a time
_PLAIN = re.compile(r'[^"\\\x00-\x1f]+')
# What only JSON other than numbers has: strings, true/false/null, arrays, objects, NaN, Infinity.
_NOT_NUMBER = re.compile(r'["tfnNI\[{]')


def extractable(name: str) -> bool:
    """Whether the database can be asked for ``name`` (a JSON path both can quote)."""
    return _PLAIN.fullmatch(name) is not None


# PostgreSQL parses a json value again for each ``->``: taking out two names costs more than
# sending the whole rows (100 trials x 20,000 reports, the console's pair of names: 5.5-6.3 s
# against 4.7 s), one name less (3.2 s). SQLite parses a row once for all of them.
POSTGRESQL_NAMES = 1


def supported(connection: Connection, names: int) -> bool:
    """Whether the database should take ``names`` values out of each row's JSON here:
    SQLite 3.38 or newer (its ``->`` operator; older libraries read whole rows), PostgreSQL
    for up to :data:`POSTGRESQL_NAMES` names."""
    if connection.dialect.name != "sqlite":
        return names <= POSTGRESQL_NAMES
    return sqlite3.sqlite_version_info >= (3, 38)


def number(value: Any) -> float | None:
    """A metric value as a point's y: finite numbers only (not booleans, strings, NaN, ±inf,
    nor integers beyond a double's range)."""
    kind = type(value)
    if kind is float:
        return value if -math.inf < value < math.inf else None  # also None for NaN
    if kind is int and -FLOAT_MAX <= value <= FLOAT_MAX:
        return float(value)
    return None


def decoded(texts: Sequence[str | None]) -> list[Any]:
    """Each JSON text decoded; one call for all of them, one by one only if one is bad."""
    try:
        found: list[Any] = json.loads("[" + ",".join(t or "null" for t in texts) + "]")
        return found
    except ValueError:
        values = []
        for text in texts:
            try:
                values.append(json.loads(text) if text else None)
            except ValueError:
                values.append(None)
        return values


def raw_rows(connection: Connection, query: Any) -> Iterator[Sequence[Any]]:
    """``query``'s rows in chunks, from the driver's own cursor: SQLAlchemy's result rows cost
    as much again as the fetch itself over a million rows. Its parameters are integers, group
    and metric names, so they are written into the SQL text (quoted by the dialect)."""
    sql = str(query.compile(connection, compile_kwargs={"literal_binds": True}))
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
        while chunk := cursor.fetchmany(ROW_CHUNK):
            yield chunk
    finally:
        cursor.close()


@dataclass
class Block:
    """The rows of one (trial, group): their ids, batches and each asked name's values
    (decoded JSON; None where a row lacks it), in the same (unspecified) order."""

    trial_id: int
    group: str
    ids: list[int]
    xs: list[int]
    values: list[list[Any]]
    plain: list[bool]  # per name: whether every value is a bare JSON number


def _numbers(text: str | None) -> list[int]:
    return list(map(int, text.split(","))) if text else []


def value_blocks(
    connection: Connection,
    trial_ids: list[int],
    groups: Sequence[str],
    names: list[str],
    newest: int,
) -> Iterator[Block]:
    """The rows of ``trial_ids`` in ``groups`` up to id ``newest`` with the values of ``names``
    (all :func:`extractable`), one :class:`Block` per (trial, group). The database joins each
    column of a (trial, group) into one text (``group_concat``, ``string_agg``): a million
    rows cross into Python as a few hundred strings, split and decoded in C."""
    table = models.TrialMetrics
    sqlite = connection.dialect.name == "sqlite"
    values: list[ColumnElement[Any]]
    refused: ColumnElement[Any]
    joined: Any
    if sqlite:
        # Requires SQLite 3.38 (``->``: the value's JSON text as written, every digit kept).
        valid = func.json_valid(table.metrics)
        values = [
            case((valid, func.coalesce(table.metrics.op("->")(f'$."{n}"'), "null")), else_="null")
            for n in names
        ]
        refused = case((valid, null()), else_=cast(table.id, Text))
        joined = func.group_concat
    else:  # PostgreSQL's json type holds valid JSON only
        values = [func.coalesce(cast(table.metrics[name], Text), "null") for name in names]
        refused = null()
        joined = func.string_agg
    columns = [cast(table.id, Text), cast(table.steps_completed, Text), *values, refused]
    query = (
        select(table.trial_id, table.group, *(joined(column, ",") for column in columns))
        .where(table.trial_id.in_(trial_ids), table.group.in_(groups), table.id <= newest)
        .group_by(table.trial_id, table.group)
    )
    for chunk in raw_rows(connection, query):
        for trial_id, group, ids, xs, *texts in chunk:
            row_ids = _numbers(ids)
            block = Block(
                trial_id,
                group,
                row_ids,
                _numbers(xs),
                [_values(text, len(row_ids)) for text in texts[:-1]],
                [not _NOT_NUMBER.search(text or "") for text in texts[:-1]],
            )
            if texts[-1]:  # rows SQLite's JSON functions refuse (NaN): decoded here, whole
                _fill_refused(connection, block, names, set(_numbers(texts[-1])))
                block.plain = [False] * len(names)
            yield block


def _values(text: str | None, count: int) -> list[Any]:
    """A joined column of ``count`` JSON texts decoded in one call (a comma inside a value
    is inside a JSON string or object, which the decoder keeps whole); all None if it is not
    JSON after all."""
    try:
        found: list[Any] = json.loads("[" + (text or "") + "]")
    except ValueError:
        return [None] * count
    return found if len(found) == count else [None] * count


def _fill_refused(
    connection: Connection, block: Block, names: list[str], refused: set[int]
) -> None:
    """The values of rows whose JSON SQLite refused, from their whole text."""
    table = models.TrialMetrics
    query = select(table.id, cast(table.metrics, Text)).where(table.id.in_(sorted(refused)))
    whole = {
        row_id: found if type(found) is dict else {}
        for chunk in raw_rows(connection, query)
        for (row_id, _), found in zip(chunk, decoded([r[1] for r in chunk]), strict=True)
    }
    for index, row_id in enumerate(block.ids):
        if row_id in whole:
            for column, name in zip(block.values, names, strict=True):
                column[index] = whole[row_id].get(name)


def sampled_names(
    connection: Connection, trial_ids: list[int], groups: Sequence[str], newest: int
) -> dict[tuple[int, str], set[str]]:
    """The names of the metrics with numbers in each (trial, group)'s first and latest report
    (by batches): what the metric picker offers before every row has been read."""
    table = models.TrialMetrics
    ends = (
        select(
            table.trial_id,
            table.group,
            func.min(table.steps_completed).label("first"),
            func.max(table.steps_completed).label("last"),
        )
        .where(table.trial_id.in_(trial_ids), table.group.in_(groups), table.id <= newest)
        .group_by(table.trial_id, table.group)
        .subquery()
    )
    query = select(table.trial_id, table.group, cast(table.metrics, Text)).join(
        ends,
        and_(
            table.trial_id == ends.c.trial_id,
            table.group == ends.c.group,
            or_(table.steps_completed == ends.c.first, table.steps_completed == ends.c.last),
            table.id <= newest,
        ),
    )
    found: dict[tuple[int, str], set[str]] = {}
    for chunk in raw_rows(connection, query):
        for (trial_id, group, _), values in zip(chunk, decoded([r[2] for r in chunk]), strict=True):
            names = found.setdefault((trial_id, group), set())
            if type(values) is dict:
                names.update(k for k, v in values.items() if number(v) is not None)
    return found


@dataclass
class Series:
    """One metric of one (trial, group), in compact arrays (8 bytes a number)."""

    ids: array[int] = field(default_factory=lambda: array("q"))  # metrics rows, ascending
    xs: array[int] = field(default_factory=lambda: array("q"))  # batches
    ys: array[float] = field(default_factory=lambda: array("d"))
    in_x_order: bool = True  # False once a report went back in batches (a restarted run)

    def append(self, row_id: int, x: int, y: float) -> None:
        if self.xs and x < self.xs[-1]:
            self.in_x_order = False
        self.ids.append(row_id)
        self.xs.append(x)
        self.ys.append(y)

    def sort_by_id(self) -> None:
        """After points were appended without checks (:meth:`TrialGroup.add` of a first read,
        in batches order): put them in row order (only a restarted run's reports differ), so
        :meth:`since` can bisect the ids, and note whether that is batches order too."""
        ids = self.ids.tolist()
        if ids != sorted(ids):  # compared and sorted in C: a first read has a million
            order = sorted(range(len(ids)), key=ids.__getitem__)
            self.ids = array("q", (ids[i] for i in order))
            self.xs = array("q", (self.xs[i] for i in order))
            self.ys = array("d", (self.ys[i] for i in order))
        xs = self.xs.tolist()
        self.in_x_order = xs == sorted(xs)

    def since(self, after: int) -> tuple[list[int], list[float]]:
        """The points of rows after ``after``, sorted by batches (stable: reported order)."""
        start = bisect_right(self.ids, after)
        xs, ys = self.xs[start:].tolist(), self.ys[start:].tolist()
        if self.in_x_order or len(xs) < 2:
            return xs, ys
        order = sorted(range(len(xs)), key=xs.__getitem__)
        return [xs[i] for i in order], [ys[i] for i in order]


@dataclass
class TrialGroup:
    """Every series of one (trial, group), once ``loaded``: every metrics row up to ``checked``
    has been read, and those above it in ``recent``; the newest of its own is ``last_id``."""

    loaded: bool = False
    checked: int = 0
    recent: set[int] = field(default_factory=set)
    last_id: int = 0
    series: dict[str, Series] = field(default_factory=dict)
    metrics: set[str] | None = None  # the metrics it holds, once loaded; None: every one
    names: set[str] = field(default_factory=set)  # metric names seen besides ``series``'
    sampled: bool = False  # ``names`` has its first and latest report's names

    @property
    def points(self) -> int:
        return sum(len(s.ids) for s in self.series.values())

    def known_names(self) -> set[str]:
        return self.names | self.series.keys()

    def add_value(self, row_id: int, batches: int, name: str, value: float) -> None:
        """One point appended without checks, as :meth:`add` with ``checked=False``."""
        found = self.series.get(name)
        if found is None:
            found = self.series[name] = Series()
        found.ids.append(row_id)
        found.xs.append(batches)
        found.ys.append(value)

    def add(self, row_id: int, batches: int, values: Any, checked: bool = True) -> None:
        """One metrics row: its finite numbers (not booleans, strings, NaN or infinities).
        ``checked=False`` (a first read, thousands of rows) appends without keeping
        ``in_x_order``: call :meth:`Series.sort_by_id` on every series afterwards."""
        if row_id > self.last_id:
            self.last_id = row_id
        if type(values) is not dict:
            return
        series, held = self.series, self.metrics
        for name, raw in values.items():
            value = number(raw)
            if value is None:
                continue
            if held is not None:
                self.names.add(name)
                if name not in held:
                    continue
            found = series.get(name)
            if found is None:
                found = series[name] = Series()
            if checked:
                found.append(row_id, batches, value)
            else:
                found.ids.append(row_id)
                found.xs.append(batches)
                found.ys.append(value)


def add_column(
    entry: TrialGroup, name: str, block: Block, column: list[Any], plain: bool, first: bool
) -> bool:
    """The points of one metric of a :class:`Block` into ``entry`` (unsorted: the caller
    sorts); on a first read every row counts, later only rows ``entry`` has seen (so a row
    committed since comes with the next read, for every metric). Whether any were added."""
    if first and plain and column:
        try:
            ys = array("d", column)  # bare numbers: floats and ints
        except OverflowError:
            ys = None  # an integer beyond a double's range
        if ys is not None and math.isfinite(sum(ys)):  # no 1e999 decoded to inf either
            series = entry.series.setdefault(name, Series())
            series.ids.extend(block.ids)
            series.xs.extend(block.xs)
            series.ys.extend(ys)
            return True
    added = False
    for row_id, batches, raw in zip(block.ids, block.xs, column, strict=True):
        value = number(raw)
        if value is None or not (first or row_id <= entry.checked or row_id in entry.recent):
            continue
        entry.add_value(row_id, batches, name, value)
        added = True
    return added
