"""Experiments end to end: a real master and agent, trials that are fake programs speaking the
harness's REST calls (tests/integration/data/fake_trial.py), on SQLite and PostgreSQL.

Every shape the master answers is also parsed with Determined's own bindings when its venv is
around (``.venv-determined``, or ``$FLOTILLA_DETERMINED_VENV``), so required fields cannot go
missing unnoticed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.cluster import Agent, Api, Master, running_cluster, wait_for

ROOT = Path(__file__).resolve().parents[2]
FAKE_TRIAL = Path(__file__).parent / "data" / "fake_trial.py"
DETERMINED_PYTHON = (
    Path(os.environ.get("FLOTILLA_DETERMINED_VENV", ROOT / ".venv-determined")) / "bin" / "python"
)


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=2)


# ---- helpers ----------------------------------------------------------------------------------


def determined_parses(binding: str, payload: Any) -> None:
    """Parse ``payload`` with Determined's ``bindings.<binding>.from_json`` (if installed)."""
    if not DETERMINED_PYTHON.exists():
        return
    script = (
        "import json, sys\n"
        "from determined.common.api import bindings\n"
        "getattr(bindings, sys.argv[1]).from_json(json.load(sys.stdin))\n"
    )
    result = subprocess.run(
        [str(DETERMINED_PYTHON), "-c", script, binding],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{binding} does not parse: {result.stderr[-3000:]}"


def model_definition() -> list[dict[str, Any]]:
    content = base64.b64encode(FAKE_TRIAL.read_bytes()).decode()
    return [{"path": "fake_trial.py", "type": 48, "content": content, "mtime": 0}]


def config(
    *,
    searcher: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "fake experiment",
        "entrypoint": "python fake_trial.py",
        "searcher": {
            "name": "single",
            "metric": "validation_loss",
            "max_length": {"batches": 3},
            **(searcher or {}),
        },
        "hyperparameters": {"x": 1},
        "max_restarts": 0,
        "environment": {"environment_variables": env or {}},
    }
    base.update(fields)
    return base


def create(api: Api, experiment: dict[str, Any], **body: Any) -> int:
    response = api.post(
        "/api/v1/experiments",
        json={
            "config": yaml.safe_dump(experiment),
            "modelDefinition": model_definition(),
            **body,
        },
    )
    assert response.status_code == 200, response.text
    determined_parses("v1CreateExperimentResponse", response.json())
    experiment_id: int = response.json()["experiment"]["id"]
    return experiment_id


def experiment(api: Api, experiment_id: int) -> dict[str, Any]:
    response = api.get(f"/api/v1/experiments/{experiment_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def trials(api: Api, experiment_id: int) -> list[dict[str, Any]]:
    response = api.get(f"/api/v1/experiments/{experiment_id}/trials")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["trials"]
    return found


def wait_experiment(
    api: Api, master: Master, experiment_id: int, state: str, timeout: float = 90
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = experiment(api, experiment_id)["experiment"]
        if body["state"] == state:
            return body
        if body["state"] in {"STATE_COMPLETED", "STATE_CANCELED", "STATE_ERROR"}:
            raise AssertionError(f"experiment ended {body['state']}: {body.get('stateReason')}")
        return None

    found: dict[str, Any] = wait_for(
        f"experiment {experiment_id} to be {state}", check, timeout, logs=[master.log_path]
    )
    return found


def trial_logs(api: Api, trial_id: int) -> list[dict[str, Any]]:
    with api.http.stream("GET", f"/api/v1/trials/{trial_id}/logs", timeout=60) as response:
        assert response.status_code == 200
        entries = [json.loads(line)["result"] for line in response.iter_lines() if line]
    for entry in entries:
        assert entry["trialId"] == trial_id and entry["message"].endswith("\n")
        entry["message"] = entry["message"].rstrip("\n")
    return entries


def checkpoints(api: Api, experiment_id: int) -> list[dict[str, Any]]:
    response = api.get(f"/api/v1/experiments/{experiment_id}/checkpoints")
    assert response.status_code == 200, response.text
    determined_parses("v1GetExperimentCheckpointsResponse", response.json())
    found: list[dict[str, Any]] = response.json()["checkpoints"]
    return found


# ---- tests ------------------------------------------------------------------------------------


def test_single_trial_runs_reports_and_completes(
    cluster: tuple[Master, list[Agent]], tmp_path: Path
) -> None:
    master, _ = cluster
    api = Api(master)
    # A Determined-only field is accepted, and named in the trial's log with why it is inert.
    environment = {"image": "determinedai/pytorch-ngc:0.38.1", "environment_variables": {}}
    experiment_id = create(api, config(labels=["fake", "smoke"], environment=environment))
    done = wait_experiment(api, master, experiment_id, "STATE_COMPLETED")
    assert done["progress"] == 1.0
    assert done["numTrials"] == 1
    assert done["labels"] == ["fake", "smoke"]
    assert done["searcherType"] == "single"
    assert done["endTime"] is not None
    described = experiment(api, experiment_id)
    determined_parses("v1GetExperimentResponse", described)
    assert described["config"]["searcher"]["metric"] == "validation_loss"
    assert "searcher:" in described["experiment"]["originalConfig"]

    (trial,) = trials(api, experiment_id)
    assert trial["state"] == "STATE_COMPLETED"
    assert trial["totalBatchesProcessed"] == 3
    warned = [e for e in trial_logs(api, trial["id"]) if "environment.image" in e["message"]]
    assert [(e["level"], e["message"]) for e in warned] == [
        (
            "LOG_LEVEL_WARNING",
            "experiment config: environment.image is accepted but has no effect: tasks run as "
            "processes on the agents, not in containers, so there is no image to run",
        )
    ]
    assert trial["hparams"] == {"x": 1}
    assert trial["latestValidation"]["metrics"]["avgMetrics"] == {"validation_loss": 1 / 3}
    assert trial["searcherMetricValue"] == pytest.approx(1 / 3)
    assert done["bestTrialId"] == trial["id"]
    determined_parses("v1GetTrialResponse", api.get(f"/api/v1/trials/{trial['id']}").json())
    workloads = api.get(f"/api/v1/trials/{trial['id']}/workloads").json()
    determined_parses("v1GetTrialWorkloadsResponse", workloads)
    assert [next(iter(w)) for w in workloads["workloads"]] == [
        "training",
        "training",
        "training",
        "validation",
        "checkpoint",
    ]

    metrics = api.get(f"/api/v1/trials/{trial['id']}/metrics", params={"group": "training"})
    assert [m["stepsCompleted"] for m in metrics.json()["metrics"]] == [1, 2, 3]

    (checkpoint,) = checkpoints(api, experiment_id)
    assert checkpoint["state"] == "STATE_COMPLETED"
    assert checkpoint["metadata"]["steps_completed"] == 3
    assert checkpoint["training"]["searcherMetric"] == pytest.approx(1 / 3)
    # The master's default storage: shared_fs under its data dir.
    stored = tmp_path / "master-data" / "checkpoints" / checkpoint["uuid"] / "state.json"
    assert json.loads(stored.read_text())["steps"] == 3
    content = api.get(f"/api/v1/checkpoints/{checkpoint['uuid']}/content")
    assert content.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(content.content)) as tar:
        assert tar.getnames() == ["state.json"]
        member = tar.extractfile("state.json")
        assert member is not None and json.loads(member.read())["steps"] == 3
    one = api.get(f"/api/v1/checkpoints/{checkpoint['uuid']}")
    determined_parses("v1GetCheckpointResponse", one.json())
    assert api.get("/api/v1/checkpoints/nope/content").status_code == 404

    lines = [e["message"] for e in trial_logs(api, trial["id"])]
    assert 'run 1 latest=- steps=0 hparams={"x": 1}' in lines
    assert "searcher: done" in lines

    # Only the trial's own run may report for it: not a user's login token.
    refused = api.get(f"/api/v1/trials/{trial['id']}/searcher/operation")
    assert refused.status_code == 403
    assert "own token" in refused.json()["message"]

    listing = api.get("/api/v1/experiments", params={"limit": 10, "users": ["admin"]})
    assert listing.status_code == 200
    determined_parses("v1GetExperimentsResponse", listing.json())
    assert listing.json()["pagination"]["endIndex"] == listing.json()["pagination"]["total"] == 1
    by_label = api.get("/api/v1/experiments", params={"labels": ["smoke", "nothing"]})
    assert by_label.json()["experiments"] == []
    trial_page = api.get(f"/api/v1/experiments/{experiment_id}/trials")
    determined_parses("v1GetExperimentTrialsResponse", trial_page.json())


def test_bad_configs_are_refused_naming_the_field(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    api = Api(master)

    def refused(experiment: dict[str, Any], **body: Any) -> str:
        response = api.post(
            "/api/v1/experiments", json={"config": yaml.safe_dump(experiment), **body}
        )
        assert response.status_code == 400, response.text
        message: str = response.json()["message"]
        return message

    no_metric = config()
    del no_metric["searcher"]["metric"]
    assert "searcher.metric" in refused(no_metric)
    grid = config(
        searcher={"name": "grid"}, hyperparameters={"x": {"type": "int", "minval": 1, "maxval": 4}}
    )
    assert "hyperparameters.x" in refused(grid)
    assert "resources.resource_pool" in refused(config(resources={"resource_pool": "gpus"}))
    assert "max_restarts" in refused(config(max_restarts=-1))

    checked = api.post(
        "/api/v1/experiments",
        json={"config": yaml.safe_dump(config()), "validateOnly": True},
    )
    assert checked.status_code == 200, checked.text
    determined_parses("v1CreateExperimentResponse", checked.json())
    assert checked.json()["experiment"]["id"] == 0
    assert api.get("/api/v1/experiments").json()["experiments"] == []


def test_grid_runs_one_trial_per_point(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    api = Api(master)
    grid = config(
        searcher={"name": "grid", "max_length": {"batches": 2}},
        hyperparameters={"x": {"type": "categorical", "vals": [3, 1, 2]}},
    )
    experiment_id = create(api, grid)
    done = wait_experiment(api, master, experiment_id, "STATE_COMPLETED")
    found = trials(api, experiment_id)
    assert sorted(t["hparams"]["x"] for t in found) == [1, 2, 3]
    assert {t["state"] for t in found} == {"STATE_COMPLETED"}
    best = next(t for t in found if t["hparams"]["x"] == 1)
    assert done["bestTrialId"] == best["id"]
    assert done["bestTrialSearcherMetric"] == pytest.approx(0.5)
    second = api.get(f"/api/v1/experiments/{experiment_id}/trials", params={"limit": 2})
    assert second.json()["pagination"] == {
        "offset": 0,
        "limit": 2,
        "startIndex": 0,
        "endIndex": 2,
        "total": 3,
    }


def test_pause_checkpoints_and_activate_resumes(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    api = Api(master)
    slow = config(searcher={"max_length": {"batches": 12}}, env={"FAKE_STEP_SECONDS": "0.3"})
    experiment_id = create(api, slow, activate=False)
    assert experiment(api, experiment_id)["experiment"]["state"] == "STATE_PAUSED"
    (trial,) = trials(api, experiment_id)
    assert trial["state"] == "STATE_PAUSED" and trial["taskIds"] == []

    assert api.post(f"/api/v1/experiments/{experiment_id}/activate").status_code == 200
    wait_for(
        "the trial to train a little",
        lambda: trials(api, experiment_id)[0]["totalBatchesProcessed"] >= 2,
        60,
        logs=[master.log_path],
    )
    assert api.post(f"/api/v1/experiments/{experiment_id}/pause").status_code == 200
    wait_experiment(api, master, experiment_id, "STATE_PAUSED")

    def paused_trial() -> dict[str, Any] | None:
        current = trials(api, experiment_id)[0]
        task = api.task(current["taskId"])
        return current if task["endTime"] and current["latestCheckpoint"] else None

    paused = wait_for("the run to checkpoint and exit", paused_trial, 60, logs=[master.log_path])
    assert paused["state"] == "STATE_PAUSED"
    assert paused["restarts"] == 0
    saved = paused["latestCheckpoint"]
    # Paused: nothing runs, and activating twice is harmless.
    assert api.post(f"/api/v1/experiments/{experiment_id}/pause").status_code == 200

    assert api.post(f"/api/v1/experiments/{experiment_id}/activate").status_code == 200
    wait_experiment(api, master, experiment_id, "STATE_COMPLETED")
    (done,) = trials(api, experiment_id)
    assert done["state"] == "STATE_COMPLETED"
    assert done["restarts"] == 0
    assert len(done["taskIds"]) == 2
    assert done["totalBatchesProcessed"] == 12
    lines = [e["message"] for e in trial_logs(api, done["id"])]
    resumed = [line for line in lines if line.startswith("run 2 ")]
    assert resumed and resumed[0].startswith(f"run 2 latest={saved} ")
    assert any(line.startswith("preempted at ") for line in lines)
    # The resumed run went on from the checkpoint: no batch was trained twice.
    metrics = api.get(f"/api/v1/trials/{done['id']}/metrics", params={"group": "training"})
    steps = [m["stepsCompleted"] for m in metrics.json()["metrics"]]
    assert steps == sorted(set(steps)) and steps[-1] == 12
    paused_again = api.post(f"/api/v1/experiments/{experiment_id}/pause")
    assert paused_again.status_code == 409
    assert "STATE_COMPLETED" in paused_again.json()["message"]


def test_kill_cancels_the_experiment(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    api = Api(master)
    slow = config(searcher={"max_length": {"batches": 500}}, env={"FAKE_STEP_SECONDS": "0.2"})
    experiment_id = create(api, slow)
    wait_for(
        "the trial to run",
        lambda: trials(api, experiment_id)[0]["totalBatchesProcessed"] >= 1,
        60,
        logs=[master.log_path],
    )
    other = Api(master, "determined")
    forbidden = other.post(f"/api/v1/experiments/{experiment_id}/kill")
    assert forbidden.status_code == 403
    assert api.post(f"/api/v1/experiments/{experiment_id}/archive").status_code == 409

    assert api.post(f"/api/v1/experiments/{experiment_id}/kill").status_code == 200
    done = wait_experiment(api, master, experiment_id, "STATE_CANCELED", timeout=60)
    assert done["stateReason"] == "killed by admin"
    (trial,) = trials(api, experiment_id)
    assert trial["state"] == "STATE_CANCELED"
    assert api.task(trial["taskId"])["endTime"]

    assert api.post(f"/api/v1/experiments/{experiment_id}/archive").status_code == 200
    listed = api.get("/api/v1/experiments", params={"archived": "false"}).json()
    assert listed["experiments"] == []
    put = api.http.put(f"/api/v1/experiments/{experiment_id}/labels/keep")
    assert put.json() == {"labels": ["keep"]}


def test_crashing_trial_restarts_from_its_checkpoint_then_errors(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    crashing = config(
        searcher={"max_length": {"batches": 50}}, env={"FAKE_CRASH_AT": "2"}, max_restarts=1
    )
    experiment_id = create(api, crashing)
    done = wait_experiment(api, master, experiment_id, "STATE_ERROR")
    (trial,) = trials(api, experiment_id)
    assert trial["state"] == "STATE_ERROR"
    assert trial["restarts"] == 2
    assert "max_restarts (1)" in trial["stateReason"]
    assert "exited with code 3" in trial["stateReason"]
    assert f"trial {trial['id']} failed" in done["stateReason"]
    assert "max_restarts" in done["stateReason"]

    lines = [e["message"] for e in trial_logs(api, trial["id"])]
    first = [line.split()[1] for line in lines if line.startswith("checkpoint ")]
    assert len(first) == 2
    assert any(line.startswith(f"run 2 latest={first[0]} steps=2") for line in lines)
    assert any("restart 1 of 1" in line for line in lines)

    # Checkpoint GC: only the latest is kept (save_trial_latest: 1, nothing validated).
    def collected() -> bool:
        states = {c["uuid"]: c["state"] for c in checkpoints(api, experiment_id)}
        return states == {first[0]: "STATE_DELETED", first[1]: "STATE_COMPLETED"}

    wait_for("checkpoint GC", collected, 30, logs=[master.log_path])


def test_master_restart_mid_experiment_continues(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    api = Api(master)
    grid = config(
        searcher={"name": "grid", "max_length": {"batches": 10}, "max_concurrent_trials": 1},
        hyperparameters={"x": {"type": "categorical", "vals": [1, 2]}},
        env={"FAKE_STEP_SECONDS": "0.3"},
    )
    experiment_id = create(api, grid)
    wait_for(
        "the first trial to train a little",
        lambda: trials(api, experiment_id)[0]["totalBatchesProcessed"] >= 2,
        60,
        logs=[master.log_path],
    )
    master.restart_patiently()
    api = Api(master)
    wait_experiment(api, master, experiment_id, "STATE_COMPLETED", timeout=120)
    found = trials(api, experiment_id)
    assert len(found) == 2
    assert {t["state"] for t in found} == {"STATE_COMPLETED"}
    # The first trial's run outlived the master: it was re-attached, not restarted.
    assert len(found[0]["taskIds"]) == 1
    assert found[0]["restarts"] == 0
    assert found[0]["totalBatchesProcessed"] == 10


def test_unplaceable_trials_killed_trials_and_preemption_timeouts(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    # A trial bigger than the pool can ever be is refused at creation, saying what fits.
    body = {"config": yaml.safe_dump(config(resources={"slots_per_trial": 4}))}
    too_big = api.post("/api/v1/experiments", json={**body, "modelDefinition": model_definition()})
    assert too_big.status_code == 400
    assert too_big.json()["message"] == (
        "resources.slots_per_trial: each trial needs 4 slots, but resource pool 'default' can "
        "give at most 2, so the experiment could never run; what the pools can give: "
        "'default' 2"
    )
    assert api.get("/api/v1/experiments").json()["experiments"] == []

    # Killing one trial of a grid: the search goes on without it.
    grid = config(
        searcher={"name": "grid", "max_length": {"batches": 6}},
        hyperparameters={"x": {"type": "categorical", "vals": [1, 2]}},
        env={"FAKE_STEP_SECONDS": "0.3"},
    )
    search = create(api, grid)
    first = wait_for(
        "the first trial to run",
        lambda: (t := trials(api, search)[0])["totalBatchesProcessed"] >= 1 and t,
        60,
        logs=[master.log_path],
    )
    assert api.post(f"/api/v1/trials/{first['id']}/kill").status_code == 200
    wait_experiment(api, master, search, "STATE_COMPLETED")
    states = {t["id"]: t["state"] for t in trials(api, search)}
    assert states[first["id"]] == "STATE_CANCELED"
    assert sorted(states.values()) == ["STATE_CANCELED", "STATE_COMPLETED"]

    # A trial that ignores the preemption signal is killed at preemption_timeout; being
    # paused, it is no failure.
    stubborn = create(
        api,
        config(
            searcher={"max_length": {"batches": 500}},
            env={"FAKE_STEP_SECONDS": "0.2", "FAKE_IGNORE_PREEMPTION": "1"},
            preemption_timeout="1s",
        ),
    )
    wait_for(
        "the trial to run",
        lambda: trials(api, stubborn)[0]["totalBatchesProcessed"] >= 1,
        60,
        logs=[master.log_path],
    )
    assert api.post(f"/api/v1/experiments/{stubborn}/pause").status_code == 200
    wait_for(
        "the run to be killed",
        lambda: api.task(trials(api, stubborn)[0]["taskId"])["endTime"],
        30,
        logs=[master.log_path],
    )
    (paused,) = trials(api, stubborn)
    assert (paused["state"], paused["restarts"]) == ("STATE_PAUSED", 0)
    exit_reason = api.task(paused["taskId"])["allocations"][-1]["exitReason"]
    assert "preemption_timeout" in exit_reason
    assert api.post(f"/api/v1/experiments/{stubborn}/kill").status_code == 200
    wait_experiment(api, master, stubborn, "STATE_CANCELED")


def test_warm_start_from_another_experiments_checkpoint(
    cluster: tuple[Master, list[Agent]], tmp_path: Path
) -> None:
    """``searcher.source_trial_id``: checked at creation, resolved to that trial's latest
    checkpoint, which the new trial's first run reads from the source experiment's storage; a
    restart resumes from the trial's own checkpoint instead."""
    master, _ = cluster
    api = Api(master)
    storage = tmp_path / "source-storage"
    storage.mkdir()
    source_id = create(
        api, config(checkpoint_storage={"type": "shared_fs", "host_path": str(storage)})
    )
    wait_experiment(api, master, source_id, "STATE_COMPLETED")
    (source,) = trials(api, source_id)
    (source_checkpoint,) = checkpoints(api, source_id)
    uuid = source_checkpoint["uuid"]
    assert (storage / uuid / "state.json").exists()

    warm = config(
        searcher={"max_length": {"batches": 50}, "source_trial_id": source["id"]},
        env={"FAKE_CRASH_AT": "2"},
        max_restarts=1,
    )
    warm_id = create(api, warm)
    stored = experiment(api, warm_id)["config"]["searcher"]
    assert (stored["source_trial_id"], stored["source_checkpoint_uuid"]) == (source["id"], uuid)
    wait_experiment(api, master, warm_id, "STATE_ERROR")
    (trial,) = trials(api, warm_id)
    assert trial["restarts"] == 2

    lines = [e["message"] for e in trial_logs(api, trial["id"])]
    assert any(f"warm-starting from the model weights of checkpoint {uuid}" in x for x in lines)
    # Run 1 found the source's checkpoint (in the source's storage) and trained from 0; run 2
    # resumed from the trial's own checkpoint, without a warm start.
    warm_lines = [x for x in lines if x.startswith("warm start from ")]
    assert warm_lines == [f"warm start from {uuid}: trial {source['id']} at 3"]
    assert any(x.startswith("run 1 latest=- steps=0") for x in lines)
    own = [x.split()[1] for x in lines if x.startswith("checkpoint ")]
    assert any(x.startswith(f"run 2 latest={own[0]} steps=2") for x in lines)

    # From a checkpoint by uuid, through the stored config as is.
    by_uuid = config(searcher={"source_checkpoint_uuid": uuid})
    by_uuid_id = create(api, by_uuid)
    wait_experiment(api, master, by_uuid_id, "STATE_COMPLETED")
    (trial,) = trials(api, by_uuid_id)
    lines = [e["message"] for e in trial_logs(api, trial["id"])]
    assert f"warm start from {uuid}: trial {source['id']} at 3" in lines


def test_bad_warm_start_references_are_refused(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    api = Api(master)

    def refused(searcher: dict[str, Any], **body: Any) -> str:
        response = api.post(
            "/api/v1/experiments",
            json={"config": yaml.safe_dump(config(searcher=searcher)), **body},
        )
        assert response.status_code == 400, response.text
        message: str = response.json()["message"]
        return message

    both = refused({"source_trial_id": 1, "source_checkpoint_uuid": "x"})
    assert "searcher.source_trial_id" in both and "searcher.source_checkpoint_uuid" in both
    assert refused({"source_trial_id": 999}) == "searcher.source_trial_id: trial 999 not found"
    missing = refused({"source_checkpoint_uuid": "nope"}, validateOnly=True)
    assert missing == "searcher.source_checkpoint_uuid: checkpoint nope not found"

    # A trial that has not checkpointed yet (its experiment is paused from the start).
    paused = create(api, config(), activate=False)
    (trial,) = trials(api, paused)
    message = refused({"source_trial_id": trial["id"]})
    assert message == f"searcher.source_trial_id: trial {trial['id']} has no checkpoint"

    # A checkpoint the source experiment's policy deleted (save_trial_latest: 1).
    crashing = config(
        searcher={"max_length": {"batches": 50}}, env={"FAKE_CRASH_AT": "2"}, max_restarts=1
    )
    crashed = create(api, crashing)
    wait_experiment(api, master, crashed, "STATE_ERROR")

    def deleted() -> str | None:
        states = {c["uuid"]: c["state"] for c in checkpoints(api, crashed)}
        return next((u for u, s in states.items() if s == "STATE_DELETED"), None)

    gone = wait_for("checkpoint GC", deleted, 30, logs=[master.log_path])
    message = refused({"source_checkpoint_uuid": gone})
    assert message == (
        f"searcher.source_checkpoint_uuid: checkpoint {gone} is STATE_DELETED; only a "
        "STATE_COMPLETED checkpoint can be warm-started from"
    )
    assert len(api.get("/api/v1/experiments").json()["experiments"]) == 2
