"""The bookkeeping every search method shares, so each method only decides what is its own.

A method says how many trials it wants, how many may run at once, what a new trial looks like
and what a validation means (go on to a longer ``ValidateAfter`` or stop). This base turns those
answers into operations with the same rules for all methods:

- a trial holds a slot from its ``Create`` until the master reports it closed or exited early,
  so ``max_concurrent_trials`` is never exceeded even while a closing trial winds down;
- a freed slot is refilled at once while trials remain to be created;
- ``Shutdown`` follows as soon as every trial has been created and none is left running
  (each is closing, closed or exited) — together with the last ``Close`` when there is one;
- events about finished trials are ignored, so a repeated or late event is harmless.

Everything here is plain data, written out by :meth:`SearchMethod.snapshot` as JSON-able dicts.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

from harness.experiment_config import ExperimentConfig
from master.searcher.operations import Close, Create, Operation, Shutdown, ValidateAfter

RUNNING = "running"  # has an outstanding ValidateAfter
CLOSING = "closing"  # the searcher sent Close; the master has not reported it closed yet
CLOSED = "closed"
EXITED = "exited"  # exited early: crashed for good, invalid hyperparameters, stopped by a user

# Early exits that are not the search failing (Determined counts only errors as failures).
NOT_FAILURES = frozenset(
    {
        "EXITED_REASON_INVALID_HP",
        "EXITED_REASON_INIT_INVALID_HP",
        "EXITED_REASON_USER_REQUESTED_STOP",
        "EXITED_REASON_USER_CANCELED",
    }
)


class SearchContext:
    """What methods share beyond their own state: the seeded RNG (the only randomness) and the
    request-id counter. Request ids are ``r1``, ``r2``, … — unique within one experiment."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.requests_issued = 0

    def new_request_id(self) -> str:
        self.requests_issued += 1
        return f"r{self.requests_issued}"

    def snapshot(self) -> dict[str, Any]:
        version, internal, gauss_next = self.rng.getstate()
        return {
            "seed": self.seed,
            "rng": [version, list(internal), gauss_next],
            "requests_issued": self.requests_issued,
        }

    def restore(self, state: dict[str, Any]) -> None:
        version, internal, gauss_next = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss_next))
        self.seed = int(state["seed"])
        self.requests_issued = int(state["requests_issued"])


@dataclass
class Trial:
    """The searcher's view of one trial. Lengths are in the searcher's length unit."""

    request_id: str
    target: int  # length of the outstanding ValidateAfter
    bracket: int = 0  # adaptive_asha: which bracket the trial belongs to
    rung: int = 0  # adaptive_asha: the rung the trial is training towards
    trained: int = 0  # the longest length it validated at
    reported: float = 0.0  # how far it has trained towards its target, as it last reported
    state: str = RUNNING
    created: bool = False  # the master reported the trial row created
    exit_reason: str | None = None


