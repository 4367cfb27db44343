"""Model code written for Determined (tests/determined_code) runs unchanged through
``python -m harness.launch`` against the fake trial master, and the ``determined`` layer itself:
``get_cluster_info()``, and errors that name what it does not implement."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from harness import compat
from tests.fake_trial_master import (
    REPO,
    experiment_config,
    running_fake_trial_master,
    trial_environ,
)
from tests.unit.test_trainer import training_steps_at
from tests.unit.test_trainer_launch import launch

CODE = REPO / "tests" / "determined_code"
CORE = CODE / "core_api"


def stage_config(
    entrypoint: str, max_length: int = 100, slots: int = 1, metric: str = "x"
) -> dict[str, Any]:
    searcher = {"name": "single", "metric": metric, "max_length": max_length}
    return experiment_config(
        entrypoint=entrypoint, searcher=searcher, resources={"slots_per_trial": slots}
    )


# ---- the Core API tutorial's stages ----------------------------------------------------------


def test_stage_0_a_plain_script_runs(tmp_path: Path) -> None:
    with running_fake_trial_master([1]) as master:
        run = launch(master, tmp_path, config=stage_config("python3 0_start.py"), cwd=CORE)
        assert run.wait() == 0, run.output
    assert "x is now 100" in run.output


def test_stage_1_reports_metrics_and_logs_in_determineds_format(tmp_path: Path) -> None:
    with running_fake_trial_master([1]) as master:
        run = launch(master, tmp_path, config=stage_config("python3 1_metrics.py"), cwd=CORE)
        assert run.wait() == 0, run.output
    assert [m["stepsCompleted"] for m in master.metrics("training")] == list(range(10, 101, 10))
    (validation,) = master.metrics("validation")
    assert validation["avgMetrics"] == {"x": 100}
    assert master.progress()[-1] == 1.0
    # It never asked for searcher operations (as Determined 0.38 allows): leaving init()'s block
    # completed the master's with the searcher metric of its last validation.
    assert master.completed_ops() == [(1, 100.0)]
    assert "WARNING: [" in run.output and "] root: warning-level message" in run.output


def test_stage_2_is_preempted_acknowledges_and_resumes_from_its_checkpoint(
    tmp_path: Path,
) -> None:
    config = stage_config("python3 2_checkpoints.py")
    with running_fake_trial_master([1]) as master:
        master.preempt_when = training_steps_at(30)
        first = launch(master, tmp_path, config=config, cwd=CORE, name="first")
        assert first.wait() == 0, first.output
    assert master.acks() == 1  # should_preempt() acknowledged by itself, as in Determined
    assert master.metrics("validation") == [] and master.completed_ops() == []
    checkpoint = master.checkpoints()[-1]
    stopped_at = checkpoint["metadata"]["steps_completed"]
    assert 30 <= stopped_at < 100

    with running_fake_trial_master([1]) as again:
        second = launch(
            again, tmp_path, config=config, cwd=CORE, latest=checkpoint["uuid"], name="second"
        )
        assert second.wait() == 0, second.output
    steps = [m["stepsCompleted"] for m in again.metrics("training")]
    assert steps == list(range(stopped_at + 10, 101, 10))
    (validation,) = again.metrics("validation")
    assert validation["avgMetrics"] == {"x": 100}  # resumed with the checkpoint's x
    assert again.completed_ops() == [(1, 100.0)]


def test_stage_3_trains_to_each_searcher_operation(tmp_path: Path) -> None:
    with running_fake_trial_master([20, 40]) as master:
        run = launch(
            master,
            tmp_path,
            config=stage_config("python3 3_hpsearch.py"),
            hparams={"increment_by": 3},
            cwd=CORE,
        )
        assert run.wait() == 0, run.output
    assert master.completed_ops() == [(20, 60.0), (40, 120.0)]
    # op.report_progress(batches) is sent as the fraction of searcher.max_length (100).
    assert master.progress() == [0.1, 0.2, 0.3, 0.4]
    assert [c["metadata"]["steps_completed"] for c in master.checkpoints()] == [10, 20, 30, 40]


def test_stage_4_two_workers_from_torch_distributed(tmp_path: Path) -> None:
    with running_fake_trial_master([20]) as master:
        run = launch(
            master,
            tmp_path,
            config=stage_config(
                "python3 -m determined.launch.torch_distributed python3 4_distributed.py",
                slots=2,
            ),
            hparams={"increment_by": 3},
            cwd=CORE,
            slot_ids="0,1",
        )
        assert run.wait(timeout=90) == 0, run.output
    assert [m["stepsCompleted"] for m in master.metrics("training")] == [10, 20]  # chief only
    assert master.completed_ops() == [(20, 120.0)]  # 20 batches of 3 + 3: both workers add
    assert "[rank=0]" in run.output and "[rank=1]" not in run.output  # it logs on the chief


def test_torch_distributed_launcher_gives_one_slot_a_world_of_one(tmp_path: Path) -> None:
    with running_fake_trial_master([10]) as master:
        run = launch(
            master,
            tmp_path,
            config=stage_config(
                "python3 -m determined.launch.torch_distributed -- python3 4_distributed.py"
            ),
            hparams={"increment_by": 2},
            cwd=CORE,
        )
        assert run.wait(timeout=60) == 0, run.output
    assert master.completed_ops() == [(10, 20.0)]


def test_invalid_hp_out_of_init_is_an_early_exit(tmp_path: Path) -> None:
    script = tmp_path / "code" / "invalid.py"
    script.parent.mkdir()
    script.write_text(
        "import determined as det\n"
        "with det.core.init() as core_context:\n"
        "    raise det.InvalidHP('too big to fit')\n"
    )
    with running_fake_trial_master([1]) as master:
        run = launch(master, tmp_path, config=stage_config("python3 invalid.py"), cwd=script.parent)
        assert run.wait() == 0, run.output
    assert master.early_exits() == ["EXITED_REASON_INVALID_HP"]


# ---- PyTorchTrial ----------------------------------------------------------------------------

DIGITS_HPARAMS = {
    "learning_rate": 1.0,
    "global_batch_size": 64,
    "n_filters1": 8,
    "n_filters2": 8,
    "dropout1": 0.25,
    "dropout2": 0.5,
}


def test_pytorch_trial_trains_with_the_flotilla_trainer(tmp_path: Path) -> None:
    searcher = {"name": "single", "metric": "validation_loss", "max_length": {"batches": 46}}
    config = experiment_config(entrypoint="model_def:DigitsTrial", searcher=searcher)
    with running_fake_trial_master([46]) as master:
        run = launch(
            master, tmp_path, config=config, hparams=DIGITS_HPARAMS, cwd=CODE / "digits_pytorch"
        )
        assert run.wait(timeout=120) == 0, run.output
    (validation,) = master.metrics("validation")
    assert validation["avgMetrics"]["accuracy"] > 0.3, validation  # it learns: chance is 0.1
    assert all("loss" in m["avgMetrics"] for m in master.metrics("training"))
    assert [c["metadata"]["steps_completed"] for c in master.checkpoints()] == [46]


def test_pytorch_trial_on_two_workers_through_determineds_launcher(tmp_path: Path) -> None:
    searcher = {"name": "single", "metric": "validation_loss", "max_length": {"batches": 12}}
    config = experiment_config(
        entrypoint="python3 -m determined.launch.torch_distributed --trial model_def:DigitsTrial",
        searcher=searcher,
        resources={"slots_per_trial": 2},
    )
    with running_fake_trial_master([12]) as master:
        run = launch(
            master,
            tmp_path,
            config=config,
            hparams=DIGITS_HPARAMS,
            cwd=CODE / "digits_pytorch",
            slot_ids="0,1",
        )
        assert run.wait(timeout=120) == 0, run.output
    assert len(master.metrics("validation")) == 1 and len(master.completed_ops()) == 1
    assert "[rank=1]" in run.output


# ---- the layer in this process ---------------------------------------------------------------


@pytest.fixture
def det(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``import determined`` as a task sees it, removed again afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    compat.enable()
    import determined

    yield determined
    for name in [n for n in sys.modules if n == "determined" or n.startswith("determined.")]:
        del sys.modules[name]
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "MissingModuleFinder"]


def test_enable_puts_the_layer_first_on_the_import_path() -> None:
    environ = {"PYTHONPATH": "/elsewhere"}
    compat.enable(environ)
    compat.enable(environ)  # idempotent
    assert environ["PYTHONPATH"].split(":") == [compat.IMPORT_PATH, "/elsewhere"]
    assert sys.path[0] == compat.IMPORT_PATH
    sys.path.remove(compat.IMPORT_PATH)


def test_what_is_not_implemented_says_so_by_name(det: ModuleType) -> None:
    with pytest.raises(NotImplementedError, match=r"determined\.keras is not implemented"):
        det.keras  # noqa: B018
    with pytest.raises(NotImplementedError, match=r"determined\.experimental is not"):
        from determined import experimental  # noqa: F401
    with pytest.raises(ModuleNotFoundError, match=r"determined\.horovod is not implemented"):
        import determined.horovod  # noqa: F401
    with pytest.raises(NotImplementedError, match=r"determined\.pytorch\.deepspeed is not"):
        from determined.pytorch import deepspeed  # noqa: F401
    assert not hasattr(det, "__wrapped__")  # probes of private names stay AttributeErrors


def test_cluster_info_outside_a_task_is_none(det: ModuleType) -> None:
    assert det.get_cluster_info({}) is None


def test_cluster_info_of_a_trial(det: ModuleType, tmp_path: Path) -> None:
    with running_fake_trial_master([1]) as master:
        config = stage_config("python3 x.py", slots=2)
        env = trial_environ(
            master,
            config=config,
            hparams={"increment_by": 4},
            storage_dir=tmp_path,
            latest_checkpoint="abc",
            experiment_id=7,
            DET_SLOT_IDS="0,1",
            DET_AGENT_ID="agent-1",
        )
    info = det.get_cluster_info(env)
    assert (info.trial.trial_id, info.trial.experiment_id) == (master.trial_id, 7)
    assert info.trial.hparams == {"increment_by": 4}
    assert info.latest_checkpoint == "abc" and info.task_type == "TRIAL"
    assert (info.slot_ids, info.agent_id, info.container_rank) == ([0, 1], "agent-1", 0)
    assert info.trial._config == json.loads(env["DET_EXPERIMENT_CONFIG"])
    info_spread = det.get_cluster_info({**env, "DET_SLOT_IDS": "0"})  # 1 of 2 slots here
    with pytest.raises(NotImplementedError, match="container_addrs for a trial spanning"):
        info_spread.container_addrs  # noqa: B018


def test_a_script_without_its_searcher_metric_leaves_the_operations_open(
    tmp_path: Path,
) -> None:
    config = stage_config("python3 1_metrics.py", metric="accuracy")
    with running_fake_trial_master([1]) as master:
        run = launch(master, tmp_path, config=config, cwd=CORE)
        assert run.wait() == 0, run.output
    assert master.completed_ops() == []
    assert "no validation reported searcher.metric 'accuracy'" in run.output


def test_core_init_refuses_a_storage_of_its_own(det: ModuleType) -> None:
    with pytest.raises(NotImplementedError, match=r"core\.init\(checkpoint_storage=\.\.\.\)"):
        det.core.init(checkpoint_storage="s3://bucket/prefix")
