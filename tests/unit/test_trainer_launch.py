"""``python -m harness.launch`` as the agent runs it, against the fake trial master: trainer and
shell entrypoints, two distributed workers on CPU (gloo) on one agent and on two agents meeting
through the master's rendezvous (and the rank arithmetic behind it), worker failures and signals,
and the Core API example including preemption and resuming."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fake_trial_master import (
    REPO,
    FakeTrialMaster,
    experiment_config,
    running_fake_trial_master,
    trial_environ,
)
from tests.unit.test_trainer import (
    HPARAMS,
    assert_same_training_state,
    saved_state,
    training_steps_at,
)

TINY = "tests.unit.test_trainer:TinyTrial"
CORE_EXAMPLE = REPO / "examples" / "core_api"


class Launch:
    """``python -m harness.launch`` in ``cwd`` with a trial's environment; output to files."""

    def __init__(self, env: dict[str, str], cwd: Path, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_file, self.err_file = out_dir / "stdout", out_dir / "stderr"
        # Like the agent: its interpreter first on PATH, so `python3 train.py` finds torch.
        env = {**env, "PATH": os.pathsep.join([os.path.dirname(sys.executable), env["PATH"]])}
        with self.out_file.open("w") as out, self.err_file.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "harness.launch"], env=env, cwd=cwd, stdout=out, stderr=err
            )

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"harness.launch did not exit in {timeout}s:\n{self.output}"
            ) from None

    @property
    def output(self) -> str:
        return self.out_file.read_text() + self.err_file.read_text()


def launch(
    master: FakeTrialMaster,
    tmp_path: Path,
    *,
    config: dict[str, Any],
    hparams: dict[str, Any] | None = None,
    cwd: Path | None = None,
    latest: str | None = None,
    slot_ids: str = "0",
    name: str = "run",
    **extra: str,
) -> Launch:
    env = trial_environ(
        master,
        config=config,
        hparams=HPARAMS if hparams is None else hparams,
        storage_dir=tmp_path / "checkpoints",
        latest_checkpoint=latest,
        DET_SLOT_IDS=slot_ids,
    )
    env.update(extra)
    return Launch(env, cwd or tmp_path, tmp_path / name)


def test_trainer_entrypoint(tmp_path: Path) -> None:
    with running_fake_trial_master([6]) as master:
        run = launch(master, tmp_path, config=experiment_config(entrypoint=TINY, scheduling_unit=3))
        assert run.wait() == 0, run.output
    assert [m["stepsCompleted"] for m in master.metrics("training")] == [3, 6]
    assert [c["metadata"]["steps_completed"] for c in master.checkpoints()] == [6]
    assert "trial finished: completed" in run.output


def test_two_workers_train_report_once_and_resume_exactly(tmp_path: Path) -> None:
    config = experiment_config(entrypoint=TINY, scheduling_unit=3, resources={"slots_per_trial": 2})
    with running_fake_trial_master([10]) as straight:
        run = launch(straight, tmp_path / "a", config=config, slot_ids="0,1")
        assert run.wait(timeout=80) == 0, run.output
    training = straight.metrics("training")
    assert [m["stepsCompleted"] for m in training] == [3, 6, 9, 10]  # once each: the chief
    assert all(m["avgMetrics"]["rank"] == 0.5 for m in training)  # averaged over ranks 0, 1
    assert len(straight.metrics("validation")) == 1 and len(straight.completed_ops()) == 1
    assert "[rank=0]" in run.output and "[rank=1]" in run.output
    final = saved_state(tmp_path / "a", straight.checkpoints()[-1]["uuid"])
    # 64 records, global batch 8 split into 4 per worker: 8 batches an epoch; 10 trained.
    assert [(w["epoch_idx"], w["batch_in_epoch"]) for w in final["workers"]] == [(1, 2), (1, 2)]

    with running_fake_trial_master([6]) as first:
        run = launch(first, tmp_path / "b", config=config, slot_ids="0,1", name="first")
        assert run.wait(timeout=80) == 0, run.output
    with running_fake_trial_master([10]) as second:
        uuid = first.latest_checkpoint()
        run = launch(second, tmp_path / "b", config=config, slot_ids="0,1", latest=uuid)
        assert run.wait(timeout=80) == 0, run.output
    assert [m["stepsCompleted"] for m in second.metrics("training")] == [9, 10]
    resumed = saved_state(tmp_path / "b", second.checkpoints()[-1]["uuid"])
    assert_same_training_state(final, resumed)
    assert second.completed_ops() == straight.completed_ops()


