"""``adaptive_asha``: Determined's adaptive asynchronous successive halving.

The search runs several *brackets* side by side; each is an ASHA with its own number of rungs,
so some brackets stop bad trials early and hard while others give every trial a longer look.
Within a bracket a trial trains to the first rung's length and validates; if its result is among
the best ``1/divisor`` of that rung's results so far it goes on to the next rung, else it is
closed and its slot goes to a new trial. Decisions are made once, when the result arrives (as
Determined's stop-once ASHA does), so no trial ever waits for a later promotion.
``docs/design/searchers.md`` has the arithmetic with worked numbers.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

from harness.experiment_config import AdaptiveAshaSearcher, AshaMode, ExperimentConfig
from master.searcher.base import SearchContext, SearchMethod, Trial
from master.searcher.hparams import round_half_away, sample_hparams

# How many brackets each mode runs at most (never more than the number of rungs).
MODE_BRACKETS = {AshaMode.AGGRESSIVE: 1, AshaMode.STANDARD: 3, AshaMode.CONSERVATIVE: 4}

# Float slack for "divisor ** k <= n" and "n / divisor", so 16 / 4 is 4 rungs' worth, not 3.
_EPSILON = 1e-9


@dataclass(frozen=True)
class BracketPlan:
    """One bracket: the cumulative length of each rung (shortest first, the last is the
    search's max length) and how many trials it creates."""

    rungs: tuple[int, ...]
    max_trials: int


def search_length(searcher: AdaptiveAshaSearcher) -> int:
    """The top rung's length: ``max_time`` (in ``time_metric`` units) if set, else
    ``max_length`` in its unit."""
    if searcher.max_time is not None:
        return searcher.max_time
    assert searcher.max_length is not None  # the config requires one of the two
    return searcher.max_length.value


def rungs_that_fit(n: float, divisor: float) -> int:
    """1 + the largest k with ``divisor ** k <= n``: more rungs than this would need a bottom
    rung shorter than one unit, or more trials than ``n`` to promote anyone to the top."""
    k = 0
    while divisor ** (k + 1) <= n * (1 + _EPSILON):
        k += 1
    return k + 1


def rung_lengths(length: int, divisor: float, num_rungs: int) -> tuple[int, ...]:
    """Rung k of ``num_rungs`` trains to ``length / divisor ** (num_rungs - 1 - k)``, rounded
    (half away from zero) and at least 1."""
    return tuple(
        max(round_half_away(length / divisor ** (num_rungs - 1 - k)), 1) for k in range(num_rungs)
    )


def bracket_trials(max_trials: int, divisor: float, rung_counts: list[int]) -> list[int]:
    """Split ``max_trials`` over brackets as Determined does: a bracket with r rungs weighs
    ``divisor ** (r - 1) / r`` (about equal training budget per bracket); each gets
    ``floor(weight share * max_trials)`` but at least 1, and the rest goes to the first (most
    aggressive) bracket. If the at-least-1 rule overshoots, the largest bracket gives back."""
    weights = [divisor ** (r - 1) / r for r in rung_counts]
    total = sum(weights)
    trials = [max(int(w / total * max_trials), 1) for w in weights]
    trials[0] += max(max_trials - sum(trials), 0)
    while sum(trials) > max_trials:
        trials[trials.index(max(trials))] -= 1
    return trials


def plan_brackets(searcher: AdaptiveAshaSearcher) -> list[BracketPlan]:
    """The brackets of an adaptive ASHA search.

    Rungs: ``min(max_rungs, rungs_that_fit(length), rungs_that_fit(max_trials))`` (Determined's
    caps). Brackets: ``min(mode's count, rungs, max_trials)``; bracket i has ``rungs - i``
    rungs, the most aggressive first."""
    length = search_length(searcher)
    divisor = searcher.divisor
    rungs = min(
        searcher.max_rungs,
        rungs_that_fit(length, divisor),
        rungs_that_fit(searcher.max_trials, divisor),
    )
    count = min(MODE_BRACKETS[searcher.mode], rungs, searcher.max_trials)
    rung_counts = [rungs - i for i in range(count)]
    trials = bracket_trials(searcher.max_trials, divisor, rung_counts)
    return [
        BracketPlan(rung_lengths(length, divisor, r), n)
        for r, n in zip(rung_counts, trials, strict=True)
    ]


def _rank_key(value: float | None) -> tuple[int, float]:
    """Smaller ranks better; ``None`` (an exited trial or a non-finite metric) ranks last."""
    return (1, 0.0) if value is None else (0, value)


class AdaptiveAshaSearch(SearchMethod):
    """The brackets of :func:`plan_brackets` over one trial table and one slot pool."""

    def __init__(self, config: ExperimentConfig, ctx: SearchContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config.searcher, AdaptiveAshaSearcher)
        self._searcher = config.searcher
        self.plan = plan_brackets(config.searcher)
        self._length = search_length(config.searcher)
        # results[bracket][rung]: [request_id, value] sorted best first; value is the metric
        # with smaller-is-better applied (negated otherwise), None for a worst result.
        self.results: list[list[list[list[Any]]]] = [
            [[] for _ in bracket.rungs] for bracket in self.plan
        ]
        self._created = [0] * len(self.plan)  # trials per bracket, derived from the table

    @property
    def max_trials(self) -> int:
        return self._searcher.max_trials

    @property
    def max_concurrent(self) -> int:
        return self._searcher.max_concurrent_trials

    @property
    def max_length(self) -> int:
        return self._length

    def _next_bracket(self) -> int:
        """The bracket furthest behind its share (created / max_trials), ties to the most
        aggressive, so brackets fill in proportion whatever the concurrency limit."""
        created = self._created
        open_brackets = [i for i, b in enumerate(self.plan) if created[i] < b.max_trials]
        best = open_brackets[0]
        for i in open_brackets[1:]:
            if created[i] * self.plan[best].max_trials < created[best] * self.plan[i].max_trials:
                best = i
        return best

    def new_trial(self, request_id: str) -> tuple[Trial, dict[str, Any]]:
        bracket = self._next_bracket()
        self._created[bracket] += 1
        trial = Trial(request_id=request_id, target=self.plan[bracket].rungs[0], bracket=bracket)
        return trial, sample_hparams(self.space, self.ctx.rng)

    def _record(self, trial: Trial, value: float | None) -> int:
        """Insert a result into the trial's current rung; its 0-based rank there. A newcomer
        ranks after equal results already in the rung."""
        rung = self.results[trial.bracket][trial.rung]
        index = bisect.bisect_right(rung, _rank_key(value), key=lambda row: _rank_key(row[1]))
        rung.insert(index, [trial.request_id, value])
        return index

    def validated(self, trial: Trial, metric: float, length: int) -> bool:
        value: float | None = metric if self.smaller_is_better else -metric
        if not math.isfinite(metric):
            value = None
        rungs = self.plan[trial.bracket].rungs
        # A validation long enough for several rungs counts in each (as in Determined).
        while trial.rung < len(rungs) and length >= rungs[trial.rung]:
            rank = self._record(trial, value)
            if trial.rung == len(rungs) - 1:
                return False  # trained to the top: done
            finished = len(self.results[trial.bracket][trial.rung])
            keep = max(int(finished / self._searcher.divisor + _EPSILON), 1)
            if rank >= keep:
                return False
            trial.rung += 1
        trial.target = rungs[trial.rung]
        return True

    def exited(self, trial: Trial) -> None:
        self._record(trial, None)

    def method_state(self) -> dict[str, Any]:
        return {"results": self.results}

    def restore_method_state(self, state: dict[str, Any]) -> None:
        results = state["results"]
        if [len(rungs) for rungs in results] != [len(b.rungs) for b in self.plan]:
            raise ValueError("searcher snapshot: brackets do not match the config")
        self.results = results
        self._created = [0] * len(self.plan)
        for trial in self.trials.values():
            self._created[trial.bracket] += 1
