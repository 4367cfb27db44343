"""Checkpoint GC as a table: which uuids each combination of save_* policies deletes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from harness.experiment_config import SharedFSStorage
from harness.storage.gc import CheckpointRecord, checkpoints_to_delete


@dataclass
class Policy:
    save_experiment_best: int = 0
    save_trial_best: int = 0
    save_trial_latest: int = 0


def ck(uuid: str, trial: int, steps: int, metric: float | None = None) -> CheckpointRecord:
    return CheckpointRecord(
        uuid=uuid, trial_id=trial, steps_completed=steps, searcher_metric=metric
    )


# Two trials; trial 1's best is its first checkpoint, trial 2 improves steadily.
HISTORY = [
    ck("1a", 1, 100, 0.5),
    ck("1b", 1, 200, 0.7),
    ck("1c", 1, 300, 0.9),
    ck("2a", 2, 100, 0.6),
    ck("2b", 2, 200, 0.4),
    ck("2c", 2, 300, 0.3),
]
ALL = [c.uuid for c in HISTORY]


def deleted(
    checkpoints: list[CheckpointRecord], smaller_is_better: bool = True, **policy: int
) -> list[str]:
    return checkpoints_to_delete(checkpoints, Policy(**policy), smaller_is_better)


@pytest.mark.parametrize(
    ("policy", "smaller_is_better", "kept"),
    [
        ({}, True, []),
        ({"save_trial_latest": 1}, True, ["1c", "2c"]),
        ({"save_trial_latest": 2}, True, ["1b", "1c", "2b", "2c"]),
        ({"save_trial_latest": 9}, True, ALL),
        ({"save_trial_best": 1}, True, ["1a", "2c"]),
        ({"save_trial_best": 1}, False, ["1c", "2a"]),
        ({"save_trial_best": 2}, True, ["1a", "1b", "2b", "2c"]),
        ({"save_experiment_best": 1}, True, ["2c"]),
        ({"save_experiment_best": 1}, False, ["1c"]),
        ({"save_experiment_best": 3}, True, ["1a", "2b", "2c"]),
        # Determined's defaults: each trial's best and latest.
        ({"save_trial_best": 1, "save_trial_latest": 1}, True, ["1a", "1c", "2c"]),
        (
            {"save_trial_best": 1, "save_trial_latest": 1, "save_experiment_best": 2},
            True,
            ["1a", "1c", "2b", "2c"],
        ),
    ],
)
def test_keeps_the_union_of_the_policies(
    policy: dict[str, int], smaller_is_better: bool, kept: list[str]
) -> None:
    assert deleted(HISTORY, smaller_is_better, **policy) == [u for u in ALL if u not in kept]


def test_checkpoints_without_a_metric_are_never_best() -> None:
    history = [ck("a", 1, 100, None), ck("b", 1, 200, 0.5), ck("c", 1, 300, None)]
    assert deleted(history, save_trial_best=3) == ["a", "c"]
    assert deleted(history, save_experiment_best=3) == ["a", "c"]
    assert deleted(history, save_trial_best=1, save_trial_latest=1) == ["a"]
    only_unvalidated = [ck("x", 1, 100), ck("y", 2, 100)]
    assert deleted(only_unvalidated, save_trial_best=5, save_experiment_best=5) == ["x", "y"]


def test_nan_counts_as_no_metric() -> None:
    history = [ck("a", 1, 100, math.nan), ck("b", 1, 200, 2.0)]
    assert deleted(history, save_trial_best=1) == ["a"]
    assert deleted(history, save_trial_best=1, smaller_is_better=False) == ["a"]


def test_zero_is_a_metric_like_any_other() -> None:
    history = [ck("a", 1, 100, 0.0), ck("b", 1, 200, 0.1), ck("c", 1, 300, -0.0)]
    assert deleted(history, save_trial_best=1, smaller_is_better=False) == ["a", "c"]
    # 0.0 and -0.0 tie for best when smaller is better: the later one wins.
    assert deleted(history, save_trial_best=1) == ["a", "b"]


def test_negative_metrics_with_larger_is_better() -> None:
    history = [ck("a", 1, 100, -3.0), ck("b", 1, 200, -1.0), ck("c", 1, 300, -2.0)]
    assert deleted(history, save_trial_best=1, smaller_is_better=False) == ["a", "c"]
    assert deleted(history, save_trial_best=1) == ["b", "c"]


def test_ties_go_to_the_later_checkpoint() -> None:
    history = [ck("a", 1, 100, 0.5), ck("b", 1, 300, 0.5), ck("c", 1, 200, 0.5)]
    assert deleted(history, save_trial_best=1) == ["a", "c"]
    assert deleted(history, save_trial_best=2) == ["a"]
    across_trials = [ck("x", 1, 100, 1.0), ck("y", 2, 200, 1.0)]
    assert deleted(across_trials, save_experiment_best=1) == ["x"]


def test_equal_steps_fall_back_to_report_order() -> None:
    """A restarted run can save again at the same batch count: the later report is latest."""
    history = [ck("first", 1, 100), ck("second", 1, 100)]
    assert deleted(history, save_trial_latest=1) == ["first"]
    assert deleted(list(reversed(history)), save_trial_latest=1) == ["second"]


def test_latest_orders_by_steps_not_by_position() -> None:
    history = [ck("late", 1, 500), ck("early", 1, 100), ck("middle", 1, 300)]
    assert deleted(history, save_trial_latest=2) == ["early"]


def test_explicitly_kept_uuids_survive() -> None:
    assert checkpoints_to_delete(HISTORY, Policy(), True, keep={"1b", "unknown"}) == [
        u for u in ALL if u != "1b"
    ]


def test_a_storage_config_is_a_policy() -> None:
    config = SharedFSStorage(type="shared_fs", host_path="/mnt")  # defaults: trial best 1, latest 1
    assert checkpoints_to_delete(HISTORY, config, smaller_is_better=True) == ["1b", "2a", "2b"]


def test_duplicate_records_are_deleted_once_and_empty_input_is_fine() -> None:
    assert deleted([ck("a", 1, 100), ck("a", 1, 100), ck("b", 1, 200)], save_trial_latest=1) == [
        "a"
    ]
    assert deleted([], save_trial_latest=1, save_trial_best=1, save_experiment_best=1) == []
