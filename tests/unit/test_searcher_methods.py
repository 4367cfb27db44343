"""single, random and grid searchers, driven to the end by the test driver."""

from __future__ import annotations

from typing import Any

import pytest

from master.searcher import Close, Create, Searcher, Shutdown, ValidateAfter
from tests.unit.test_searcher_driver import Driver, first_request_id, make_config

SPACE: dict[str, Any] = {
    "lr": {"type": "log", "minval": -4, "maxval": -1},
    "layers": {"type": "int", "minval": 1, "maxval": 8},
    "opt": {"name": "adam", "momentum": {"type": "double", "minval": 0.5, "maxval": 0.99}},
}


def loss(hp: dict[str, Any], length: int) -> float:
    return abs(hp["layers"] - 3) + hp["opt"]["momentum"]


def random_config(**searcher: Any) -> Any:
    return make_config(
        {"name": "random", "max_trials": 10, "max_length": {"batches": 50}, **searcher}, SPACE
    )


# ---- single --------------------------------------------------------------------------------


def test_single_one_trial_to_max_length_then_close_and_shutdown() -> None:
    config = make_config({"name": "single", "max_length": {"epochs": 3}}, SPACE)
    driver = Driver(config, loss).run()
    rid = driver.created()[0]
    assert driver.ops[1:] == [ValidateAfter(rid, 3), Close(rid), Shutdown(failure=False)]
    hp = driver.hparams[rid]
    assert 1 <= hp["layers"] <= 8 and hp["opt"]["name"] == "adam"


def test_single_trial_that_errors_fails_the_search() -> None:
    config = make_config({"name": "single", "max_length": 5}, SPACE)
    driver = Driver(config, loss, exit_rule=lambda rid, hp, length: "EXITED_REASON_ERRORED").run()
    assert driver.ops[-1] == Shutdown(failure=True)
    assert driver.progress[-1] == 1.0


@pytest.mark.parametrize("name", ["single", "random", "grid"])
def test_max_length_is_required(name: str) -> None:
    searcher: dict[str, Any] = {"name": name}
    if name == "random":
        searcher["max_trials"] = 2
    with pytest.raises(ValueError, match=rf"^searcher\.max_length: the {name} searcher needs"):
        Searcher(make_config(searcher, {"a": 1}), seed=1)


# ---- random --------------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "expected"), [(3, 3), (1, 1), (0, 10), (16, 10)])
def test_random_creates_max_trials_within_the_concurrency_limit(limit: int, expected: int) -> None:
    driver = Driver(random_config(max_concurrent_trials=limit), loss).run()
    assert len(driver.created()) == 10
    assert driver.max_running == expected
    initial = sum(isinstance(op, Create) for op in Searcher(driver.config, 7).initial_operations())
    assert initial == expected
    for rid in driver.created():
        assert driver.lengths_validated(rid) == [50]
    assert [op for op in driver.ops if isinstance(op, Close)] == [
        Close(rid) for rid, _, _ in driver.validations
    ]
    assert driver.ops[-1] == Shutdown(failure=False)
    assert driver.ops.count(Shutdown(failure=False)) == 1


def test_random_next_trial_only_after_a_slot_frees() -> None:
    searcher = Searcher(random_config(max_trials=3, max_concurrent_trials=1), seed=1)
    first = searcher.initial_operations()
    assert [type(op) for op in first] == [Create, ValidateAfter]
    rid = first_request_id(first)
    assert searcher.on_trial_created(rid) == []
    assert searcher.on_validation_completed(rid, 0.5, 50) == [Close(rid)]
    ops = searcher.on_trial_closed(rid)
    assert [type(op) for op in ops] == [Create, ValidateAfter]
    assert first_request_id(ops) != rid


def test_random_seed_reproducible_and_different_seeds_differ() -> None:
    def hparams(seed: int) -> list[dict[str, Any]]:
        return list(Driver(random_config(), loss, seed=seed).run().hparams.values())

    assert hparams(1) == hparams(1)
    assert hparams(1) != hparams(2)


def test_config_seed_wins_over_the_experiment_id() -> None:
    config = random_config(seed=99)
    a = Driver(config, loss, seed=1).run()
    b = Driver(config, loss, seed=2).run()
    assert a.hparams == b.hparams
    assert a.searcher.seed == 99


def test_random_early_exits_count_as_done() -> None:
    def exit_rule(rid: str, hp: dict[str, Any], length: int) -> str | None:
        return "EXITED_REASON_ERRORED" if rid in ("r2", "r5") else None

    driver = Driver(random_config(max_concurrent_trials=2), loss, exit_rule=exit_rule).run()
    assert len(driver.created()) == 10
    assert driver.exits == ["r2", "r5"]
    closed = {op.request_id for op in driver.ops if isinstance(op, Close)}
    assert closed == set(driver.created()) - {"r2", "r5"}
    assert driver.ops[-1] == Shutdown(failure=False)


def test_random_all_errored_is_a_failure_but_invalid_hp_is_not() -> None:
    errored = Driver(random_config(), loss, exit_rule=lambda *_: "EXITED_REASON_ERRORED").run()
    assert errored.ops[-1] == Shutdown(failure=True)
    invalid = Driver(random_config(), loss, exit_rule=lambda *_: "EXITED_REASON_INVALID_HP").run()
    assert invalid.ops[-1] == Shutdown(failure=False)


