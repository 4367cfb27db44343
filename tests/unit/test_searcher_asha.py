"""adaptive_asha: the bracket plan, the promotion rule, and whole searches driven to the end."""

from __future__ import annotations

import math
import statistics
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.experiment_config import AdaptiveAshaSearcher
from master.searcher import (
    BracketPlan,
    Close,
    Create,
    Searcher,
    Shutdown,
    ValidateAfter,
    plan_brackets,
)
from master.searcher.asha import bracket_trials, rung_lengths, rungs_that_fit
from tests.unit.test_searcher_driver import Driver, first_request_id, make_config

LR_SPACE: dict[str, Any] = {"lr": {"type": "log", "minval": -5, "maxval": 0}}


def loss(hp: dict[str, Any], length: int) -> float:
    """Best at lr = 10**-2.5; every trial improves with training the same way."""
    return (math.log10(hp["lr"]) + 2.5) ** 2 + 10 / length


def asha(**searcher: Any) -> Any:
    fields = {"name": "adaptive_asha", "max_trials": 16, "max_length": {"batches": 937}}
    return make_config({**fields, **searcher}, LR_SPACE)


def plan(**fields: Any) -> list[BracketPlan]:
    base = {"name": "adaptive_asha", "metric": "loss", "max_length": 937, "max_trials": 16}
    return plan_brackets(AdaptiveAshaSearcher.model_validate({**base, **fields}))


def brackets_of(driver: Driver) -> dict[str, int]:
    rows = driver.searcher.snapshot()["state"]["trials"]
    return {row["request_id"]: row["bracket"] for row in rows}


# ---- the plan ------------------------------------------------------------------------------


def test_plan_standard_16_trials() -> None:
    # 16 trials at divisor 4 cap the rungs at 3 (4**2 = 16); standard runs 3 brackets.
    assert plan() == [
        BracketPlan(rungs=(59, 234, 937), max_trials=12),
        BracketPlan(rungs=(234, 937), max_trials=3),
        BracketPlan(rungs=(937,), max_trials=1),
    ]


def test_plan_standard_many_trials_uses_all_five_rungs() -> None:
    assert plan(max_trials=1000) == [
        BracketPlan(rungs=(4, 15, 59, 234, 937), max_trials=707),
        BracketPlan(rungs=(15, 59, 234, 937), max_trials=220),
        BracketPlan(rungs=(59, 234, 937), max_trials=73),
    ]


@pytest.mark.parametrize(
    ("fields", "rung_counts"),
    [
        ({"mode": "aggressive", "max_trials": 1000}, [5]),
        ({"mode": "conservative", "max_trials": 1000}, [5, 4, 3, 2]),
        ({"mode": "conservative", "max_trials": 1000, "max_rungs": 2}, [2, 1]),
        ({"mode": "standard", "max_trials": 1000, "max_rungs": 1}, [1]),
        ({"mode": "standard", "max_trials": 3}, [1]),  # 3 < 4: nobody could be promoted
        ({"mode": "standard", "max_trials": 1000, "max_length": 20}, [3, 2, 1]),  # 4**3 > 20
        ({"mode": "standard", "max_trials": 100, "divisor": 2, "max_rungs": 10}, [7, 6, 5]),
    ],
)
def test_plan_rungs_per_bracket(fields: dict[str, Any], rung_counts: list[int]) -> None:
    brackets = plan(**fields)
    assert [len(b.rungs) for b in brackets] == rung_counts
    assert sum(b.max_trials for b in brackets) == fields["max_trials"]
    assert all(b.rungs[-1] == fields.get("max_length", 937) for b in brackets)


def test_rung_lengths_round_and_stay_at_least_one() -> None:
    assert rung_lengths(937, 4, 5) == (4, 15, 59, 234, 937)
    assert rung_lengths(937, 4, 1) == (937,)
    assert rung_lengths(10, 3, 3) == (1, 3, 10)
    assert rung_lengths(2, 4, 3) == (1, 1, 2)
    assert rungs_that_fit(16, 4) == 3 and rungs_that_fit(15, 4) == 2 and rungs_that_fit(1, 4) == 1


def test_plan_with_max_time_uses_its_units() -> None:
    brackets = plan(max_length=None, max_time=100, time_metric="batches", mode="aggressive")
    assert brackets == [BracketPlan(rungs=(6, 25, 100), max_trials=16)]


@settings(max_examples=100, deadline=None)
@given(
    max_trials=st.integers(min_value=1, max_value=500),
    divisor=st.floats(min_value=1.05, max_value=10),
    max_rungs=st.integers(min_value=1, max_value=8),
    mode=st.sampled_from(["aggressive", "standard", "conservative"]),
)
def test_plan_allocates_exactly_max_trials(
    max_trials: int, divisor: float, max_rungs: int, mode: str
) -> None:
    brackets = plan(max_trials=max_trials, divisor=divisor, max_rungs=max_rungs, mode=mode)
    assert sum(b.max_trials for b in brackets) == max_trials
    assert all(b.max_trials >= 1 for b in brackets)
    assert 1 <= len(brackets) <= {"aggressive": 1, "standard": 3, "conservative": 4}[mode]
    for b in brackets:
        assert list(b.rungs) == sorted(b.rungs) and b.rungs[0] >= 1 and b.rungs[-1] == 937


