"""Experiments with the real trainer on a real local cluster: the digits example end to end.

What the quickstart promises: `det experiment create const.yaml .` trains to the stated accuracy,
`adaptive.yaml` searches 16 trials and stops most early, `distributed.yaml` trains on two slots
(of one agent, and of two agents meeting through the master's rendezvous), pause/activate resume
exactly, checkpoints download through the master and directly, and a warm-started experiment
begins with its source trial's weights.
const.yaml runs as shipped; the others run shorter than their YAML, to keep the suite fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from cli.context import pack_context
from tests.integration.cluster import Agent, Api, Master, running_cluster, wait_for
from tests.integration.test_cli import Cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits_pytorch"
TERMINAL = {"STATE_COMPLETED", "STATE_CANCELED", "STATE_ERROR"}


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(
        tmp_path, db_url, agents=1, slots=2, tensorboard_dir=str(tmp_path / "tb")
    )


@pytest.fixture
def two_agents(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=2, slots=1)


def example_config(name: str, **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((EXAMPLE / name).read_text())
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return config


def create(api: Api, config: dict[str, Any], activate: bool = True) -> int:
    body = {
        "config": yaml.safe_dump(config),
        "modelDefinition": pack_context(EXAMPLE),
        "activate": activate,
    }
    response = api.post("/api/v1/experiments", json=body)
    assert response.status_code == 200, response.text
    experiment_id: int = response.json()["experiment"]["id"]
    return experiment_id


def experiment(api: Api, experiment_id: int) -> dict[str, Any]:
    found: dict[str, Any] = api.get(f"/api/v1/experiments/{experiment_id}").json()["experiment"]
    return found


def trials(api: Api, experiment_id: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api.get(
        f"/api/v1/experiments/{experiment_id}/trials", params={"limit": 0}
    ).json()["trials"]
    return found


def wait_ended(api: Api, experiment_id: int, timeout: float = 240) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        found = experiment(api, experiment_id)
        return found if found["state"] in TERMINAL else None

    result: dict[str, Any] = wait_for(
        f"experiment {experiment_id} to end", ended, timeout, logs=[api.master.log_path]
    )
    return result


def final_accuracy(trial: dict[str, Any]) -> float:
    metrics = trial["latestValidation"]["metrics"]["avgMetrics"]
    return float(metrics["accuracy"])


def test_const_trains_the_digits_example_to_its_accuracy(
    cluster: tuple[Master, list[Agent]], tmp_path: Path
) -> None:
    master, _ = cluster
    api = Api(master)
    experiment_id = create(api, example_config("const.yaml"))  # as shipped: 10 epochs
    ended = wait_ended(api, experiment_id)
    assert ended["state"] == "STATE_COMPLETED", ended.get("stateReason")
    (trial,) = trials(api, experiment_id)
    assert final_accuracy(trial) >= 0.96  # examples/digits_pytorch/README.md states 0.972
    assert trial["totalBatchesProcessed"] > 0 and trial["checkpointCount"] >= 1
    events = list((tmp_path / "tb" / "experiment" / str(experiment_id)).rglob("events.out.*"))
    assert events, "the trainer wrote no TensorBoard event files"

    # The checkpoint downloads through the master and directly, and loads.
    uuid = trial["latestCheckpoint"]
    det = Cli(tmp_path / "home", master.url)
    det.ok("user", "login", "admin", env={"DET_PASS": ""})
    for mode in ("master", "direct"):
        target = tmp_path / f"ckpt-{mode}"
        det.ok("checkpoint", "download", uuid, "--mode", mode, "-o", str(target))
        state = torch.load(target / "state.pt", weights_only=False)
        assert state["trainer"]["batches_trained"] == trial["totalBatchesProcessed"], mode
        assert state["models"] and state["models"][0], f"{mode}: no model weights"


def test_adaptive_search_runs_16_trials_and_stops_most_early(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    config = example_config(
        "adaptive.yaml",
        searcher__max_length={"batches": 32},
        searcher__max_concurrent_trials=2,
        scheduling_unit=8,
    )
    experiment_id = create(api, config)
    ended = wait_ended(api, experiment_id, timeout=420)
    assert ended["state"] == "STATE_COMPLETED", ended.get("stateReason")
    found = trials(api, experiment_id)
    assert len(found) == 16
    full = [t for t in found if t["totalBatchesProcessed"] >= 32]
    assert 1 <= len(full) < 16, [t["totalBatchesProcessed"] for t in found]
    assert all(t["state"] == "STATE_COMPLETED" for t in found)
    best = ended["bestTrialId"]
    best_trial = next(t for t in found if t["id"] == best)
    assert best_trial["bestCheckpoint"] is not None, "the best trial's checkpoint was not kept"


def test_distributed_trains_on_two_slots_like_one(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    short = {"epochs": 4}
    single = create(api, example_config("const.yaml", searcher__max_length=short))
    assert wait_ended(api, single)["state"] == "STATE_COMPLETED"
    distributed = create(api, example_config("distributed.yaml", searcher__max_length=short))
    assert wait_ended(api, distributed)["state"] == "STATE_COMPLETED"
    (one,) = trials(api, single)
    (two,) = trials(api, distributed)
    assert abs(final_accuracy(one) - final_accuracy(two)) <= 0.06
    logs = api.get(f"/api/v1/trials/{two['id']}/logs").text
    assert "[rank=1]" in logs, "no output from a second worker"


def test_distributed_trains_across_two_agents_like_one(
    two_agents: tuple[Master, list[Agent]],
) -> None:
    master, agents = two_agents
    api = Api(master)
    short = {"epochs": 4}  # fewer leave both runs early on a steep curve, where runs differ more
    single = create(api, example_config("const.yaml", searcher__max_length=short))
    assert wait_ended(api, single)["state"] == "STATE_COMPLETED"
    distributed = create(api, example_config("distributed.yaml", searcher__max_length=short))
    ended = wait_ended(api, distributed)
    assert ended["state"] == "STATE_COMPLETED", ended.get("stateReason")
    (one,) = trials(api, single)
    (two,) = trials(api, distributed)
    assert abs(final_accuracy(one) - final_accuracy(two)) <= 0.06

    # One slot of each agent; each agent ran its own rank.
    (allocation,) = api.task(two["taskId"])["allocations"]
    assert allocation["agents"] == sorted(agent.id for agent in agents)
    ranks_on = {
        rank: {e["agentId"] for e in api.logs(two["taskId"]) if e["message"].startswith(rank)}
        for rank in ("[rank=0]", "[rank=1]")
    }
    assert ranks_on == {"[rank=0]": {"agent-0"}, "[rank=1]": {"agent-1"}}, ranks_on

    # Only the chief reported and checkpointed: each step once, as often as the single run.
    def training_steps(trial_id: int) -> list[int]:
        path = f"/api/v1/trials/{trial_id}/metrics"
        found = api.get(path, params={"group": "training"}).json()["metrics"]
        return [m["stepsCompleted"] for m in found]

    assert training_steps(two["id"]) == training_steps(one["id"])
    assert two["checkpointCount"] == one["checkpointCount"]

    # The rendezvous takes only the allocation's own token, not even its owner's.
    body = {"agentId": "agent-0", "address": "127.0.0.1", "slots": 1}
    path = f"/api/v1/allocations/{allocation['allocationId']}/rendezvous"
    assert api.post(path, json=body).status_code == 403


def test_pause_and_activate_resume_from_the_checkpoint(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    experiment_id = create(
        api, example_config("const.yaml", searcher__max_length={"epochs": 6}, scheduling_unit=5)
    )

    def training() -> bool:
        found = trials(api, experiment_id)
        return bool(found) and found[0]["totalBatchesProcessed"] > 0

    wait_for("the trial to train", training, 120, logs=[master.log_path])
    assert api.post(f"/api/v1/experiments/{experiment_id}/pause").status_code == 200
    wait_for(
        "the experiment to pause",
        lambda: experiment(api, experiment_id)["state"] == "STATE_PAUSED",
        120,
    )
    # The trial checkpoints, then its process exits and gives back its slot.
    wait_for(
        "the paused trial to checkpoint and exit",
        lambda: (
            trials(api, experiment_id)[0]["latestCheckpoint"]
            and not api.get("/api/v1/tasks").json()["allocationIdToSummary"]
        ),
        120,
        logs=[master.log_path],
    )
    paused = trials(api, experiment_id)[0]
    assert paused["state"] == "STATE_PAUSED" and paused["restarts"] == 0
    assert api.post(f"/api/v1/experiments/{experiment_id}/activate").status_code == 200
    ended = wait_ended(api, experiment_id)
    assert ended["state"] == "STATE_COMPLETED", ended.get("stateReason")
    (trial,) = trials(api, experiment_id)
    assert trial["runId"] >= 2 and trial["restarts"] == 0
    assert final_accuracy(trial) >= 0.9


def test_our_det_experiment_create_and_describe(
    cluster: tuple[Master, list[Agent]], tmp_path: Path
) -> None:
    master, _ = cluster
    det = Cli(tmp_path / "home", master.url)
    det.ok("user", "login", "admin", env={"DET_PASS": ""})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(example_config("const.yaml", searcher__name="bogus")))
    refused = det("experiment", "create", str(bad), str(EXAMPLE))
    assert refused.returncode != 0 and "searcher" in refused.stderr
    config = tmp_path / "const.yaml"
    config.write_text(
        yaml.safe_dump(example_config("const.yaml", searcher__max_length={"epochs": 1}))
    )
    created = det.ok("experiment", "create", str(config), str(EXAMPLE))
    assert "Created experiment" in created
    experiment_id = created.split()[-1]
    assert det("experiment", "wait", experiment_id).returncode == 0
    described = det.ok("experiment", "describe", experiment_id)
    assert "COMPLETED" in described


def test_a_trial_preempted_by_higher_priority_work_resumes_and_completes(
    cluster: tuple[Master, list[Agent]],
) -> None:
    """The scheduler preempts a low-priority trial for a command that needs every slot: the
    trial checkpoints and exits, the command runs, then the trial resumes (no restart spent)."""
    master, _ = cluster
    api = Api(master)
    config = example_config(
        "const.yaml", searcher__max_length={"epochs": 4}, resources__priority=80, scheduling_unit=5
    )
    experiment_id = create(api, config)

    def training() -> bool:
        found = trials(api, experiment_id)
        return bool(found) and found[0]["totalBatchesProcessed"] > 0

    wait_for("the trial to train", training, 120, logs=[master.log_path])
    command_id = api.run("echo urgent", slots=2, priority=1)
    assert api.wait_ended(command_id, timeout=120)["allocations"][-1]["exitCode"] == 0
    ended = wait_ended(api, experiment_id)
    assert ended["state"] == "STATE_COMPLETED", ended.get("stateReason")
    (trial,) = trials(api, experiment_id)
    assert trial["runId"] >= 2 and trial["restarts"] == 0
    logs = api.get(f"/api/v1/trials/{trial['id']}/logs").text
    assert "preempted" in logs


def validation_losses(api: Api, trial_id: int) -> dict[int, float]:
    """Batches trained -> validation loss, for each validation of the trial."""
    found = api.get(f"/api/v1/trials/{trial_id}/metrics", params={"group": "validation"}).json()
    return {
        m["stepsCompleted"]: float(m["metrics"]["avgMetrics"]["validation_loss"])
        for m in found["metrics"]
    }


def test_warm_start_begins_with_the_source_trials_weights(
    cluster: tuple[Master, list[Agent]],
) -> None:
    """Determined's warm start: ``source_trial_id`` gives every trial of a new experiment the
    source trial's latest weights; the trainer starts counting from batch 0. The initial
    validation shows it: the new trial begins where the source ended, not where an untrained
    model begins."""
    master, _ = cluster
    api = Api(master)
    source_id = create(
        api,
        example_config(
            "const.yaml", searcher__max_length={"batches": 40}, perform_initial_validation=True
        ),
    )
    assert wait_ended(api, source_id)["state"] == "STATE_COMPLETED"
    (source,) = trials(api, source_id)
    source_losses = validation_losses(api, source["id"])
    untrained, trained = source_losses[0], source_losses[40]
    # 40 batches (under 2 epochs) take the loss from about ln 10 = 2.3 to about 0.8.
    assert trained < 0.6 * untrained, source_losses

    warm_id = create(
        api,
        example_config(
            "const.yaml",
            searcher__max_length={"batches": 1},
            searcher__source_trial_id=source["id"],
            perform_initial_validation=True,
        ),
    )
    ended = wait_ended(api, warm_id)
    assert ended["state"] == "STATE_COMPLETED", ended.get("stateReason")
    (trial,) = trials(api, warm_id)
    losses = validation_losses(api, trial["id"])
    assert sorted(losses) == [0, 1]  # counted from batch 0, one batch trained
    assert losses[0] == pytest.approx(trained, rel=1e-4)  # the source's final weights
    assert trial["totalBatchesProcessed"] == 1
    logs = api.get(f"/api/v1/trials/{trial['id']}/logs").text
    assert f"warm start: model weights from checkpoint {source['latestCheckpoint']}" in logs
