"""The Core API against the fake trial master: the REST bodies it sends, checkpoints in shared_fs
storage, preemption, the searcher's operations, and its errors."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import harness.core
from harness.core import InvalidMetricError, NotInTrialError
from harness.core.distributed import DistributedContext
from harness.core.env import TrialEnv
from harness.core.metrics import check_metrics, to_number
from tests.fake_trial_master import (
    ALLOCATION_ID,
    SESSION_TOKEN,
    FakeTrialMaster,
    experiment_config,
    running_fake_trial_master,
    trial_environ,
)


@pytest.fixture
def master() -> Iterator[FakeTrialMaster]:
    with running_fake_trial_master([4, 8], trial_id=5) as fake:
        yield fake


@pytest.fixture
def env(master: FakeTrialMaster, tmp_path: Path) -> dict[str, str]:
    return trial_environ(
        master,
        config=experiment_config(),
        hparams={"lr": 0.1, "group": {"depth": 2}},
        storage_dir=tmp_path / "checkpoints",
        experiment_id=9,
        trial_run_id=2,
        DET_TENSORBOARD_DIR=str(tmp_path / "tb"),
        DET_SLOT_IDS="0",
    )


# ---- environment ---------------------------------------------------------------------------


def test_init_outside_a_trial_names_what_is_missing() -> None:
    with pytest.raises(
        NotInTrialError, match=r"not running as a Flotilla trial: DET_MASTER.*DET_TRIAL_ID"
    ):
        harness.core.init(environ={"PATH": "/bin"})


def test_malformed_variables_are_named(env: dict[str, str]) -> None:
    with pytest.raises(NotInTrialError, match="DET_HPARAMS is not valid JSON"):
        TrialEnv.from_environ({**env, "DET_HPARAMS": "{nope"})
    with pytest.raises(NotInTrialError, match="DET_TRIAL_ID must be an integer"):
        TrialEnv.from_environ({**env, "DET_TRIAL_ID": "x"})


def test_info_and_hparams(env: dict[str, str], tmp_path: Path) -> None:
    with harness.core.init(environ=env) as core:
        assert core.hparams == {"lr": 0.1, "group": {"depth": 2}}
        info = core.info
        assert (info.experiment_id, info.trial_id, info.trial_run_id) == (9, 5, 2)
        assert info.latest_checkpoint is None
        assert info.allocation_id == ALLOCATION_ID
        assert info.config["searcher"]["metric"] == "validation_loss"
        assert info.tensorboard_dir == str(tmp_path / "tb")
        assert core.distributed.rank == 0 and core.distributed.size == 1
        assert core.searcher.max_length == 8 and core.searcher.unit == "batches"


# ---- metrics -------------------------------------------------------------------------------


def test_metrics_bodies_and_scalar_conversion(master: FakeTrialMaster, env: dict[str, str]) -> None:
    with harness.core.init(environ=env) as core:
        core.train.report_training_metrics(
            10, {"loss": torch.tensor(0.5), "acc": np.float32(0.25), "n": np.int64(3), "x": 2}
        )
        core.train.report_validation_metrics(10, {"validation_loss": 0.75})
        core.train.report_progress(1.7)
    (training,) = master.metrics("training")
    assert training == {
        "trialId": 5,
        "trialRunId": 2,
        "stepsCompleted": 10,
        "avgMetrics": {"loss": 0.5, "acc": 0.25, "n": 3, "x": 2},
    }
    assert master.posts("/metrics")[1]["group"] == "validation"
    assert master.metrics("validation")[0]["avgMetrics"] == {"validation_loss": 0.75}
    assert master.progress() == [1.0]  # clamped
    assert all(c.authorization == f"Bearer {SESSION_TOKEN}" for c in master.calls)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.nan, "'loss' is nan: metrics must be finite"),
        (float("inf"), "'loss' is inf"),
        (torch.tensor(math.nan), "'loss' is nan"),
        (torch.tensor([1.0, 2.0]), "'loss' is a Tensor with 2 elements"),
        (np.array([1.0, 2.0]), "'loss' is a ndarray with 2 elements"),
        ("0.5", "'loss' must be a number, got str"),
        (None, "'loss' must be a number, got NoneType"),
        (True, "'loss' is a bool"),
    ],
)
def test_invalid_metrics_are_refused_with_their_name(value: object, message: str) -> None:
    with pytest.raises(InvalidMetricError, match=message):
        to_number(value, "loss")


def test_invalid_metric_is_not_sent(master: FakeTrialMaster, env: dict[str, str]) -> None:
    with harness.core.init(environ=env) as core:
        with pytest.raises(InvalidMetricError, match="'loss' is nan"):
            core.train.report_training_metrics(1, {"loss": float("nan")})
        with pytest.raises(InvalidMetricError, match="steps_completed must be an integer"):
            core.train.report_training_metrics(1.5, {"loss": 1.0})  # type: ignore[arg-type]
        with pytest.raises(InvalidMetricError, match="must be a dict"):
            check_metrics([1.0])  # type: ignore[arg-type]
    assert master.metrics("training") == []


# ---- checkpoints ---------------------------------------------------------------------------


def test_store_path_uploads_and_reports(
    master: FakeTrialMaster, env: dict[str, str], tmp_path: Path
) -> None:
    with harness.core.init(environ=env) as core:
        with core.checkpoint.store_path({"steps_completed": 7, "note": "hi"}) as (path, uuid):
            (path / "weights.bin").write_bytes(b"12345")
            (path / "sub").mkdir()
            (path / "sub" / "opt.bin").write_bytes(b"xy")
        stored = tmp_path / "checkpoints" / uuid
        assert (stored / "weights.bin").read_bytes() == b"12345"
        assert json.loads((stored / "metadata.json").read_text())["steps_completed"] == 7
        # The registration is queued behind earlier reports; the master gets it in the background.
        master.wait_for(lambda: bool(master.checkpoints()))
        (reported,) = master.checkpoints()
        assert reported["uuid"] == uuid
        assert reported["taskId"] and reported["allocationId"] == ALLOCATION_ID
        assert reported["state"] == "STATE_COMPLETED"
        assert reported["reportTime"].endswith("Z")
        assert reported["metadata"] == {"steps_completed": 7, "note": "hi"}
        assert set(reported["resources"]) == {"weights.bin", "sub/opt.bin", "metadata.json"}
        assert reported["resources"]["weights.bin"] == 5

        with core.checkpoint.restore_path(uuid) as restored:
            assert (restored / "sub" / "opt.bin").read_bytes() == b"xy"
        core.checkpoint.download(uuid, tmp_path / "copy")
        assert (tmp_path / "copy" / "weights.bin").exists()
        assert core.checkpoint.get_metadata(uuid)["note"] == "hi"


def test_upload_and_failed_store_path(
    master: FakeTrialMaster, env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "mine"
    src.mkdir()
    (src / "model.pt").write_bytes(b"m")
    with harness.core.init(environ=env) as core:
        uuid = core.checkpoint.upload(src, {"steps_completed": 3})
        master.wait_for(lambda: bool(master.checkpoints()))
        assert master.checkpoints()[-1]["uuid"] == uuid
        assert (tmp_path / "checkpoints" / uuid / "model.pt").exists()

        with pytest.raises(ZeroDivisionError), core.checkpoint.store_path({"steps_completed": 4}):
            raise ZeroDivisionError
        core.train._api.flush()
        assert len(master.checkpoints()) == 1  # nothing reported for the failed one

        with (
            pytest.raises(ValueError, match="must hold steps_completed"),
            core.checkpoint.store_path({"epoch": 1}),
        ):
            pass


def test_warm_start_checkpoint_is_read_from_its_own_storage(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The warm-start checkpoint lives in another experiment's storage: core.checkpoint reads
    it there, and the trial's own checkpoints still go to the trial's storage."""
    source = tmp_path / "other-experiment"
    uuid = "2f6c3a53-8d1e-4a52-9d35-6b0f3e7d1c11"
    (source / uuid).mkdir(parents=True)
    (source / uuid / "weights.bin").write_bytes(b"w")
    (source / uuid / "metadata.json").write_text('{"steps_completed": 20}')
    warm = {
        **env,
        "DET_WARM_START_CHECKPOINT": uuid,
        "DET_WARM_START_STORAGE": json.dumps({"type": "shared_fs", "host_path": str(source)}),
    }
    with harness.core.init(environ=warm) as core:
        assert core.info.latest_checkpoint is None
        assert core.info.warm_start_checkpoint == uuid
        assert core.info.warm_start_storage == {"type": "shared_fs", "host_path": str(source)}
        with core.checkpoint.restore_path(uuid) as path:
            assert (path / "weights.bin").read_bytes() == b"w"
        assert core.checkpoint.get_metadata(uuid) == {"steps_completed": 20}
        core.checkpoint.download(uuid, tmp_path / "copy")
        mine = core.checkpoint.upload(tmp_path / "copy", {"steps_completed": 0})
        assert (tmp_path / "checkpoints" / mine / "weights.bin").exists()

    with harness.core.init(environ=env) as core:
        assert core.info.warm_start_checkpoint is None and core.info.warm_start_storage is None
    with pytest.raises(NotInTrialError, match="DET_WARM_START_STORAGE is not valid JSON"):
        TrialEnv.from_environ({**warm, "DET_WARM_START_STORAGE": "{nope"})


