"""Model code written for Determined, run unchanged as experiments on a real master and agent:
the Core API tutorial's stages (tests/determined_code/core_api) and a PyTorchTrial in the shape
of Determined's mnist_pytorch example (tests/determined_code/digits_pytorch). The configs run
as written, but shorter where they would take long (max_length, max_trials)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.context import pack_context
from tests.integration.cluster import Agent, Api, Master, running_cluster
from tests.integration.test_experiments_e2e import final_accuracy, trials, wait_ended

CODE = Path(__file__).resolve().parents[1] / "determined_code"


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=2)


def create(api: Api, directory: Path, config_file: str, **searcher: Any) -> int:
    config = yaml.safe_load((directory / config_file).read_text())
    config["searcher"].update(searcher)
    body = {
        "config": yaml.safe_dump(config),
        "modelDefinition": pack_context(directory),
        "activate": True,
    }
    response = api.post("/api/v1/experiments", json=body)
    assert response.status_code == 200, response.text
    experiment_id: int = response.json()["experiment"]["id"]
    return experiment_id


def completed(api: Api, experiment_id: int) -> list[dict[str, Any]]:
    ended = wait_ended(api, experiment_id)
    assert ended["state"] == "STATE_COMPLETED", ended.get("stateReason")
    return trials(api, experiment_id)


def validations(api: Api, trial_id: int) -> list[dict[str, Any]]:
    path = f"/api/v1/trials/{trial_id}/metrics"
    found: list[dict[str, Any]] = api.get(path, params={"group": "validation"}).json()["metrics"]
    return found


def test_core_api_tutorial_stages_run_unchanged(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    api = Api(master)
    core = CODE / "core_api"
    metrics = create(api, core, "1_metrics.yaml")
    checkpoints = create(api, core, "2_checkpoints.yaml")
    search = create(api, core, "3_hpsearch.yaml", max_length=40, max_trials=2)
    distributed = create(api, core, "4_distributed.yaml", max_length=20)

    (trial,) = completed(api, metrics)
    assert [v["metrics"]["avgMetrics"] for v in validations(api, trial["id"])] == [{"x": 100}]
    logs = api.get(f"/api/v1/trials/{trial['id']}/logs").text
    assert "] root: info-level message" in logs  # det.LOG_FORMAT

    (trial,) = completed(api, checkpoints)
    # Ten saved; the default gc policy keeps the latest and best.
    assert trial["checkpointCount"] >= 1 and trial["totalBatchesProcessed"] == 100

    searched = completed(api, search)
    assert len(searched) == 2 and all(t["state"] == "STATE_COMPLETED" for t in searched)
    for trial in searched:
        increment_by = trial["hparams"]["increment_by"]
        # Whatever lengths ASHA handed out, x is the batches trained times increment_by.
        for validation in validations(api, trial["id"]):
            x = validation["metrics"]["avgMetrics"]["x"]
            assert x == validation["stepsCompleted"] * increment_by

    (trial,) = completed(api, distributed)
    (validation,) = validations(api, trial["id"])
    assert validation["metrics"]["avgMetrics"]["x"] == 20 * 2 * trial["hparams"]["increment_by"]


def test_pytorch_trial_in_the_mnist_examples_shape_trains(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    (trial,) = completed(api, create(api, CODE / "digits_pytorch", "const.yaml"))
    assert final_accuracy(trial) >= 0.9  # five epochs of the digits
    assert trial["checkpointCount"] >= 1 and trial["totalBatchesProcessed"] == 112
