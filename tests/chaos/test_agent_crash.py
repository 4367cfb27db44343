"""An agent killed with SIGKILL, with its trial and every process under it (the machine is
gone), while a second agent idles: after ``agent_reconnect_wait`` the master fails the
allocation saying the agent was lost, and the trial resumes on the other agent from its last
checkpoint, losing at most one checkpoint period of work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.cluster import STEP_SECONDS, ChaosCluster, chaos_cluster, kill_tree

STEPS = 40
CHECKPOINT_EVERY = 6


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[ChaosCluster]:
    with chaos_cluster(tmp_path, db_url) as found:
        found.add_agent("agent-0")
        found.add_agent("agent-1")
        yield found


@pytest.mark.timeout(240)
def test_a_trial_resumes_elsewhere_from_its_last_checkpoint_when_its_agent_dies(
    cluster: ChaosCluster,
) -> None:
    trial_id = cluster.submit(STEPS, CHECKPOINT_EVERY, max_restarts=1)
    cluster.wait_step("1", 2 * CHECKPOINT_EVERY + 2)
    task_id = cluster.trial(trial_id)["taskId"]
    (first,) = cluster.allocations(task_id)
    (lost_id,) = first["agents"]
    lost = next(a for a in cluster.agents if a.id == lost_id)
    (other_id,) = {a.id for a in cluster.agents} - {lost_id}

    kill_tree(lost)
    journal = cluster.journal()
    (run,) = journal.lines
    last_step = max(journal.steps(run))
    last_checkpoint = max(journal.checkpoints().values())

    trial = cluster.wait_ended(trial_id, timeout=STEPS * STEP_SECONDS + 90)
    assert trial["state"] == "STATE_COMPLETED", trial["stateReason"]
    assert trial["restarts"] == 1
    assert trial["taskIds"][0] == task_id and len(trial["taskIds"]) == 2  # a task per run
    (first,) = cluster.allocations(task_id)
    (second,) = cluster.allocations(trial["taskIds"][1])
    assert f"agent '{lost_id}' lost its connection" in (first["exitReason"] or "")
    assert second["agents"] == [other_id]

    journal = cluster.journal()
    (resumed,) = set(journal.lines) - {run}
    assert journal.lines[resumed][0] == f"chaos resumed step {last_checkpoint} run {resumed}"
    assert journal.steps(resumed) == list(range(last_checkpoint + 1, STEPS + 1))
    assert last_step - last_checkpoint <= CHECKPOINT_EVERY, "lost more than a checkpoint period"
    assert cluster.stored_checkpoints(trial_id) == journal.checkpoints()
    stored = cluster.stored_steps(trial_id)
    assert stored == journal.steps(run)[: len(stored) - len(journal.steps(resumed))] + (
        journal.steps(resumed)
    ), "each run's reports stored once, in order"
