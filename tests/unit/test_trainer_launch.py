"""``python -m harness.launch`` as the agent runs it, against the fake trial master: trainer and
shell entrypoints, two distributed workers on CPU (gloo), worker failures and signals, and the
Core API example including preemption and resuming."""

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
) -> Launch:
    env = trial_environ(
        master,
        config=config,
        hparams=HPARAMS if hparams is None else hparams,
        storage_dir=tmp_path / "checkpoints",
        latest_checkpoint=latest,
        DET_SLOT_IDS=slot_ids,
    )
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


def test_slots_on_several_agents_are_refused(tmp_path: Path) -> None:
    config = experiment_config(entrypoint=TINY, resources={"slots_per_trial": 4})
    with running_fake_trial_master([6]) as master:
        run = launch(master, tmp_path, config=config, slot_ids="0,1")
        assert run.wait() == 2
    assert "spread over several agents" in run.output
    assert master.calls == []


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


def core_config() -> dict[str, Any]:
    searcher = {"name": "single", "metric": "validation_loss", "max_length": {"batches": 100}}
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
    with running_fake_trial_master([100]) as master:
        master.preempt_when = training_steps_at(50)
        first = launch(
            master,
            tmp_path,
            config=core_config(),
            hparams=CORE_HPARAMS,
            cwd=CORE_EXAMPLE,
            name="first",
        )
        assert first.wait() == 0, first.output
    assert master.acks() == 1 and master.completed_ops() == []
    (checkpoint,) = master.checkpoints()
    stopped_at = checkpoint["metadata"]["steps_completed"]
    assert 50 <= stopped_at < 100

    with running_fake_trial_master([100]) as again:
        second = launch(
            again,
            tmp_path,
            config=core_config(),
            hparams=CORE_HPARAMS,
            cwd=CORE_EXAMPLE,
            latest=checkpoint["uuid"],
            name="second",
        )
        assert second.wait() == 0, second.output
    assert f"resumed from checkpoint {checkpoint['uuid']} at step {stopped_at}" in second.output
    assert [m["stepsCompleted"] for m in again.metrics("training")] == [100]
    assert [op for op, _ in again.completed_ops()] == [100]


@pytest.mark.parametrize("entrypoint", ["model_def:DigitsTrial", "pkg.sub:Name"])
def test_class_entrypoints_are_recognized(entrypoint: str) -> None:
    from harness.launch import parse_entrypoint

    assert parse_entrypoint(entrypoint) is not None
    assert parse_entrypoint("python3 train.py --x a:b") is None