def test_only_the_chief_checkpoints(env: dict[str, str]) -> None:
    worker = DistributedContext(rank=1, size=2)
    with (
        harness.core.init(environ=env, distributed=worker) as core,
        pytest.raises(RuntimeError, match="only the chief"),
    ):
        core.checkpoint.upload(".", {"steps_completed": 1})


# ---- preemption ----------------------------------------------------------------------------


def test_preemption_is_cached_sticky_and_acknowledged(
    master: FakeTrialMaster, env: dict[str, str]
) -> None:
    with harness.core.init(environ=env) as core:
        assert core.preempt.should_preempt() is False
        master.preempt()
        deadline = time.monotonic() + 10
        while not core.preempt.should_preempt():
            assert time.monotonic() < deadline, "the preemption signal never arrived"
            time.sleep(0.01)
        assert core.preempt.should_preempt() is True
        assert master.acks() == 0  # not without being told
        core.preempt.acknowledge()
        core.preempt.acknowledge()
    assert master.acks() == 1


def test_preemption_long_poll_asks_for_a_timeout(master: FakeTrialMaster) -> None:
    from harness.client import MasterClient
    from harness.core.api import poll_preemption

    with MasterClient(master.url, token=SESSION_TOKEN) as client:
        started = time.monotonic()
        assert poll_preemption(client, ALLOCATION_ID, 1) is False
        assert time.monotonic() - started >= 0.9
        master.preempt()
        assert poll_preemption(client, ALLOCATION_ID, 60) is True