def test_bracket_trials_follow_determined_weights() -> None:
    assert bracket_trials(16, 4, [3, 2, 1]) == [12, 3, 1]
    assert bracket_trials(100, 4, [5, 4, 3]) == [71, 22, 7]
    assert bracket_trials(3, 1.1, [5, 4, 3]) == [1, 1, 1]


# ---- the promotion rule, step by step ----------------------------------------------------------


def test_promotion_rule_top_fraction_so_far_at_least_the_best() -> None:
    # One bracket, divisor 2, rungs (1, 2, 4, 8); 8 trials all at once.
    config = asha(mode="aggressive", max_trials=8, divisor=2, max_length=8)
    searcher = Searcher(config, seed=1)
    ops = searcher.initial_operations()
    rids = [op.request_id for op in ops if isinstance(op, Create)]
    assert [op for op in ops if isinstance(op, ValidateAfter)] == [
        ValidateAfter(r, 1) for r in rids
    ]
    r1, r2, r3, r4, r5, r6, *_ = rids
    # Rung 0 (length 1): go on iff rank < max(floor(n / 2), 1) among the n results so far.
    assert searcher.on_validation_completed(r1, 5.0, 1) == [ValidateAfter(r1, 2)]  # n=1 rank 0
    assert searcher.on_validation_completed(r2, 6.0, 1) == [Close(r2)]  # n=2 keep 1, rank 1
    assert searcher.on_validation_completed(r3, 4.0, 1) == [ValidateAfter(r3, 2)]  # n=3 rank 0
    assert searcher.on_validation_completed(r4, 5.5, 1) == [Close(r4)]  # n=4 keep 2, rank 2
    assert searcher.on_validation_completed(r5, 4.5, 1) == [ValidateAfter(r5, 2)]  # n=5 rank 1
    # a tie ranks after the equal result already there: 4.0 4.5 5.0 [5.0] -> rank 3, keep 3
    assert searcher.on_validation_completed(r6, 5.0, 1) == [Close(r6)]
    # rung 1 (length 2) starts its own ranking
    assert searcher.on_validation_completed(r1, 3.0, 2) == [ValidateAfter(r1, 4)]
    assert searcher.on_validation_completed(r3, 3.5, 2) == [Close(r3)]  # n=2 keep 1, rank 1
    assert searcher.on_validation_completed(r1, 2.0, 4) == [ValidateAfter(r1, 8)]
    assert searcher.on_validation_completed(r1, 1.0, 8) == [Close(r1)]  # the top: done
    # closed trials free their slots, but all 8 were created at once: nothing new
    assert searcher.on_trial_closed(r2) == []


def test_a_validation_past_several_rungs_counts_in_each() -> None:
    config = asha(mode="aggressive", max_trials=4, divisor=2, max_length=8, max_concurrent_trials=1)
    searcher = Searcher(config, seed=1)
    rid = first_request_id(searcher.initial_operations())
    assert searcher.on_validation_completed(rid, 1.0, 5) == [ValidateAfter(rid, 8)]
    rungs = searcher.snapshot()["state"]["method"]["results"][0]
    assert [len(r) for r in rungs] == [1, 1, 0]


# ---- whole searches ------------------------------------------------------------------------


def test_16_trials_937_batches_standard() -> None:
    driver = Driver(asha(), loss, seed=7).run()
    created = driver.created()
    assert len(created) == 16
    assert driver.max_running == 16
    assert driver.ops[-1] == Shutdown(failure=False)
    closes = [op.request_id for op in driver.ops if isinstance(op, Close)]
    assert sorted(closes) == sorted(created)  # each closed exactly once
    # every trial validated at its bracket's rungs in order, stopping somewhere
    bracket_rungs = [b.rungs for b in plan()]
    for rid, bracket in brackets_of(driver).items():
        lengths = driver.lengths_validated(rid)
        assert tuple(lengths) == bracket_rungs[bracket][: len(lengths)]
    top = driver.reached(937)
    assert len(top) == 4
    assert sum(1 for rid in created if driver.lengths_validated(rid) == [59]) == 11
    best = min(created, key=lambda rid: loss(driver.hparams[rid], 937))
    assert best in top
    assert driver.progress == sorted(driver.progress) and driver.progress[-1] == 1.0


@pytest.mark.parametrize(("mode", "mean_at_most"), [("aggressive", 4.0), ("standard", 6.5)])
def test_most_trials_stop_early_and_the_best_always_reaches_the_top(
    mode: str, mean_at_most: float
) -> None:
    reached, budget = [], []
    for seed in range(30):
        driver = Driver(asha(mode=mode), loss, seed=seed).run()
        created = driver.created()
        assert len(created) == 16
        top = driver.reached(937)
        reached.append(len(top))
        best = min(created, key=lambda rid: loss(driver.hparams[rid], 937))
        assert best in top
        budget.append(sum(max(driver.lengths_validated(r)) for r in created) / (16 * 937))
    assert statistics.mean(reached) <= mean_at_most
    assert max(budget) < 0.65  # a random search would train all 16 * 937 batches