def test_two_agents_meet_through_the_master_and_train_as_one(tmp_path: Path) -> None:
    config = experiment_config(entrypoint=TINY, scheduling_unit=3, resources={"slots_per_trial": 2})
    with running_fake_trial_master([10]) as master:
        master.rendezvous_agents = {"agent-b": 1, "agent-a": 1}
        runs = {
            agent: launch(master, tmp_path, config=config, name=agent, DET_AGENT_ID=agent)
            for agent in ("agent-b", "agent-a")  # the later id first: ranks follow ids
        }
        for run in runs.values():
            assert run.wait(timeout=80) == 0, run.output
    a, b = runs["agent-a"].output, runs["agent-b"].output
    assert "[rank=0]" in a and "[rank=1]" not in a
    assert "[rank=1]" in b and "[rank=0]" not in b
    training = master.metrics("training")
    assert [m["stepsCompleted"] for m in training] == [3, 6, 9, 10]  # once each: the chief
    assert all(m["avgMetrics"]["rank"] == 0.5 for m in training)
    assert [c["metadata"]["steps_completed"] for c in master.checkpoints()] == [10]
    assert {body["agentId"] for body in master.posts("/rendezvous")} == {"agent-a", "agent-b"}


def test_rendezvous_refused_by_the_master_fails_the_launch(tmp_path: Path) -> None:
    config = experiment_config(entrypoint=TINY, resources={"slots_per_trial": 4})
    with running_fake_trial_master([6]) as master:
        run = launch(master, tmp_path, config=config, slot_ids="0,1", DET_AGENT_ID="a")
        assert run.wait() == 2
    assert "refused this agent's rendezvous" in run.output
    assert [c.path for c in master.calls] == [
        f"/api/v1/allocations/{master.allocation_id}/rendezvous"
    ]


# ---- rank arithmetic and the rendezvous loop -------------------------------------------------


def ready_answer(*members: tuple[str, int], port: int = 29500) -> dict[str, Any]:
    listed: list[dict[str, Any]] = []
    offset = 0
    for agent_id, slots in members:
        listed.append(
            {
                "agentId": agent_id,
                "address": f"10.0.0.{len(listed) + 1}",
                "slots": slots,
                "rankOffset": offset,
            }
        )
        offset += slots
    return {
        "ready": True,
        "members": listed,
        "missing": [],
        "masterAddr": "10.0.0.1",
        "masterPort": port,
    }


@pytest.mark.parametrize(
    ("agent_id", "expected_ranks"),
    [("a", [0, 1]), ("b", [2]), ("c", [3, 4, 5])],
)
def test_ranks_follow_the_members_rank_offsets(agent_id: str, expected_ranks: list[int]) -> None:
    from harness.launch import worker_environ
    from harness.rendezvous import layout_from_answer

    layout = layout_from_answer(ready_answer(("a", 2), ("b", 1), ("c", 3)), agent_id, 6)
    envs = [worker_environ({}, layout, i, None) for i in range(layout.local_size)]
    assert [int(e["RANK"]) for e in envs] == expected_ranks
    assert [int(e["LOCAL_RANK"]) for e in envs] == list(range(len(expected_ranks)))
    for env in envs:
        assert env["WORLD_SIZE"] == "6"
        assert env["LOCAL_WORLD_SIZE"] == str(len(expected_ranks))
        assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("10.0.0.1", "29500")


def test_single_agent_layout_is_all_local() -> None:
    from harness.launch import worker_environ
    from harness.rendezvous import single_agent_layout

    layout = single_agent_layout(3)
    envs = [worker_environ({}, layout, i, 2) for i in range(3)]
    assert [(e["RANK"], e["LOCAL_RANK"], e["WORLD_SIZE"]) for e in envs] == [
        ("0", "0", "3"),
        ("1", "1", "3"),
        ("2", "2", "3"),
    ]
    assert {e["MASTER_ADDR"] for e in envs} == {"127.0.0.1"}
    assert {e["OMP_NUM_THREADS"] for e in envs} == {"2"}


def test_an_answer_that_does_not_add_up_is_refused() -> None:
    from harness.rendezvous import RendezvousError, layout_from_answer

    with pytest.raises(RendezvousError, match="gathered 3 slots, but the trial has 4"):
        layout_from_answer(ready_answer(("a", 2), ("b", 1)), "a", 4)
    with pytest.raises(RendezvousError, match="does not list this agent 'z'"):
        layout_from_answer(ready_answer(("a", 2), ("b", 1)), "z", 3)


def test_rendezvous_repeats_until_ready_and_names_the_missing_agents() -> None:
    from harness.client import APIError, MasterUnreachableError
    from harness.rendezvous import RendezvousError, wait_until_ready

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def waiting(_: int) -> dict[str, Any]:
        now[0] += 30
        return {"ready": False, "members": [], "missing": ["agent-7", "agent-9"]}

    with pytest.raises(RendezvousError, match=r"waiting for agent\(s\) agent-7, agent-9"):
        wait_until_ready(waiting, 100, clock=lambda: now[0], sleep=sleep)

    answers: list[Any] = [
        MasterUnreachableError("m", "connection refused"),
        {"ready": False, "missing": ["b"]},
        ready_answer(("a", 1), ("b", 1)),
    ]
    asked: list[int] = []

    def eventually(timeout_seconds: int) -> dict[str, Any]:
        asked.append(timeout_seconds)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    assert wait_until_ready(eventually, 100, clock=lambda: now[0], sleep=sleep)["ready"]
    assert asked == [30, 30, 30]

    def refused(_: int) -> dict[str, Any]:
        raise APIError(403, "only allocation x's own token may report for it")

    with pytest.raises(RendezvousError, match="refused this agent's rendezvous: only"):
        wait_until_ready(refused, 100, clock=lambda: now[0], sleep=sleep)


def test_shell_entrypoint_gets_the_environment_and_its_exit_code_counts(tmp_path: Path) -> None:
    command = 'echo "$DET_TRIAL_ID $DET_HPARAMS" > seen.txt; exit 3'
    with running_fake_trial_master([6]) as master:
        run = launch(master, tmp_path, config=experiment_config(entrypoint=command))
        assert run.wait() == 3, run.output
    assert (tmp_path / "seen.txt").read_text().strip() == '1 {"global_batch_size": 8, ' + (
        '"learning_rate": 0.05, "dropout": 0.2}'
    )


def test_a_failed_worker_stops_the_others(tmp_path: Path) -> None:
    command = 'if [ "$RANK" = 1 ]; then exit 7; fi; exec sleep 60'
    config = experiment_config(entrypoint=command, resources={"slots_per_trial": 2})
    with running_fake_trial_master([6]) as master:
        started = time.monotonic()
        run = launch(master, tmp_path, config=config, slot_ids="0,1")
        assert run.wait(timeout=30) == 7, run.output
    assert time.monotonic() - started < 20
    assert "worker rank 1 exited with 7" in run.output


def test_sigterm_reaches_every_worker(tmp_path: Path) -> None:
    command = 'echo "ready $RANK"; exec sleep 60'
    config = experiment_config(entrypoint=command, resources={"slots_per_trial": 2})
    with running_fake_trial_master([6]) as master:
        run = launch(master, tmp_path, config=config, slot_ids="0,1")
        deadline = time.monotonic() + 20
        while run.output.count("ready") < 2:
            assert time.monotonic() < deadline, run.output
            time.sleep(0.05)
        run.process.send_signal(signal.SIGTERM)
        assert run.wait(timeout=20) == 128 + signal.SIGTERM


# ---- the Core API example ------------------------------------------------------------------

CORE_HPARAMS = {"learning_rate": 0.1, "batch_size": 32, "hidden_size": 64}


def core_config(batches: int = 100) -> dict[str, Any]:
    searcher = {"name": "single", "metric": "validation_loss", "max_length": {"batches": batches}}
    return experiment_config(entrypoint="python3 train.py", searcher=searcher, scheduling_unit=50)


def test_core_api_example_trains(tmp_path: Path) -> None:
    with running_fake_trial_master([100]) as master:
        run = launch(master, tmp_path, config=core_config(), hparams=CORE_HPARAMS, cwd=CORE_EXAMPLE)
        assert run.wait() == 0, run.output
    assert [m["stepsCompleted"] for m in master.metrics("training")] == [50, 100]
    (validation,) = master.metrics("validation")
    assert validation["avgMetrics"]["accuracy"] > 0.8
    assert master.completed_ops() == [(100, validation["avgMetrics"]["validation_loss"])]
    assert [c["metadata"]["steps_completed"] for c in master.checkpoints()] == [100]
    assert master.progress() == [0.5, 1.0]


def test_core_api_example_is_preempted_and_resumes(tmp_path: Path) -> None:
    # The report of batch 50, which makes the fake preempt, is sent in the background while
    # training goes on: 1000 batches leave the signal plenty of time to arrive mid-operation.
    with running_fake_trial_master([1000]) as master:
        master.preempt_when = training_steps_at(50)
        first = launch(
            master,
            tmp_path,
            config=core_config(1000),
            hparams=CORE_HPARAMS,
            cwd=CORE_EXAMPLE,
            name="first",
        )
        assert first.wait() == 0, first.output
    assert master.acks() == 1 and master.completed_ops() == []
    (checkpoint,) = master.checkpoints()
    stopped_at = checkpoint["metadata"]["steps_completed"]
    assert 50 <= stopped_at < 1000

    with running_fake_trial_master([1000]) as again:
        second = launch(
            again,
            tmp_path,
            config=core_config(1000),
            hparams=CORE_HPARAMS,
            cwd=CORE_EXAMPLE,
            latest=checkpoint["uuid"],
            name="second",
        )
        assert second.wait() == 0, second.output
    assert f"resumed from checkpoint {checkpoint['uuid']} at step {stopped_at}" in second.output
    steps = [m["stepsCompleted"] for m in again.metrics("training")]
    assert steps == list(range((stopped_at // 50 + 1) * 50, 1001, 50))
    assert [op for op, _ in again.completed_ops()] == [1000]


@pytest.mark.parametrize("entrypoint", ["model_def:DigitsTrial", "pkg.sub:Name"])
def test_class_entrypoints_are_recognized(entrypoint: str) -> None:
    from harness.launch import parse_entrypoint

    assert parse_entrypoint(entrypoint) is not None
    assert parse_entrypoint("python3 train.py --x a:b") is None