# ---- searcher ------------------------------------------------------------------------------


def test_operations_until_completed(master: FakeTrialMaster, env: dict[str, str]) -> None:
    lengths = []
    with harness.core.init(environ=env) as core:
        for op in core.searcher.operations():
            lengths.append(op.length)
            op.report_progress(op.length / 8)
            op.report_completed(np.float64(0.5) / op.length)
    assert lengths == [4, 8]
    assert master.completed_ops() == [(4, 0.125), (8, 0.0625)]
    assert master.progress() == [0.5, 1.0]


def test_an_operation_must_be_completed(env: dict[str, str]) -> None:
    with harness.core.init(environ=env) as core:
        ops = core.searcher.operations()
        next(ops)
        with pytest.raises(RuntimeError, match=r"call op.report_completed"):
            next(ops)


def test_waits_for_an_operation_and_stops_when_preempted_meanwhile(
    master: FakeTrialMaster, env: dict[str, str]
) -> None:
    master.hold = True
    with harness.core.init(environ=env) as core:
        ops = core.searcher.operations()
        timer = _after(0.3, master.preempt)
        assert list(ops) == []
        timer.join()
        assert core.preempt.should_preempt()


def test_waits_for_an_operation_until_one_comes(
    master: FakeTrialMaster, env: dict[str, str]
) -> None:
    master.hold = True
    master.ops = [3]

    def release() -> None:
        master.hold = False

    with harness.core.init(environ=env) as core:
        timer = _after(0.3, release)
        op = next(core.searcher.operations())
        assert op.length == 3
        timer.join()


def test_no_operation_when_the_searcher_is_done(
    master: FakeTrialMaster, env: dict[str, str]
) -> None:
    master.ops = []
    with harness.core.init(environ=env) as core:
        assert list(core.searcher.operations()) == []


def test_early_exit(master: FakeTrialMaster, env: dict[str, str]) -> None:
    with harness.core.init(environ=env) as core:
        core.train.report_early_exit(harness.core.EarlyExitReason.INVALID_HP)
    assert master.early_exits() == ["EXITED_REASON_INVALID_HP"]


def test_single_process_collectives() -> None:
    dist = DistributedContext.from_environ({})
    assert dist.is_chief and not dist.is_distributed
    assert dist.gather(3) == [3]
    assert dist.allgather("a") == ["a"]
    assert dist.broadcast({"x": 1}) == {"x": 1}
    assert dist.broadcast_flag(True) is True
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        DistributedContext.from_environ({"WORLD_SIZE": "2", "RANK": "0"})


def _after(seconds: float, action: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer
