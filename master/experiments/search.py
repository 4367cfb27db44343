"""A search in progress: the searcher plus what each trial has been asked to do (pure).

The searcher (``master/searcher/``, docs/design/experiments.md) answers events with operations;
this module turns them into state the engine stores and serves: per trial (by request id) the
queue of ``ValidateAfter`` lengths not yet reported, whether it was closed, and whether the
search is over. ``snapshot()`` captures all of it, the searcher's own snapshot included, so the
engine writes it in the same transaction as the event's other effects and a restarted master
restores the search exactly (``SearchRun.restore``).

Operations are matched by class name (``Create``, ``ValidateAfter``, ``Close``, ``Shutdown``)
and read by their contract attributes, so this module needs no import of the searcher package.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.experiment_config import ExperimentConfig


class Searcher(Protocol):
    def initial_operations(self) -> list[Any]: ...
    def on_trial_created(self, request_id: str) -> list[Any]: ...
    def on_validation_completed(self, request_id: str, metric: float, length: int) -> list[Any]: ...
    def on_trial_exited_early(self, request_id: str, reason: str) -> list[Any]: ...
    def on_trial_closed(self, request_id: str) -> list[Any]: ...
    def on_trial_progress(self, request_id: str, fraction: float) -> None: ...
    def progress(self) -> float: ...
    def snapshot(self) -> dict[str, Any]: ...


class SearcherFactory(Protocol):
    """How the engine makes searchers: ``master.searcher.Searcher`` in production. ``seed`` is
    the experiment id; the searcher prefers the config's ``searcher.seed`` when set. ``create``
    raises ValueError for a config the searcher cannot run."""

    def create(self, config: ExperimentConfig, seed: int) -> Searcher: ...
    def restore(self, config: ExperimentConfig, snapshot: dict[str, Any]) -> Searcher: ...


class DefaultSearcherFactory:
    """``master.searcher.Searcher``, imported when first needed."""

    def create(self, config: ExperimentConfig, seed: int) -> Searcher:
        from master.searcher import Searcher as Impl

        searcher: Searcher = Impl(config, seed)
        return searcher

    def restore(self, config: ExperimentConfig, snapshot: dict[str, Any]) -> Searcher:
        from master.searcher import Searcher as Impl

        searcher: Searcher = Impl.restore(config, snapshot)
        return searcher


class SearchError(ValueError):
    """An event the search cannot take (e.g. a validation nobody asked for)."""


@dataclass
class RequestOps:
    """What one trial has been asked to do and has not yet done."""

    pending: deque[int] = field(default_factory=deque)  # ValidateAfter lengths, in order
    closed: bool = False
    last_completed: int | None = None
    done: bool = False  # the searcher heard this trial is over

    def to_json(self) -> dict[str, Any]:
        return {
            "pending": list(self.pending),
            "closed": self.closed,
            "last_completed": self.last_completed,
            "done": self.done,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestOps:
        return cls(
            pending=deque(int(x) for x in data.get("pending", [])),
            closed=bool(data.get("closed", False)),
            last_completed=data.get("last_completed"),
            done=bool(data.get("done", False)),
        )


@dataclass(frozen=True)
class NewTrial:
    request_id: str
    hparams: dict[str, Any]


@dataclass
class Effects:
    """What an event changed that the engine must act on after storing the snapshot."""

    creates: list[NewTrial] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)  # request ids whose operations changed
    shutdown: bool = False  # the search ended with this event


class SearchRun:
    def __init__(
        self,
        searcher: Searcher,
        requests: dict[str, RequestOps] | None = None,
        shutdown: bool = False,
        failure: bool = False,
    ) -> None:
        self.searcher = searcher
        self.requests: dict[str, RequestOps] = requests or {}
        self.shutdown = shutdown
        self.failure = failure

    # ---- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(cls, searcher: Searcher) -> tuple[SearchRun, Effects]:
        run = cls(searcher)
        return run, run._apply(searcher.initial_operations())

    def snapshot(self) -> dict[str, Any]:
        return {
            "searcher": self.searcher.snapshot(),
            "requests": {rid: ops.to_json() for rid, ops in self.requests.items()},
            "shutdown": self.shutdown,
            "failure": self.failure,
        }

    @classmethod
    def restore(
        cls, factory: SearcherFactory, config: ExperimentConfig, snapshot: dict[str, Any]
    ) -> SearchRun:
        searcher = factory.restore(config, snapshot["searcher"])
        requests = {
            rid: RequestOps.from_json(ops) for rid, ops in snapshot.get("requests", {}).items()
        }
        return cls(
            searcher,
            requests,
            bool(snapshot.get("shutdown", False)),
            bool(snapshot.get("failure", False)),
        )

    def progress(self) -> float:
        if self.shutdown:
            return 1.0
        return min(max(float(self.searcher.progress()), 0.0), 1.0)

    # ---- what a trial is asked ---------------------------------------------------------------

    def current(self, request_id: str) -> tuple[int | None, bool]:
        """The next ``ValidateAfter`` length for the trial, and whether it is done (closed or
        the search is over, with nothing pending): the harness's searcher operation."""
        ops = self.requests.get(request_id)
        if ops is None:
            return None, True
        if ops.pending:
            return ops.pending[0], False
        return None, ops.closed or self.shutdown

    def has_pending(self, request_id: str) -> bool:
        ops = self.requests.get(request_id)
        return bool(ops and ops.pending)

    def is_closed(self, request_id: str) -> bool:
        ops = self.requests.get(request_id)
        return ops is None or ops.closed or self.shutdown

    # ---- events ------------------------------------------------------------------------------

    def validation_completed(self, request_id: str, metric: float, length: int) -> Effects:
        """The trial validated after ``length``. Reporting the operation it last completed
        again is a no-op (a retried request); any other length is refused."""
        ops = self.requests.get(request_id)
        if ops is None:
            raise SearchError(f"trial {request_id} is not part of this search")
        if not ops.pending or ops.pending[0] != length:
            if ops.last_completed == length:
                return Effects()
            if not ops.pending:
                raise SearchError(
                    f"op.validateAfter.length: no operation is pending (reported {length})"
                )
            raise SearchError(
                f"op.validateAfter.length: expected {ops.pending[0]} (the pending operation), "
                f"got {length}"
            )
        ops.pending.popleft()
        ops.last_completed = length
        effects = self._apply(self.searcher.on_validation_completed(request_id, metric, length))
        effects.touched.add(request_id)
        return effects

    def trial_exited_early(self, request_id: str, reason: str) -> Effects:
        ops = self._finish(request_id)
        if ops is None:
            return Effects()
        return self._apply(self.searcher.on_trial_exited_early(request_id, reason))

    def trial_progress(self, request_id: str, fraction: float) -> None:
        """The trial reported it is ``fraction`` (0..1) through its planned length: only
        :meth:`progress` moves (no operations follow). Ignored once it or the search is over."""
        ops = self.requests.get(request_id)
        if ops is None or ops.done or ops.closed or self.shutdown:
            return
        self.searcher.on_trial_progress(request_id, fraction)

    def trial_closed(self, request_id: str) -> Effects:
        ops = self._finish(request_id)
        if ops is None:
            return Effects()
        return self._apply(self.searcher.on_trial_closed(request_id))

    def _finish(self, request_id: str) -> RequestOps | None:
        ops = self.requests.get(request_id)
        if ops is None or ops.done:
            return None
        ops.done = True
        ops.pending.clear()
        return ops

    # ---- operations ------------------------------------------------------------------------------

    def _apply(self, operations: list[Any]) -> Effects:
        """Fold operations into the state; a ``Create`` is followed at once by the searcher's
        ``on_trial_created``, whose operations are folded in too (in order)."""
        effects = Effects()
        queue = deque(operations)
        while queue:
            op = queue.popleft()
            kind = type(op).__name__
            if kind == "Create":
                if self.shutdown or op.request_id in self.requests:
                    continue
                self.requests[op.request_id] = RequestOps()
                effects.creates.append(NewTrial(op.request_id, dict(op.hparams)))
                queue.extend(self.searcher.on_trial_created(op.request_id))
            elif kind == "ValidateAfter":
                ops = self.requests.get(op.request_id)
                if ops is None or ops.done or ops.closed:
                    continue
                ops.pending.append(int(op.length))
                effects.touched.add(op.request_id)
            elif kind == "Close":
                ops = self.requests.get(op.request_id)
                if ops is not None and not ops.closed:
                    ops.closed = True
                    effects.touched.add(op.request_id)
            elif kind == "Shutdown":
                if not self.shutdown:
                    self.shutdown = True
                    self.failure = bool(getattr(op, "failure", False))
                    effects.shutdown = True
                    effects.touched.update(self.requests)
            else:
                raise SearchError(f"unknown searcher operation {op!r}")
        return effects
