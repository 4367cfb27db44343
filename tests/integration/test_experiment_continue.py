"""``det experiment continue`` (``POST /api/v1/experiments/continue``) against a real master and
agent: a completed single-trial experiment trains on to a longer ``max_length`` under the same
id, its trial resuming from its latest checkpoint; and the requests it refuses."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.cluster import Agent, Api, Master, running_cluster
from tests.integration.test_cli import Cli
from tests.integration.test_experiments_api import (
    config,
    create,
    experiment,
    trial_logs,
    trials,
    wait_experiment,
)


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=2)


@pytest.fixture
def det(cluster: tuple[Master, list[Agent]], tmp_path: Path) -> Cli:
    master, _ = cluster
    cli = Cli(tmp_path / "home", master.url)
    cli.ok("user", "login", "admin", env={"DET_PASS": ""})
    return cli


def continue_(api: Api, experiment_id: int, override: dict[str, Any]) -> Any:
    body = {"id": experiment_id, "overrideConfig": yaml.safe_dump(override)}
    return api.post("/api/v1/experiments/continue", json=body)


def test_a_completed_experiment_continues_to_twice_its_length(
    det: Cli, cluster: tuple[Master, list[Agent]]
) -> None:
    master, _ = cluster
    api = Api(master)
    experiment_id = create(api, config())  # single, max_length 3 batches
    wait_experiment(api, master, experiment_id, "STATE_COMPLETED")
    (first,) = trials(api, experiment_id)
    assert first["totalBatchesProcessed"] == 3
    eid = str(experiment_id)

    # -f follows the continued trial's logs to its end, as create -f does.
    out = det.ok("e", "continue", eid, "--config", "searcher.max_length.batches=6", "-f")
    assert out.startswith(f"Continued experiment {eid}\n")
    assert f"Following first trial with ID {first['id']}" in out
    assert "run 2 latest=" in out and "searcher: done" in out
    described = experiment(api, experiment_id)
    assert described["config"]["searcher"]["max_length"]["batches"] == 6
    done = wait_experiment(api, master, experiment_id, "STATE_COMPLETED")
    assert done["numTrials"] == 1 and done["progress"] == 1.0
    (trial,) = trials(api, experiment_id)
    assert trial["id"] == first["id"] and trial["state"] == "STATE_COMPLETED"
    assert trial["totalBatchesProcessed"] == 6
    messages = "".join(entry["message"] for entry in trial_logs(api, trial["id"]))
    # The second run resumed from the first run's checkpoint, at 3 batches.
    assert "run 2 latest=" in messages and "steps=3" in messages
    assert f"experiment {eid} continued by admin: trial {trial['id']} trains from 3 to 6" in (
        messages
    )

    # Continuing to a length already trained is refused, saying what would help.
    again = det("e", "continue", eid, "--config", "searcher.max_length.batches=6")
    assert again.returncode == 1
    assert "already trained and validated 6 batches" in again.stderr
    assert "searcher.max_length.batches=12" in again.stderr


def test_what_cannot_be_continued(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    api = Api(master)
    longer = {"searcher": {"max_length": {"batches": 6}}}

    missing = continue_(api, 999, longer)
    assert missing.status_code == 404 and "experiment 999" in missing.json()["message"]

    running = create(
        api, config(searcher={"max_length": {"batches": 1000}}, env={"FAKE_STEP_SECONDS": "1"})
    )
    refused = continue_(api, running, longer)
    assert refused.status_code == 409, refused.text
    assert f"experiment {running} is STATE_ACTIVE" in refused.json()["message"]
    assert "only ended experiments" in refused.json()["message"]
    assert api.post(f"/api/v1/experiments/{running}/kill").status_code == 200
    wait_experiment(api, master, running, "STATE_CANCELED")

    searched = create(
        api,
        config(
            searcher={"name": "random", "max_trials": 2},
            hyperparameters={"x": {"type": "int", "minval": 1, "maxval": 9}},
        ),
    )
    wait_experiment(api, master, searched, "STATE_COMPLETED")
    not_single = continue_(api, searched, longer)
    assert not_single.status_code == 400
    assert "only experiments with the 'single' searcher" in not_single.json()["message"]

    done = create(api, config())
    wait_experiment(api, master, done, "STATE_COMPLETED")
    hparams = continue_(api, done, {**longer, "hyperparameters": {"x": 2}})
    assert hparams.status_code == 400
    assert hparams.json()["message"].startswith("hyperparameters: a continued trial keeps")
    other = continue_(Api(master, "determined"), done, longer)
    assert other.status_code == 403, other.text
    bad = api.post("/api/v1/experiments/continue", json={"id": done, "overrideConfig": "[1"})
    assert bad.status_code == 400 and "not valid YAML" in bad.json()["message"]
    # Nothing refused changed the experiment: it still continues.
    assert continue_(api, done, longer).status_code == 200
    wait_experiment(api, master, done, "STATE_COMPLETED")
    assert trials(api, done)[0]["totalBatchesProcessed"] == 6

    # A canceled experiment continues too (from its latest checkpoint, if it had one).
    resumed = continue_(api, running, {"searcher": {"max_length": {"batches": 2}}})
    assert resumed.status_code == 200, resumed.text
    wait_experiment(api, master, running, "STATE_COMPLETED")
    assert trials(api, running)[0]["state"] == "STATE_COMPLETED"


def test_determineds_cli_continues_an_experiment(
    cluster: tuple[Master, list[Agent]], tmp_path: Path
) -> None:
    venv = os.environ.get("FLOTILLA_DETERMINED_VENV")
    if not venv:
        pytest.skip("FLOTILLA_DETERMINED_VENV is not set")
    master, _ = cluster
    api = Api(master)
    experiment_id = create(api, config())
    wait_experiment(api, master, experiment_id, "STATE_COMPLETED")
    home = tmp_path / "det-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DET_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "xdg"))

    def determined(*args: str, stdin: str = "") -> str:
        result = subprocess.run(
            [str(Path(venv) / "bin" / "det"), "-m", master.url, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            start_new_session=True,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    determined("user", "login", "admin", stdin="\n")
    eid = str(experiment_id)
    out = determined("e", "continue", eid, "--config", "searcher.max_length.batches=6")
    assert out == f"Continued experiment {eid}\n"
    wait_experiment(api, master, experiment_id, "STATE_COMPLETED")
    assert trials(api, experiment_id)[0]["totalBatchesProcessed"] == 6


def test_the_digits_trainer_continues_from_its_checkpoint(
    cluster: tuple[Master, list[Agent]],
) -> None:
    """The real PyTorchTrial trainer: 1 epoch, then continued to 2 — the second run loads the
    first run's checkpoint and trains exactly one more epoch."""
    from tests.integration.test_experiments_e2e import create as create_digits
    from tests.integration.test_experiments_e2e import example_config, wait_ended

    master, _ = cluster
    api = Api(master)
    digits = example_config("const.yaml", searcher__max_length={"epochs": 1})
    experiment_id = create_digits(api, digits)
    assert wait_ended(api, experiment_id)["state"] == "STATE_COMPLETED"
    (first,) = trials(api, experiment_id)
    one_epoch = first["totalBatchesProcessed"]
    assert one_epoch > 0

    resumed = continue_(api, experiment_id, {"searcher": {"max_length": {"epochs": 2}}})
    assert resumed.status_code == 200, resumed.text
    ended = wait_ended(api, experiment_id)
    assert ended["state"] == "STATE_COMPLETED", ended.get("stateReason")
    (trial,) = trials(api, experiment_id)
    assert trial["runId"] == 2 and trial["restarts"] == 0
    assert trial["totalBatchesProcessed"] == 2 * one_epoch
    assert trial["latestCheckpoint"] != first["latestCheckpoint"]
    # Run 2 began at one epoch: no batch was trained twice, no epoch validated twice.
    path = f"/api/v1/trials/{trial['id']}/metrics"
    found = api.get(path, params={"group": "validation"}).json()["metrics"]
    assert [m["stepsCompleted"] for m in found] == [one_epoch, 2 * one_epoch]
    steps = [
        m["stepsCompleted"] for m in api.get(path, params={"group": "training"}).json()["metrics"]
    ]
    assert steps == sorted(set(steps)) and steps[-1] == 2 * one_epoch
