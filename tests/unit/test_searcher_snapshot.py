"""Snapshot and restore: a restored searcher continues exactly as an uninterrupted one."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from master.searcher import Searcher
from tests.unit.test_searcher_driver import Driver, make_config

SPACE: dict[str, Any] = {
    "lr": {"type": "log", "minval": -5, "maxval": 0, "count": 3},
    "width": {"type": "int", "minval": 8, "maxval": 64, "count": 3},
    "opt": {"momentum": {"type": "double", "minval": 0.5, "maxval": 0.99, "count": 2}},
}

CONFIGS: dict[str, dict[str, Any]] = {
    "single": {"name": "single", "max_length": 100},
    "random": {"name": "random", "max_trials": 9, "max_concurrent_trials": 3, "max_length": 100},
    "grid": {"name": "grid", "max_concurrent_trials": 4, "max_length": 100},
    "adaptive_asha": {"name": "adaptive_asha", "max_trials": 16, "max_length": {"batches": 937}},
    "asha_limited": {
        "name": "adaptive_asha",
        "max_trials": 40,
        "max_concurrent_trials": 5,
        "max_length": {"batches": 937},
        "mode": "conservative",
        "divisor": 3,
    },
}


def loss(hp: dict[str, Any], length: int) -> float:
    return (math.log10(hp["lr"]) + 2.5) ** 2 + hp["opt"]["momentum"] + 10 / length


def flaky(rid: str, hp: dict[str, Any], length: int) -> str | None:
    return "EXITED_REASON_ERRORED" if rid in ("r3", "r10") and length < 900 else None


@pytest.mark.parametrize("name", list(CONFIGS))
def test_restore_anywhere_continues_identically(name: str) -> None:
    config = make_config(CONFIGS[name], SPACE)
    plain = Driver(config, loss, exit_rule=flaky).run()
    assert plain.shutdown is not None
    for cut in range(1, plain.events + 1, max(plain.events // 12, 1)):
        resumed = Driver(config, loss, exit_rule=flaky, restore_after=cut).run()
        assert resumed.restored
        assert resumed.ops == plain.ops, f"diverged after restoring at event {cut}"
        assert resumed.progress == plain.progress


@pytest.mark.parametrize("name", list(CONFIGS))
def test_snapshots_are_strict_json(name: str) -> None:
    def nan_sometimes(hp: dict[str, Any], length: int) -> float:
        return math.nan if hp["width"] > 40 else loss(hp, length)

    config = make_config(CONFIGS[name], SPACE)
    driver = Driver(config, nan_sometimes, exit_rule=flaky).run()
    for searcher in (driver.searcher, Searcher(config, seed=1)):
        snapshot = searcher.snapshot()
        # allow_nan=False raises on NaN/inf: a NaN metric must not leak into stored state.
        stored = json.loads(json.dumps(snapshot, allow_nan=False))
        assert stored == snapshot
        assert Searcher.restore(config, stored).snapshot() == snapshot


def test_restore_before_initial_operations() -> None:
    config = make_config(CONFIGS["random"], SPACE)
    stored = json.loads(json.dumps(Searcher(config, seed=5).snapshot()))
    restored = Searcher.restore(config, stored)
    assert restored.initial_operations() == Searcher(config, seed=5).initial_operations()


def test_restore_keeps_the_seed_and_shutdown() -> None:
    config = make_config(CONFIGS["single"], SPACE)
    driver = Driver(config, loss, seed=42).run()
    restored = Searcher.restore(config, json.loads(json.dumps(driver.searcher.snapshot())))
    assert restored.seed == 42
    assert restored.finished and restored.progress() == 1.0
    with pytest.raises(RuntimeError):
        restored.initial_operations()


def test_restore_refuses_a_foreign_snapshot() -> None:
    random_config = make_config(CONFIGS["random"], SPACE)
    grid_config = make_config(CONFIGS["grid"], SPACE)
    snapshot = Searcher(random_config, seed=1).snapshot()
    with pytest.raises(ValueError, match="snapshot is for 'random', the config says 'grid'"):
        Searcher.restore(grid_config, snapshot)
    with pytest.raises(ValueError, match="unknown version"):
        Searcher.restore(random_config, {**snapshot, "version": 99})
