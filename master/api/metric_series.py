"""``GET /api/v1/experiments/{id}/metrics/series`` and ``GET /api/v1/trials/{id}/metrics/series``:
learning curves for a chart, downsampled on the server (``master.downsample``).

Every metrics report is a row of ``trial_metrics`` whose values are a JSON object. Decoding a
million of those rows on every poll of an open chart takes seconds, so the master keeps a
:class:`SeriesCache` of parsed series per (trial, group): the first request reads a trial's
rows (only the columns it needs, the JSON as text, decoded in bulk), later ones only the rows
whose id is above the last ones seen (by the primary key). The cursor a reply carries is the
newest row id then; a client polling with ``after=cursor`` gets only the points reported since,
and appends them.

On PostgreSQL ids are handed out at insert, so a report may commit after a newer one was read:
the cache reads rows again until they have settled (``SETTLE_SECONDS``) and keeps them; a
client's cursor may have passed such a point, which its next full read brings. The cache is
the master's own memory: bounded (least recently read series dropped first) and rebuilt from
the database after a restart.

A request for some metrics by name (the console's charts ask for one) fills only those, of only
the asked groups: the database takes their values out of each row's JSON
(``master.api.metric_values``), and a (trial, group) holds those metrics (``TrialGroup.metrics``)
until a request for another one adds it, or one for every metric reads the whole rows. The
``names`` a reply lists come from the rows read whole, and until then from each (trial,
group)'s first and latest report.
"""

from __future__ import annotations

import json
import threading
import time
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import Connection, Text, cast, func, select
from sqlalchemy.orm import Session

from master import auth, models
from master.api.console_schemas import MetricSeriesReply
from master.api.errors import not_found
from master.api.metric_values import (
    Block,
    TrialGroup,
    add_column,
    decoded,
    extractable,
    raw_rows,
    sampled_names,
    supported,
    value_blocks,
)
from master.api.openapi import documented
from master.api.wire import Int64
from master.downsample import downsample
from master.state import MasterState

router = APIRouter(prefix="/api/v1")

GROUPS = ("training", "validation")
Group = Literal["training", "validation"]
DEFAULT_MAX_POINTS = 1000
MAX_POINTS = 10_000
# Points the cache holds at most (24 bytes each: row id, batches, value) before it drops the
# least recently read series: 120 MB.
CACHE_POINTS = 5_000_000
CACHE_ENTRIES = 20_000  # (trial, group)s, however few points they have


# PostgreSQL hands out ids when rows are inserted, not when they commit: a read may see row 101
# while row 100, of another trial's report, is still being committed. Rows are read again
# (and those already seen skipped) until the newest id of a read this long ago, when every
# report's transaction (one insert and one update) has long committed.
SETTLE_SECONDS = 10.0


