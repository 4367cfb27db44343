"""A deterministic stand-in for the master driving a searcher, shared by the searcher tests.

Trials train on a simulated clock (each at its own speed, so results arrive out of order like
on a real cluster), report the metric a test function gives for their hyperparameters, and may
exit early where a test says so. Every operation and the concurrency high-water mark are
recorded; optionally the searcher is snapshotted, JSON round-tripped and restored mid-run.
"""

from __future__ import annotations

import heapq
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.experiment_config import ExperimentConfig, parse_experiment_config
from master.searcher import Close, Create, Operation, Searcher, Shutdown, ValidateAfter

Metric = Callable[[dict[str, Any], int], float]
ExitRule = Callable[[str, dict[str, Any], int], str | None]


def make_config(
    searcher: dict[str, Any], hyperparameters: dict[str, Any] | None = None
) -> ExperimentConfig:
    return parse_experiment_config(
        {
            "entrypoint": "model_def:Trial",
            "searcher": {"metric": "validation_loss", **searcher},
            "hyperparameters": hyperparameters or {},
        }
    )


def first_request_id(ops: list[Operation]) -> str:
    """The request id of the first ``Create`` in ``ops``."""
    return next(op.request_id for op in ops if isinstance(op, Create))


def never_exit(request_id: str, hparams: dict[str, Any], length: int) -> str | None:
    return None


@dataclass
class Driver:
    config: ExperimentConfig
    metric: Metric
    seed: int = 7
    exit_rule: ExitRule = never_exit
    restore_after: int | None = None  # events; then snapshot -> JSON -> restore

    searcher: Searcher = field(init=False)
    ops: list[Operation] = field(default_factory=list)
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    validations: list[tuple[str, int, float]] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)
    progress: list[float] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    max_running: int = 0
    shutdown: Shutdown | None = None
    events: int = 0
    restored: bool = False
    _trained: dict[str, int] = field(default_factory=dict)
    _pending: list[tuple[float, int, str, int]] = field(default_factory=list)
    _closing: deque[str] = field(default_factory=deque)
    _clock: float = 0.0
    _seq: int = 0

    def __post_init__(self) -> None:
        self.searcher = Searcher(self.config, self.seed)

    def run(self, max_events: int = 100_000) -> Driver:
        self._apply(self.searcher.initial_operations())
        self.progress.append(self.searcher.progress())
        while self.events < max_events:
            if self._closing:
                rid = self._closing.popleft()
                self.running.discard(rid)
                self._event("on_trial_closed", rid)
            elif self._pending:
                self._clock, _, rid, length = heapq.heappop(self._pending)
                reason = self.exit_rule(rid, self.hparams[rid], length)
                if reason is not None:
                    self.running.discard(rid)
                    self.exits.append(rid)
                    self._event("on_trial_exited_early", rid, reason)
                    continue
                self._trained[rid] = length
                value = self.metric(self.hparams[rid], length)
                self.validations.append((rid, length, value))
                self._event("on_validation_completed", rid, value, length)
            else:
                break
        return self

    def _speed(self, rid: str) -> float:
        return 1.0 + (int(rid.lstrip("r")) % 3) * 0.5

    def _event(self, name: str, *args: Any) -> None:
        self.events += 1
        self._apply(getattr(self.searcher, name)(*args))
        self.progress.append(self.searcher.progress())
        if self.restore_after == self.events:
            stored = json.loads(json.dumps(self.searcher.snapshot(), allow_nan=False))
            self.searcher = Searcher.restore(self.config, stored)
            self.restored = True

    def _apply(self, ops: list[Operation]) -> None:
        for op in ops:
            assert self.shutdown is None, f"{op} after Shutdown"
            self.ops.append(op)
            if isinstance(op, Create):
                assert op.request_id not in self.hparams
                self.hparams[op.request_id] = op.hparams
                self._trained[op.request_id] = 0
                self.running.add(op.request_id)
                self.max_running = max(self.max_running, len(self.running))
                self._apply(self.searcher.on_trial_created(op.request_id))
            elif isinstance(op, ValidateAfter):
                assert op.request_id in self.running
                assert op.length > self._trained[op.request_id]
                todo = op.length - self._trained[op.request_id]
                finish = self._clock + todo / self._speed(op.request_id)
                self._seq += 1
                heapq.heappush(self._pending, (finish, self._seq, op.request_id, op.length))
            elif isinstance(op, Close):
                assert op.request_id in self.running
                self._closing.append(op.request_id)
            else:
                self.shutdown = op

    # ---- views ----------------------------------------------------------------------------

    def created(self) -> list[str]:
        return [op.request_id for op in self.ops if isinstance(op, Create)]

    def reached(self, length: int) -> set[str]:
        return {rid for rid, at, _ in self.validations if at >= length}

    def lengths_validated(self, rid: str) -> list[int]:
        return [at for r, at, _ in self.validations if r == rid]


# ---- the driver itself ---------------------------------------------------------------------


def test_driver_runs_a_single_search_to_shutdown() -> None:
    config = make_config({"name": "single", "max_length": {"batches": 10}}, {"lr": 0.1})
    driver = Driver(config, lambda hp, length: hp["lr"]).run()
    assert driver.ops == [
        Create("r1", {"lr": 0.1}),
        ValidateAfter("r1", 10),
        Close("r1"),
        Shutdown(failure=False),
    ]
    assert driver.progress[-1] == 1.0
    assert not driver.running


def test_restore_mid_run_gives_the_same_operations() -> None:
    config = make_config(
        {"name": "random", "max_trials": 5, "max_concurrent_trials": 2, "max_length": 20},
        {"x": {"type": "double", "minval": 0, "maxval": 1}},
    )
    plain = Driver(config, lambda hp, length: hp["x"]).run()
    resumed = Driver(config, lambda hp, length: hp["x"], restore_after=4).run()
    assert resumed.restored
    assert resumed.ops == plain.ops