@pytest.mark.parametrize("smaller_is_better", [True, False])
def test_metric_direction(smaller_is_better: bool) -> None:
    def reported(hp: dict[str, Any], length: int) -> float:
        return loss(hp, length) if smaller_is_better else -loss(hp, length)

    driver = Driver(asha(smaller_is_better=smaller_is_better), reported, seed=3).run()
    best = min(driver.created(), key=lambda rid: loss(driver.hparams[rid], 937))
    assert best in driver.reached(937)
    # the same decisions either way: the operation sequences are identical
    other = Driver(asha(), loss, seed=3).run()
    assert driver.ops == other.ops


def test_larger_is_better_prefers_larger_values() -> None:
    driver = Driver(asha(smaller_is_better=False), loss, seed=3).run()
    worst = max(driver.created(), key=lambda rid: loss(driver.hparams[rid], 937))
    assert worst in driver.reached(937)


@pytest.mark.parametrize("limit", [1, 3, 5])
def test_concurrency_limit_is_never_exceeded(limit: int) -> None:
    driver = Driver(asha(max_concurrent_trials=limit), loss, seed=5).run()
    assert driver.max_running == limit
    assert len(driver.created()) == 16
    assert driver.ops[-1] == Shutdown(failure=False)


def test_no_limit_creates_every_trial_at_once() -> None:
    ops = Searcher(asha(max_concurrent_trials=0), seed=1).initial_operations()
    assert sum(isinstance(op, Create) for op in ops) == 16


def test_brackets_fill_in_proportion() -> None:
    searcher = Searcher(asha(max_concurrent_trials=4), seed=1)
    ops = searcher.initial_operations()
    firsts = [op.length for op in ops if isinstance(op, ValidateAfter)]
    assert firsts == [59, 234, 937, 59]  # brackets 0, 1, 2, 0


def test_early_exits_count_as_the_worst_result() -> None:
    def exit_rule(rid: str, hp: dict[str, Any], length: int) -> str | None:
        return "EXITED_REASON_ERRORED" if hp["lr"] > 0.1 else None

    driver = Driver(asha(max_concurrent_trials=4), loss, exit_rule=exit_rule, seed=11).run()
    assert driver.exits  # some trials did exit
    created = driver.created()
    assert len(created) == 16
    closes = {op.request_id for op in driver.ops if isinstance(op, Close)}
    assert closes == set(created) - set(driver.exits)
    assert driver.ops[-1] == Shutdown(failure=False)
    rows = driver.searcher.snapshot()["state"]["method"]["results"]
    worst = {rid for bracket in rows for rung in bracket for rid, value in rung if value is None}
    assert worst == set(driver.exits)


def test_the_best_exiting_hands_the_top_to_the_next_best() -> None:
    plain = Driver(asha(), loss, seed=7).run()
    best = min(plain.created(), key=lambda rid: loss(plain.hparams[rid], 937))

    def exit_rule(rid: str, hp: dict[str, Any], length: int) -> str | None:
        return "EXITED_REASON_ERRORED" if rid == best else None

    driver = Driver(asha(), loss, exit_rule=exit_rule, seed=7).run()
    assert driver.exits == [best]
    rest = [rid for rid in driver.created() if rid != best]
    assert min(rest, key=lambda rid: loss(driver.hparams[rid], 937)) in driver.reached(937)


def test_every_trial_erroring_fails_the_search() -> None:
    driver = Driver(asha(), loss, exit_rule=lambda *_: "EXITED_REASON_ERRORED").run()
    assert len(driver.created()) == 16
    assert driver.ops[-1] == Shutdown(failure=True)


def test_non_finite_metrics_rank_last() -> None:
    def nan_for_small_lr(hp: dict[str, Any], length: int) -> float:
        return math.nan if hp["lr"] < 1e-3 else loss(hp, length)

    driver = Driver(asha(mode="aggressive"), nan_for_small_lr, seed=2).run()
    assert len(driver.created()) == 16
    good = [rid for rid in driver.created() if driver.hparams[rid]["lr"] >= 1e-3]
    assert min(good, key=lambda rid: loss(driver.hparams[rid], 937)) in driver.reached(937)


def test_max_time_lengths_are_in_time_metric_units() -> None:
    config = make_config(
        {
            "name": "adaptive_asha",
            "max_trials": 16,
            "max_time": 100,
            "time_metric": "batches",
            "mode": "aggressive",
        },
        LR_SPACE,
    )
    driver = Driver(config, loss).run()
    lengths = {op.length for op in driver.ops if isinstance(op, ValidateAfter)}
    assert lengths <= {6, 25, 100}
    assert 100 in lengths