class SeriesCache:
    """Parsed series per (trial, group), filled incrementally from ``trial_metrics``.

    Thread-safe: requests read it from the database worker threads, one at a time."""

    def __init__(
        self, max_points: int = CACHE_POINTS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_points = max_points
        self.clock = clock
        self._entries: OrderedDict[tuple[int, str], TrialGroup] = OrderedDict()
        self._lock = threading.Lock()
        self._reads: deque[tuple[float, int]] = deque()  # (when, the newest id then)

    def _settled(self, now: float, newest: int) -> int | None:
        """The newest id of a read at least ``SETTLE_SECONDS`` ago (None if none was)."""
        self._reads.append((now, newest))
        settled = None
        while self._reads and self._reads[0][0] <= now - SETTLE_SECONDS:
            settled = self._reads.popleft()[1]
        if settled is not None:
            self._reads.appendleft((now - SETTLE_SECONDS, settled))  # still the latest settled
        return settled

    def read(
        self,
        session: Session,
        trial_ids: list[int],
        groups: Sequence[str] = GROUPS,
        names: Sequence[str] = (),
    ) -> tuple[dict[tuple[int, str], TrialGroup], int]:
        """Bring the series of ``trial_ids`` in ``groups`` up to date, those of ``names`` only
        when some are given; returns the (trial, group)s of both groups (the other group's
        for their names) and the newest metrics row id read (the cursor for the next
        incremental read)."""
        connection = session.connection()
        chosen = names and all(map(extractable, names)) and supported(connection, len(set(names)))
        wanted = set(names) if chosen else None
        with self._lock:
            every = [(trial_id, group) for trial_id in trial_ids for group in GROUPS]
            for key in every:
                entry = self._entries.get(key)
                if entry is None or (
                    wanted is None and key[1] in groups and entry.metrics is not None
                ):
                    # New, or holding some metrics where all are asked for: read whole.
                    self._entries[key] = TrialGroup()
            entries = {key: self._entries[key] for key in every}
            table = models.TrialMetrics
            newest = int(connection.execute(select(func.max(table.id))).scalar() or 0)
            settled = self._settled(self.clock(), newest)
            asked = {key: entry for key, entry in entries.items() if key[1] in groups}
            if trial_ids:
                self._load(connection, asked, newest, settled, wanted)
                unnamed = sorted(
                    {t for (t, _), e in entries.items() if not e.sampled and e.metrics is not None}
                    | {t for (t, _), e in entries.items() if not e.sampled and not e.loaded}
                )
                if unnamed:
                    sample = sampled_names(connection, unnamed, GROUPS, newest)
                    for (trial_id, group), entry in entries.items():
                        if trial_id in unnamed:
                            entry.names |= sample.get((trial_id, group), set())
                            entry.sampled = True
            for key in entries:
                self._entries.move_to_end(key)
            self._evict(keep=set(entries))
            return entries, newest

    def _load(
        self,
        connection: Connection,
        entries: dict[tuple[int, str], TrialGroup],
        newest: int,
        settled: int | None,
        wanted: set[str] | None,
    ) -> None:
        """Read what is new up to row ``newest``: every row of trials never read (by the
        trial index, in batches order; only ``wanted``'s values when given), and for the
        others the rows after the oldest ``checked`` (by the primary key: what was reported
        lately); then the ``wanted`` metrics some (trial, group)s lack. Then move ``checked``
        up to ``settled``."""
        table = models.TrialMetrics
        columns = (table.id, table.trial_id, table.group, table.steps_completed)
        text = cast(table.metrics, Text)  # decoded here, in bulk, not row by row by the driver
        groups = sorted({group for _, group in entries})
        cold = sorted({trial for (trial, _), e in entries.items() if not e.loaded})
        warm = [e.checked for e in entries.values() if e.loaded]
        lacking = {
            key: sorted(wanted - e.metrics)
            for key, e in entries.items()
            if e.loaded and e.metrics is not None and wanted and not wanted <= e.metrics
        }
        touched: set[tuple[int, str]] = set()
        if cold and wanted is not None:
            for entry in entries.values():
                if not entry.loaded:
                    entry.metrics = set(wanted)
            names = sorted(wanted)
            blocks = value_blocks(connection, cold, groups, names, newest)
            self._ingest_blocks(blocks, entries, touched, names, lacking=None)
        elif cold:
            query = (
                select(*columns, text)
                .where(table.trial_id.in_(cold), table.group.in_(groups), table.id <= newest)
                .order_by(table.trial_id, table.group, table.steps_completed)
            )
            self._ingest(raw_rows(connection, query), entries, touched, cold_only=True)
        if warm and min(warm) < newest:
            query = (
                select(*columns, text)
                .where(table.id > min(warm), table.id <= newest)
                .order_by(table.id)
            )
            self._ingest(raw_rows(connection, query), entries, touched, cold_only=False)
        if lacking:
            # After the warm read: only rows it (or an earlier read) saw count, so that a
            # row committed since comes with the next one, for every metric at once.
            names = sorted({name for missing in lacking.values() for name in missing})
            trials = sorted({trial for trial, _ in lacking})
            lacking_groups = sorted({group for _, group in lacking})
            blocks = value_blocks(connection, trials, lacking_groups, names, newest)
            self._ingest_blocks(blocks, entries, touched, names, lacking=lacking)
            for key, missing in lacking.items():
                metrics = entries[key].metrics
                assert metrics is not None
                metrics.update(missing)
        for key in touched:
            for series in entries[key].series.values():
                series.sort_by_id()
        for entry in entries.values():
            if not entry.loaded:
                # The first read: trusted up to ``newest`` unless an older read settled.
                entry.loaded = True
                entry.checked = settled if settled is not None else newest
                entry.recent = {
                    row_id
                    for series in entry.series.values()
                    for row_id in series.ids[bisect_right(series.ids, entry.checked) :]
                }
            elif settled is not None and settled > entry.checked:
                entry.checked = settled
                entry.recent = {i for i in entry.recent if i > settled}

    @staticmethod
    def _ingest_blocks(
        blocks: Iterator[Block],
        entries: dict[tuple[int, str], TrialGroup],
        touched: set[tuple[int, str]],
        names: list[str],
        lacking: dict[tuple[int, str], list[str]] | None,
    ) -> None:
        """:func:`value_blocks`' rows: into (trial, group)s never read (``lacking`` None), or
        the metrics ``lacking`` names into those read before, from the rows they have seen."""
        for block in blocks:
            key = (block.trial_id, block.group)
            entry = entries.get(key)
            if entry is None:
                continue
            if lacking is None:
                if entry.loaded:
                    continue
                missing: Sequence[str] = names
                entry.last_id = max(entry.last_id, max(block.ids, default=0))
            else:
                missing = lacking.get(key, ())
            for name, column, plain in zip(names, block.values, block.plain, strict=True):
                if name in missing and add_column(
                    entry, name, block, column, plain, first=lacking is None
                ):
                    touched.add(key)

    @staticmethod
    def _ingest(
        chunks: Iterator[Sequence[Any]],
        entries: dict[tuple[int, str], TrialGroup],
        touched: set[tuple[int, str]],
        cold_only: bool,
    ) -> None:
        for chunk in chunks:
            for (row_id, trial_id, group, batches, _), values in zip(
                chunk, decoded([row[4] for row in chunk]), strict=True
            ):
                key = (trial_id, group)
                entry = entries.get(key)
                if entry is None or entry.loaded == cold_only:
                    continue  # another trial's row, or one a first read brings
                if row_id <= entry.checked or row_id in entry.recent:
                    continue
                if cold_only or row_id < entry.last_id:
                    touched.add(key)  # points to put in row order afterwards
                if not cold_only:
                    entry.recent.add(row_id)
                entry.add(row_id, batches, values, checked=not cold_only)

    def _evict(self, keep: set[tuple[int, str]]) -> None:
        """Drop least recently read series (never those of this read) while the cache holds
        more than ``max_points`` points or more than ``CACHE_ENTRIES`` (trial, group)s."""
        total = sum(e.points for e in self._entries.values())
        for key in list(self._entries):
            if total <= self.max_points and len(self._entries) <= CACHE_ENTRIES:
                return
            if key in keep:
                continue
            total -= self._entries.pop(key).points


def _cache(request: Request) -> SeriesCache:
    """The app's cache, made on first use (on the event loop, so made once)."""
    cache: SeriesCache | None = getattr(request.app.state, "metric_series", None)
    if cache is None:
        cache = request.app.state.metric_series = SeriesCache()
    return cache


def _pairs(xs: list[int], ys: list[float], kept: list[int]) -> list[tuple[int, float]]:
    """``[(xs[i], ys[i]) for i in kept]`` built in C (tuples encode as JSON arrays): a reply
    can carry 100,000 points."""
    return list(zip(map(xs.__getitem__, kept), map(ys.__getitem__, kept), strict=True))


def series_reply(
    entries: dict[tuple[int, str], TrialGroup],
    cursor: int,
    groups: list[str],
    names: list[str],
    max_points: int,
    after: int | None,
) -> dict[str, Any]:
    """The reply: every requested (trial, group, name) series, downsampled to ``max_points``;
    with ``after``, only points of rows after it (series with none are left out)."""
    all_names: dict[str, set[str]] = {group: set() for group in GROUPS}
    for (_, group), entry in entries.items():
        all_names[group].update(entry.known_names())
    series = []
    for (trial_id, group), entry in sorted(entries.items()):
        if group not in groups:
            continue
        for name in sorted(entry.series):
            if names and name not in names:
                continue
            xs, ys = entry.series[name].since(after or 0)
            if after is not None and not xs:
                continue
            kept = downsample(xs, ys, max_points)
            series.append(
                {
                    "trialId": trial_id,
                    "group": group,
                    "name": name,
                    "points": _pairs(xs, ys, kept),
                    "total": len(xs),
                    "downsampled": len(kept) < len(xs),
                }
            )
    return {
        "cursor": max(cursor, after or 0),
        "names": {group: sorted(found) for group, found in all_names.items()},
        "series": series,
    }


async def _answer(
    request: Request,
    trial_ids_of: Any,
    group: Group | None,
    names: list[str],
    max_points: int,
    after: int | None,
) -> Response:
    state: MasterState = request.app.state.master
    cache = _cache(request)

    def read(session: Session) -> dict[str, Any]:
        groups: list[str] = [group] if group else list(GROUPS)
        entries, cursor = cache.read(session, trial_ids_of(session), groups, names)
        return series_reply(entries, cursor, groups, names, max_points, after)

    body = await state.db.run(read)
    # Encoded here: FastAPI's encoder walks every number of a reply of 100,000 points.
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


def _experiment_trials(session: Session, experiment_id: int) -> list[int]:
    if session.get(models.Experiment, experiment_id) is None:
        raise not_found(f"experiment {experiment_id}")
    query = select(models.Trial.id).where(models.Trial.experiment_id == experiment_id)
    return list(session.scalars(query.order_by(models.Trial.id)))


def _one_trial(session: Session, trial_id: int) -> list[int]:
    if session.get(models.Trial, trial_id) is None:
        raise not_found(f"trial {trial_id}")
    return [trial_id]


_GROUP = Query(None, description="training or validation; both when left out")
_NAME = Query([], description="metric names (repeatable); every name of the group when left out")
_MAX_POINTS = Query(
    DEFAULT_MAX_POINTS,
    alias="maxPoints",
    ge=2,
    le=MAX_POINTS,
    description="the most points per series; longer series are downsampled keeping extremes",
)
_AFTER = Query(None, ge=0, description="a previous reply's cursor: only points reported after it")


@router.get("/experiments/{experiment_id}/metrics/series", **documented(MetricSeriesReply, 404))
async def experiment_metric_series(
    experiment_id: Int64,
    request: Request,
    group: Group | None = _GROUP,
    name: list[str] = _NAME,
    max_points: int = _MAX_POINTS,
    after: Int64 | None = _AFTER,
    _: models.User = Depends(auth.current_user),
) -> Response:
    """Learning curves of every trial of the experiment: x = batches, points sorted by x."""
    trials = partial(_experiment_trials, experiment_id=experiment_id)
    return await _answer(request, trials, group, name, max_points, after)


@router.get("/trials/{trial_id}/metrics/series", **documented(MetricSeriesReply, 404))
async def trial_metric_series(
    trial_id: Int64,
    request: Request,
    group: Group | None = _GROUP,
    name: list[str] = _NAME,
    max_points: int = _MAX_POINTS,
    after: Int64 | None = _AFTER,
    _: models.User = Depends(auth.current_user),
) -> Response:
    """Learning curves of one trial (the experiment's route's shape)."""
    trials = partial(_one_trial, trial_id=trial_id)
    return await _answer(request, trials, group, name, max_points, after)