class SearchMethod(ABC):
    """A search method over the shared trial table; subclasses fill in the decisions."""

    def __init__(self, config: ExperimentConfig, ctx: SearchContext) -> None:
        self.config = config
        self.ctx = ctx
        self.space: dict[str, Any] = config.hyperparameters
        self.smaller_is_better = config.searcher.smaller_is_better
        self.trials: dict[str, Trial] = {}
        self.shut_down = False

    # ---- what each method decides -----------------------------------------------------------

    @property
    @abstractmethod
    def max_trials(self) -> int:
        """How many trials the search creates in all."""

    @property
    @abstractmethod
    def max_concurrent(self) -> int:
        """How many may hold a slot at once; 0: no limit."""

    @property
    @abstractmethod
    def max_length(self) -> int:
        """The longest any trial trains: each trial's share of the planned work."""

    @abstractmethod
    def new_trial(self, request_id: str) -> tuple[Trial, dict[str, Any]]:
        """A trial to create next (its first ``target`` set) and its hyperparameters."""

    @abstractmethod
    def validated(self, trial: Trial, metric: float, length: int) -> bool:
        """``trial`` validated at ``length`` >= its target. True: it goes on (the method has set
        a new, longer ``trial.target``); False: close it."""

    def exited(self, trial: Trial) -> None:  # noqa: B027 - a hook, empty unless needed
        """A running trial left without a result at its target (ASHA records a worst result)."""

    def method_state(self) -> dict[str, Any]:
        """The method's own JSON-able state beyond the trial table."""
        return {}

    def restore_method_state(self, state: dict[str, Any]) -> None:  # noqa: B027
        """Load what :meth:`method_state` wrote."""

    # ---- events -------------------------------------------------------------------------------

    def initial_operations(self) -> list[Operation]:
        return self._fill()

    def on_trial_created(self, request_id: str) -> list[Operation]:
        self.trial(request_id).created = True
        return []

    def on_validation_completed(
        self, request_id: str, metric: float, length: int
    ) -> list[Operation]:
        trial = self.trial(request_id)
        if trial.state != RUNNING:
            return []
        trial.trained = max(trial.trained, length)
        if length < trial.target:  # an earlier validation than asked for: progress only
            return []
        if self.validated(trial, metric, length):
            return [ValidateAfter(request_id, trial.target)]
        trial.state = CLOSING
        return [Close(request_id), *self._maybe_shutdown()]

    def on_trial_exited_early(self, request_id: str, reason: str) -> list[Operation]:
        trial = self.trial(request_id)
        if trial.state in (CLOSED, EXITED):
            return []
        if trial.state == RUNNING:
            self.exited(trial)
        trial.state = EXITED
        trial.exit_reason = reason
        return self._fill()

    def on_trial_closed(self, request_id: str) -> list[Operation]:
        trial = self.trial(request_id)
        if trial.state in (CLOSED, EXITED):
            return []
        if trial.state == RUNNING:  # closed without being asked: no result at its target
            self.exited(trial)
        trial.state = CLOSED
        return self._fill()

    def on_trial_progress(self, request_id: str, units: float) -> None:
        """A running trial reported how far it has trained (``units`` of the length unit): it
        counts in :meth:`progress` while it trains, not only once it validates. Capped at the
        trial's current target (it trains no further before validating), never lowered;
        ignored for a trial that is not running or an unknown one (a late report)."""
        trial = self.trials.get(request_id)
        if trial is None or trial.state != RUNNING or not math.isfinite(units):
            return
        trial.reported = max(trial.reported, min(float(units), float(trial.target)))

    def progress(self) -> float:
        """Planned work is ``max_length`` per trial (Determined: completed units over total
        units across trials). A trial's share counts as done once it is closing, closed or
        exited (what it will not train is no longer planned), else up to the length it
        validated at or, while it trains, reported (:meth:`on_trial_progress`). Never
        decreases; 1.0 once the search shuts down."""
        if self.shut_down:
            return 1.0
        length = self.max_length
        done = sum(
            length if trial.state != RUNNING else min(max(trial.trained, trial.reported), length)
            for trial in self.trials.values()
        )
        return min(done / (self.max_trials * length), 1.0)

    # ---- shared machinery ---------------------------------------------------------------------

    def trial(self, request_id: str) -> Trial:
        try:
            return self.trials[request_id]
        except KeyError:
            raise ValueError(f"unknown searcher request id {request_id!r}") from None

    def running_count(self) -> int:
        return sum(1 for trial in self.trials.values() if trial.state in (RUNNING, CLOSING))

    def _fill(self) -> list[Operation]:
        ops: list[Operation] = []
        running = self.running_count()
        while len(self.trials) < self.max_trials and (
            self.max_concurrent == 0 or running < self.max_concurrent
        ):
            request_id = self.ctx.new_request_id()
            trial, hparams = self.new_trial(request_id)
            self.trials[request_id] = trial
            running += 1
            ops += [Create(request_id, hparams), ValidateAfter(request_id, trial.target)]
        return ops + self._maybe_shutdown()

    def _maybe_shutdown(self) -> list[Operation]:
        if self.shut_down or len(self.trials) < self.max_trials:
            return []
        if any(trial.state == RUNNING for trial in self.trials.values()):
            return []
        self.shut_down = True
        failed = sum(
            1
            for trial in self.trials.values()
            if trial.state == EXITED and trial.exit_reason not in NOT_FAILURES
        )
        return [Shutdown(failure=failed == len(self.trials))]

    # ---- snapshot ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "trials": [asdict(trial) for trial in self.trials.values()],
            "shut_down": self.shut_down,
            "method": self.method_state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.trials = {row["request_id"]: Trial(**row) for row in state["trials"]}
        self.shut_down = bool(state["shut_down"])
        self.restore_method_state(state["method"])


def required_max_length(config: ExperimentConfig) -> int:
    """``searcher.max_length`` in its unit; the single, random and grid searchers need it."""
    length = config.searcher.max_length
    if length is None:
        raise ValueError(
            f"searcher.max_length: the {config.searcher.name} searcher needs max_length, "
            "e.g. {batches: 1000}"
        )
    return length.value


class FixedLengthSearch(SearchMethod):
    """Trials that each train to ``max_length``, validate once and close (single, random, grid);
    subclasses say how many trials and with which hyperparameters."""

    def __init__(self, config: ExperimentConfig, ctx: SearchContext) -> None:
        super().__init__(config, ctx)
        self._length = required_max_length(config)

    @property
    def max_length(self) -> int:
        return self._length

    @abstractmethod
    def new_hparams(self) -> dict[str, Any]:
        """Hyperparameters of the next trial."""

    def new_trial(self, request_id: str) -> tuple[Trial, dict[str, Any]]:
        return Trial(request_id=request_id, target=self._length), self.new_hparams()

    def validated(self, trial: Trial, metric: float, length: int) -> bool:
        return False
