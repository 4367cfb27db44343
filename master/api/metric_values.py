"""Chosen metrics of ``trial_metrics`` rows, taken out of each row's JSON by the database.

A series cache's first read of one metric (the console's chart asks for one by name) need not
decode every row's whole JSON in Python: the database extracts the value of each asked name
(``json_extract`` on SQLite, ``->`` on PostgreSQL) and only that value's JSON text comes back,
decoded in bulk here. Numbers, booleans and strings keep their JSON form, so what counts as a
point is decided exactly as for a whole row (:func:`number`).

SQLite's JSON functions refuse a row Python's ``json`` wrote with ``NaN`` or ``Infinity`` in
it; such a row's whole text comes back instead and is decoded here. A name SQLite's JSON path
cannot quote (a double quote or backslash in it) is not extracted: the caller reads whole rows.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