def test_progress_is_monotone_and_ends_at_one() -> None:
    driver = Driver(random_config(max_concurrent_trials=3), loss).run()
    assert driver.progress[0] == 0.0
    assert driver.progress == sorted(driver.progress)
    assert driver.progress[-1] == 1.0


def test_late_and_repeated_events_are_ignored() -> None:
    searcher = Searcher(random_config(max_trials=2, max_concurrent_trials=1), seed=1)
    rid = first_request_id(searcher.initial_operations())
    assert searcher.on_validation_completed(rid, 1.0, 20) == []  # shorter than asked: progress
    assert searcher.progress() == pytest.approx(20 / 100)
    assert searcher.on_validation_completed(rid, 1.0, 50) == [Close(rid)]
    assert searcher.on_validation_completed(rid, 1.0, 50) == []
    assert len(searcher.on_trial_closed(rid)) == 2
    assert searcher.on_trial_closed(rid) == []
    assert searcher.on_trial_exited_early(rid, "EXITED_REASON_ERRORED") == []
    with pytest.raises(ValueError, match="unknown searcher request id 'nope'"):
        searcher.on_trial_closed("nope")
    with pytest.raises(RuntimeError):
        searcher.initial_operations()


def test_trial_closed_without_close_frees_its_slot() -> None:
    searcher = Searcher(random_config(max_trials=2, max_concurrent_trials=1), seed=1)
    rid = first_request_id(searcher.initial_operations())
    ops = searcher.on_trial_closed(rid)  # e.g. killed by a user
    assert [type(op) for op in ops] == [Create, ValidateAfter]


# ---- grid ----------------------------------------------------------------------------------

GRID_SPACE: dict[str, Any] = {
    "lr": {"type": "log", "minval": -3, "maxval": -1, "count": 3},
    "layers": {"type": "int", "minval": 1, "maxval": 3, "count": 5},
    "act": {"type": "categorical", "vals": ["relu", "tanh"]},
    "batch": 64,
}


def test_grid_creates_each_point_once() -> None:
    config = make_config({"name": "grid", "max_length": 10, "max_concurrent_trials": 4}, GRID_SPACE)
    driver = Driver(config, lambda hp, length: hp["lr"]).run()
    points = list(driver.hparams.values())
    assert len(points) == 3 * 3 * 2
    expected = {
        (lr, layers, act, 64)
        for lr in (0.001, 0.01, 0.1)
        for layers in (1, 2, 3)
        for act in ("relu", "tanh")
    }
    got = {(round(p["lr"], 12), p["layers"], p["act"], p["batch"]) for p in points}
    assert got == expected
    assert driver.max_running == 4
    assert driver.ops[-1] == Shutdown(failure=False)
    assert all(driver.lengths_validated(rid) == [10] for rid in driver.created())


def test_grid_missing_count_is_refused_with_the_path() -> None:
    config = make_config(
        {"name": "grid", "max_length": 10},
        {"opt": {"lr": {"type": "double", "minval": 0, "maxval": 1}}},
    )
    with pytest.raises(ValueError, match=r"^hyperparameters\.opt\.lr: the grid searcher needs"):
        Searcher(config, seed=1)


@pytest.mark.parametrize("smaller_is_better", [True, False])
def test_fixed_length_searchers_ignore_the_metric_direction(smaller_is_better: bool) -> None:
    config = random_config(smaller_is_better=smaller_is_better)
    driver = Driver(config, loss).run()
    assert len(driver.created()) == 10 and driver.ops[-1] == Shutdown()


def test_progress_follows_what_running_trials_report_before_they_validate() -> None:
    # A single trial of 230 batches that has trained 69 (issue 11: the console said 0%).
    config = make_config({"name": "single", "max_length": {"batches": 230}}, SPACE)
    searcher = Searcher(config, seed=1)
    rid = first_request_id(searcher.initial_operations())
    assert searcher.progress() == 0.0
    searcher.on_trial_progress(rid, 69 / 230)
    assert searcher.progress() == pytest.approx(0.3)
    searcher.on_trial_progress(rid, 0.1)  # an older report arriving late: never lowers it
    assert searcher.progress() == pytest.approx(0.3)
    searcher.on_trial_progress(rid, float("nan"))
    searcher.on_trial_progress("r404", 0.9)  # not a trial of this search: ignored
    assert searcher.progress() == pytest.approx(0.3)
    restored = Searcher.restore(config, searcher.snapshot())  # kept across a master restart
    assert restored.progress() == pytest.approx(0.3)
    assert searcher.on_validation_completed(rid, 1.0, 230) == [Close(rid), Shutdown(failure=False)]
    assert searcher.progress() == 1.0


def test_progress_is_completed_units_over_planned_units_across_trials() -> None:
    # Four trials of 50 batches, two at a time: one half way, one a fifth, two not started.
    searcher = Searcher(random_config(max_trials=4, max_concurrent_trials=2), seed=1)
    ops = searcher.initial_operations()
    first, second = [op.request_id for op in ops if isinstance(op, Create)]
    searcher.on_trial_progress(first, 0.5)
    searcher.on_trial_progress(second, 0.2)
    assert searcher.progress() == pytest.approx((25 + 10) / 200)
    # A report past the trial's current target counts only up to it (it validates there).
    assert searcher.on_validation_completed(first, 1.0, 50)[0] == Close(first)
    assert searcher.progress() == pytest.approx((50 + 10) / 200)
    searcher.on_trial_progress(first, 1.0)  # closing: its share is already whole
    assert searcher.progress() == pytest.approx((50 + 10) / 200)
