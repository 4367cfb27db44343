"""Continuing an ended single search (pure parts): the reopened search asks the trial for the
new length and then shuts down as a fresh one would; overrides merge into the stored config."""

from __future__ import annotations

from master.api.experiment_continue import merged
from master.experiments.continuing import reopened_search
from master.experiments.search import DefaultSearcherFactory, SearchRun
from master.searcher import Searcher
from tests.unit.test_searcher_driver import make_config


def test_a_completed_single_search_reopens_at_the_new_length() -> None:
    first = make_config({"name": "single", "max_length": {"batches": 3}})
    run, effects = SearchRun.start(Searcher(first, 7))
    (created,) = effects.creates
    request_id = created.request_id
    assert run.current(request_id) == (3, False)
    run.validation_completed(request_id, 0.5, 3)
    run.trial_closed(request_id)
    assert run.shutdown and run.progress() == 1.0

    longer = make_config({"name": "single", "max_length": {"batches": 6}})
    snapshot = reopened_search(run.snapshot(), request_id, 6)
    reopened = SearchRun.restore(DefaultSearcherFactory(), longer, snapshot)
    assert reopened.current(request_id) == (6, False)
    assert not reopened.shutdown and reopened.progress() == 0.5
    reopened.trial_progress(request_id, 5 / 6)
    assert abs(reopened.progress() - 5 / 6) < 1e-9
    # The old length is no longer an operation; the new one completes the search again.
    assert reopened.validation_completed(request_id, 0.25, 6).creates == []
    reopened.trial_closed(request_id)
    assert reopened.shutdown and not reopened.failure and reopened.progress() == 1.0


def test_a_trial_that_exited_early_reopens_running() -> None:
    config = make_config({"name": "single", "max_length": {"batches": 10}})
    run, effects = SearchRun.start(Searcher(config, 1))
    request_id = effects.creates[0].request_id
    run.trial_exited_early(request_id, "EXITED_REASON_ERRORED")
    assert run.shutdown and run.failure
    reopened = SearchRun.restore(
        DefaultSearcherFactory(), config, reopened_search(run.snapshot(), request_id, 10)
    )
    assert reopened.current(request_id) == (10, False)
    assert not reopened.failure and reopened.progress() == 0.0


def test_overrides_merge_maps_and_replace_lengths() -> None:
    base = {
        "searcher": {"name": "single", "max_length": {"batches": 3, "epochs": None}},
        "resources": {"slots_per_trial": 1, "priority": 42},
        "labels": ["a"],
    }
    out = merged(
        base,
        {"searcher": {"max_length": {"epochs": 2}}, "resources": {"priority": 7}, "labels": []},
    )
    assert out["searcher"] == {"name": "single", "max_length": {"epochs": 2}}
    assert out["resources"] == {"slots_per_trial": 1, "priority": 7}
    assert out["labels"] == []
    assert base["resources"] == {"slots_per_trial": 1, "priority": 42}  # not changed in place
