"""The pieces of ``bench/harness_overhead.py`` and ``bench/first_metric_latency.py`` that could
be silently wrong: the arithmetic, the configs they build, and that the plain loop and the
trainer really do the same work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch

from bench import first_metric_latency as latency
from bench import harness_overhead as overhead
from harness.experiment_config import parse_experiment_config


def test_overhead_and_medians() -> None:
    assert overhead.overhead(2.0, 2.06) == pytest.approx(0.03)
    runs = [
        overhead.Timing(1.0, 2.0, {"reports": 0.1}),
        overhead.Timing(3.0, 4.0, {"reports": 0.3}),
        overhead.Timing(2.0, 9.0, {"reports": 0.2}),
    ]
    assert overhead.summarize(runs) == overhead.Timing(2.0, 4.0, {"reports": 0.2})
    plain = [overhead.Timing(1.0, 1.0), overhead.Timing(2.0, 2.0)]
    paired = overhead.paired_overheads(plain, runs[:2], lambda t: t.training)
    assert paired == pytest.approx([0.0, 0.5])


def test_latency_offsets_and_medians() -> None:
    start = datetime(2026, 11, 22, tzinfo=UTC)
    assert latency.parse_time("2026-11-22T00:00:01.500000Z") == start + timedelta(seconds=1.5)
    times = {"a": start + timedelta(seconds=2), "b": start + timedelta(milliseconds=250)}
    assert latency.offsets(start, times, ("b", "a")) == [0.25, 2.0]
    assert latency.medians([[1.0, 5.0], [3.0, 4.0], [2.0, 6.0]]) == [2.0, 5.0]


def test_latency_config_reports_early_and_is_valid() -> None:
    config = latency.example_config()
    parsed = parse_experiment_config(config)
    assert parsed.scheduling_unit == latency.SCHEDULING_UNIT < latency.BATCHES
    assert config["searcher"]["max_length"] == {"batches": latency.BATCHES}
    assert config["entrypoint"] == "model_def:DigitsTrial"


def test_plain_loop_and_trainer_end_with_the_same_weights(tmp_path: Path) -> None:
    """What makes the overhead comparison fair: the same batches, seeds and arithmetic."""
    example = overhead.example_config()
    hparams = example["hyperparameters"]
    trial_class = overhead.load_trial_class("model_def", "DigitsTrial", str(overhead.EXAMPLE))
    import model_def  # on sys.path now (load_trial_class)

    plain, plain_weights = overhead.run_plain(model_def, hparams, 7, tmp_path)
    timed, weights = overhead.run_harness(trial_class, hparams, 7, tmp_path, scheduling_unit=3)
    assert all(torch.equal(plain_weights[k], weights[k]) for k in plain_weights)
    assert 0 < plain.training <= plain.whole and 0 < timed.training <= timed.whole
    assert 0 < timed.parts["metrics report"] <= timed.parts["reports"] <= timed.training
