"""The PyTorch trainer in this process against the fake trial master: what it reports, when it
validates and checkpoints, length units, preemption, errors, and that resuming from a
checkpoint computes exactly what an uninterrupted run computes.

``TinyTrial`` is also the trial of the launcher tests (``tests.unit.test_trainer:TinyTrial``).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import harness.core
import harness.pytorch
from harness.core import InvalidMetricError
from harness.experiment_config import Unit
from harness.pytorch import Outcome, Trainer
from harness.pytorch import trainer as trainer_module
from harness.pytorch.lengths import BatchMath
from harness.pytorch.tensorboard import MetricWriter
from tests.fake_trial_master import (
    Call,
    FakeTrialMaster,
    experiment_config,
    running_fake_trial_master,
    trial_environ,
)

RECORDS = 64  # training records; validation has 32
HPARAMS: dict[str, Any] = {"global_batch_size": 8, "learning_rate": 0.05, "dropout": 0.2}


Tensors = tuple[torch.Tensor, torch.Tensor]


def tiny_data() -> tuple[Tensors, Tensors]:
    """(training, validation) features and targets, the same every time."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(RECORDS + 32, 4, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 3.0, 0.5]) + 0.1 * torch.randn(
        RECORDS + 32, generator=generator
    )
    return (x[:RECORDS], y[:RECORDS]), (x[RECORDS:], y[RECORDS:])


class TinyTrial(harness.pytorch.Trial):
    """Regression on 4 features with dropout, a shuffled loader, an LR scheduler, and a loss
    scaled by numpy's and Python's generators: a resumed run matches only if every bit of
    state (weights, momentum, scheduler, all RNGs, data order) was restored."""

    def __init__(self, context: harness.pytorch.TrialContext) -> None:
        super().__init__(context)
        train, val = tiny_data()
        self.train_data, self.val_data = TensorDataset(*train), TensorDataset(*val)
        if context.hparams.get("invalid"):
            raise harness.pytorch.InvalidHP("this combination cannot work")
        self.model = context.wrap_model(
            nn.Sequential(
                nn.Linear(4, 16),
                nn.ReLU(),
                nn.Dropout(float(context.hparams["dropout"])),
                nn.Linear(16, 1),
            )
        )
        self.optimizer = context.wrap_optimizer(
            torch.optim.SGD(
                self.model.parameters(), lr=context.hparams["learning_rate"], momentum=0.9
            )
        )
        context.wrap_lr_scheduler(torch.optim.lr_scheduler.StepLR(self.optimizer, 5, 0.8), "batch")

    def build_training_data_loader(self) -> DataLoader[Any]:
        batch_size = self.context.get_per_slot_batch_size()
        return DataLoader(self.train_data, batch_size=batch_size, shuffle=True)

    def build_validation_data_loader(self) -> DataLoader[Any]:
        return DataLoader(self.val_data, batch_size=10)

    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        if self.context.hparams.get("await_preemption_at") == batch_idx:
            # Reports reach the master in the background while training goes on: wait here
            # for the preemption a report triggers rather than race it to the operation's end.
            deadline = time.monotonic() + 10
            while not self.context.core.preempt.peek() and time.monotonic() < deadline:
                time.sleep(0.005)
        x, y = batch
        scale = 1.0 + 0.1 * float(np.random.rand()) + 0.1 * random.random()
        loss = nn.functional.mse_loss(self.model(x).squeeze(1), y) * scale
        self.context.backward(loss)
        self.context.step_optimizer(self.optimizer)
        metrics: dict[str, Any] = {
            "loss": loss,
            "rank": float(self.context.distributed.rank),
            "epoch": epoch_idx,
        }
        if self.context.hparams.get("nan_at") == batch_idx:
            metrics["loss"] = float("nan")
        return metrics

    def evaluate_batch(self, batch: Any) -> dict[str, Any]:
        x, y = batch
        return {"validation_loss": nn.functional.mse_loss(self.model(x).squeeze(1), y)}


def run(
    tmp_path: Path,
    ops: list[int],
    *,
    hparams: dict[str, Any] | None = None,
    latest: str | None = None,
    preempt: Callable[[Call], bool] | None = None,
    run_id: int = 1,
    trial_class: type[harness.pytorch.Trial] | None = None,
    env: dict[str, str] | None = None,
    **config: Any,
) -> tuple[Outcome, FakeTrialMaster]:
    """One trial run of ``TinyTrial`` (or ``trial_class``) in this process, with ``env`` added
    to its variables; checkpoints in ``tmp_path/checkpoints``."""
    config.setdefault("scheduling_unit", 4)
    config.setdefault(
        "searcher", {"name": "single", "metric": "validation_loss", "max_length": {"batches": 24}}
    )
    with running_fake_trial_master(ops) as master:
        master.preempt_when = preempt
        environ = trial_environ(
            master,
            config=experiment_config(entrypoint="tests.unit.test_trainer:TinyTrial", **config),
            hparams=hparams or HPARAMS,
            storage_dir=tmp_path / "checkpoints",
            latest_checkpoint=latest,
            trial_run_id=run_id,
            DET_TENSORBOARD_DIR=str(tmp_path / "tensorboard"),
        )
        environ.update(env or {})
        with harness.core.init(environ=environ) as core:
            outcome = Trainer(trial_class or TinyTrial, core).run()
    return outcome, master


def saved_state(tmp_path: Path, uuid: str) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(
        tmp_path / "checkpoints" / uuid / "state.pt", weights_only=False
    )
    return state


def assert_same_training_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["trainer"]["batches_trained"] == b["trainer"]["batches_trained"]
    for name, tensor in a["models"][0].items():
        assert torch.equal(tensor, b["models"][0][name]), f"weights {name} differ"
    momentum_a = [s["momentum_buffer"] for s in a["optimizers"][0]["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in b["optimizers"][0]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b, strict=True))
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert torch.equal(a["workers"][0]["rng"]["torch"], b["workers"][0]["rng"]["torch"])


def training_steps_at(step: int) -> Callable[[Call], bool]:
    def predicate(call: Call) -> bool:
        body = call.body or {}
        return (
            call.path.endswith("/metrics")
            and body.get("group") == "training"
            and body["metrics"]["stepsCompleted"] >= step
        )

    return predicate


# ---- reports --------------------------------------------------------------------------------


def test_reports_metrics_validations_checkpoints_and_tensorboard(tmp_path: Path) -> None:
    outcome, master = run(tmp_path, [8, 16], min_validation_period={"batches": 6})
    assert outcome is Outcome.COMPLETED

    training = master.metrics("training")
    # Every scheduling_unit (4) batches, and before each validation (6, 8, 14, 16).
    assert [m["stepsCompleted"] for m in training] == [4, 6, 8, 12, 14, 16]
    assert all(m["trialId"] == 1 and m["trialRunId"] == 1 for m in training)
    assert set(training[0]["avgMetrics"]) == {"loss", "rank", "epoch"}
    assert training[0]["avgMetrics"]["loss"] > 0

    validation = master.metrics("validation")
    # min_validation_period counts from the last validation, which ends each operation.
    assert [m["stepsCompleted"] for m in validation] == [6, 8, 14, 16]
    by_step = {m["stepsCompleted"]: m["avgMetrics"]["validation_loss"] for m in validation}
    assert master.completed_ops() == [(8, by_step[8]), (16, by_step[16])]

    checkpoints = master.checkpoints()
    assert [c["metadata"]["steps_completed"] for c in checkpoints] == [8, 16]
    assert all(set(c["resources"]) == {"state.pt", "metadata.json"} for c in checkpoints)
    assert checkpoints[0]["metadata"]["framework"] == "torch"
    assert (tmp_path / "checkpoints" / checkpoints[-1]["uuid"] / "state.pt").is_file()

    progress = master.progress()
    assert progress[-1] == pytest.approx(16 / 24) and progress == sorted(progress)

    events = list((tmp_path / "tensorboard" / "experiment" / "1" / "trial" / "1").glob("events.*"))
    assert events, "no TensorBoard event file"


def test_progress_is_rate_limited_and_tensorboard_flushed_at_validations_and_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer_module, "PROGRESS_INTERVAL_SECONDS", 3600.0)
    flushes: list[int] = []
    flush = MetricWriter.flush

    def counted(writer: MetricWriter) -> None:
        flushes.append(1)
        flush(writer)

    monkeypatch.setattr(MetricWriter, "flush", counted)
    _, master = run(tmp_path, [8, 16], scheduling_unit=1, min_validation_period={"batches": 6})
    assert len(master.metrics("training")) == 16
    # The first report while training, then at the end of each operation: never a second later.
    assert master.progress() == pytest.approx([1 / 24, 8 / 24, 16 / 24])
    # Validations after 6, 8, 14 and 16 batches, checkpoints after 8 and 16; not every report.
    assert len(flushes) == 6


def test_validation_loss_is_weighted_by_records(tmp_path: Path) -> None:
    """32 validation records in batches of 10, 10, 10, 2: the mean over records."""
    _, master = run(tmp_path, [2])
    (validation,) = master.metrics("validation")
    state = saved_state(tmp_path, master.checkpoints()[-1]["uuid"])
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    model.load_state_dict(state["models"][0])
    model.eval()
    _, (x, y) = tiny_data()
    with torch.no_grad():
        expected = nn.functional.mse_loss(model(x).squeeze(1), y).item()
    assert validation["avgMetrics"]["validation_loss"] == pytest.approx(expected, rel=1e-5)


def test_searcher_completed_right_away(tmp_path: Path) -> None:
    outcome, master = run(tmp_path, [])
    assert outcome is Outcome.COMPLETED
    assert master.metrics("training") == [] and master.checkpoints() == []
    assert master.acks() == 0


def test_checkpoint_period(tmp_path: Path) -> None:
    _, master = run(tmp_path, [10], min_checkpoint_period={"batches": 4})
    assert [c["metadata"]["steps_completed"] for c in master.checkpoints()] == [4, 8, 10]


# ---- resuming -------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [8, 12], ids=["epoch-boundary", "mid-epoch"])
def test_resume_equals_uninterrupted(tmp_path: Path, first: int) -> None:
    _, straight = run(tmp_path / "a", [24])
    _, part1 = run(tmp_path / "b", [first])
    uuid = part1.latest_checkpoint()
    assert uuid is not None
    _, part2 = run(tmp_path / "b", [24], latest=uuid, run_id=2)

    assert part2.metrics("training")[0]["stepsCompleted"] > first
    assert part2.metrics("training")[0]["trialRunId"] == 2
    final_straight = saved_state(tmp_path / "a", straight.checkpoints()[-1]["uuid"])
    final_resumed = saved_state(tmp_path / "b", part2.checkpoints()[-1]["uuid"])
    assert_same_training_state(final_straight, final_resumed)
    # The same batches in the same order give the same validation.
    assert straight.completed_ops() == part2.completed_ops()


def test_preempted_mid_operation_checkpoints_acks_and_resumes_exactly(tmp_path: Path) -> None:
    _, straight = run(tmp_path / "a", [24])

    hparams = {**HPARAMS, "await_preemption_at": 8}
    outcome, first = run(tmp_path / "b", [24], hparams=hparams, preempt=training_steps_at(8))
    assert outcome is Outcome.PREEMPTED
    assert first.acks() == 1
    assert first.completed_ops() == []
    (checkpoint,) = first.checkpoints()
    stopped_at = checkpoint["metadata"]["steps_completed"]
    assert 8 <= stopped_at < 24
    assert first.metrics("training")[-1]["stepsCompleted"] == stopped_at  # flushed first
    ack = next(i for i, c in enumerate(first.calls) if c.path.endswith("/ack_preemption"))
    saved = next(i for i, c in enumerate(first.calls) if c.path == "/api/v1/checkpoints")
    assert saved < ack

    outcome, second = run(tmp_path / "b", [24], latest=checkpoint["uuid"], run_id=2)
    assert outcome is Outcome.COMPLETED
    assert_same_training_state(
        saved_state(tmp_path / "a", straight.checkpoints()[-1]["uuid"]),
        saved_state(tmp_path / "b", second.checkpoints()[-1]["uuid"]),
    )


def test_preempted_before_training_still_checkpoints(tmp_path: Path) -> None:
    with running_fake_trial_master([8]) as master:
        master.preempt()
        env = trial_environ(
            master,
            config=experiment_config(scheduling_unit=4),
            hparams=HPARAMS,
            storage_dir=tmp_path / "checkpoints",
        )
        with harness.core.init(environ=env) as core:
            assert Trainer(TinyTrial, core).run() is Outcome.PREEMPTED
    assert [c["metadata"]["steps_completed"] for c in master.checkpoints()] == [0]
    assert master.acks() == 1


# ---- warm start -----------------------------------------------------------------------------


class FirstStepSpy(TinyTrial):
    """TinyTrial noting its state when the first training step begins, i.e. after the trainer
    loaded whatever it loads and before any step changed it."""

    seen: dict[str, Any] = {}

    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        if not FirstStepSpy.seen:
            FirstStepSpy.seen.update(
                batch_idx=batch_idx,
                weights={k: v.clone() for k, v in self.model.state_dict().items()},
                optimizer=self.optimizer.state_dict(),
            )
        return super().train_batch(batch, epoch_idx, batch_idx)


def warm_start_env(storage: Path, uuid: str) -> dict[str, str]:
    return {
        "DET_WARM_START_CHECKPOINT": uuid,
        "DET_WARM_START_STORAGE": json.dumps({"type": "shared_fs", "host_path": str(storage)}),
    }


def test_warm_start_loads_only_the_model_weights(tmp_path: Path) -> None:
    _, source = run(tmp_path / "source", [16])
    uuid = source.latest_checkpoint()
    assert uuid is not None
    source_state = saved_state(tmp_path / "source", uuid)
    (source_validation,) = source.metrics("validation")

    # Another experiment's trial, with its own (empty) storage: the weights come from the
    # source's storage.
    FirstStepSpy.seen.clear()
    _, warm = run(
        tmp_path / "warm",
        [8],
        trial_class=FirstStepSpy,
        env=warm_start_env(tmp_path / "source" / "checkpoints", uuid),
        perform_initial_validation=True,
    )
    seen = FirstStepSpy.seen
    assert seen["batch_idx"] == 0
    for name, tensor in source_state["models"][0].items():
        assert torch.equal(seen["weights"][name], tensor), f"weights {name} not loaded"
    assert seen["optimizer"]["state"] == {}, "the optimizer's momentum was carried over"
    assert seen["optimizer"]["param_groups"][0]["lr"] == HPARAMS["learning_rate"]  # fresh LR

    # It validates the loaded model first, then counts its own batches from 0.
    initial, final = warm.metrics("validation")
    assert final["stepsCompleted"] == 8
    assert initial["stepsCompleted"] == 0
    assert initial["avgMetrics"]["validation_loss"] == pytest.approx(
        source_validation["avgMetrics"]["validation_loss"], rel=1e-6
    )
    assert [m["stepsCompleted"] for m in warm.metrics("training")] == [4, 8]
    (checkpoint,) = warm.checkpoints()
    assert checkpoint["metadata"]["steps_completed"] == 8
    assert saved_state(tmp_path / "warm", checkpoint["uuid"])["trainer"]["batches_trained"] == 8


def test_own_checkpoint_wins_over_the_warm_start(tmp_path: Path) -> None:
    _, source = run(tmp_path / "source", [4])
    _, first = run(tmp_path / "warm", [8])
    own = first.latest_checkpoint()
    source_uuid = source.latest_checkpoint()
    assert own is not None and source_uuid is not None
    _, resumed = run(
        tmp_path / "warm",
        [16],
        latest=own,
        run_id=2,
        env=warm_start_env(tmp_path / "source" / "checkpoints", source_uuid),
    )
    assert resumed.metrics("training")[0]["stepsCompleted"] == 12  # continued from batch 8


def test_warm_start_from_a_foreign_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    uuid = "0e9b7c7a-5a0c-4bb4-9a57-1f9d2a7a4a10"
    (tmp_path / "source" / uuid).mkdir(parents=True)
    (tmp_path / "source" / uuid / "model.bin").write_bytes(b"not ours")
    with pytest.raises(RuntimeError, match=r"no state\.pt: .* cannot warm-start from it"):
        run(tmp_path / "warm", [4], env=warm_start_env(tmp_path / "source", uuid))


# ---- units ----------------------------------------------------------------------------------


def test_batch_math() -> None:
    per_loader = BatchMath.for_data(global_batch_size=8, records_per_epoch=None, loader_batches=8)
    assert per_loader.to_batches(Unit.BATCHES, 5) == 5
    assert per_loader.to_batches(Unit.EPOCHS, 2) == 16
    assert per_loader.to_batches(Unit.RECORDS, 20) == 3  # rounded up
    configured = BatchMath.for_data(global_batch_size=8, records_per_epoch=40, loader_batches=8)
    assert configured.to_batches("epochs", 1) == 5
    unknown = BatchMath.for_data(global_batch_size=8, records_per_epoch=None, loader_batches=None)
    with pytest.raises(ValueError, match="set records_per_epoch"):
        unknown.to_batches("epochs", 1)


def test_epoch_lengths(tmp_path: Path) -> None:
    searcher = {"name": "single", "metric": "validation_loss", "max_length": {"epochs": 2}}
    _, master = run(tmp_path, [1, 2], searcher=searcher, min_validation_period={"epochs": 1})
    assert [c["metadata"]["steps_completed"] for c in master.checkpoints()] == [8, 16]
    assert master.completed_ops()[0][0] == 1  # reported in the searcher's unit
    assert [m["stepsCompleted"] for m in master.metrics("validation")] == [8, 16]
    epochs = [m["avgMetrics"]["epoch"] for m in master.metrics("training")]
    assert epochs == [0, 0, 1, 1]  # batches 1-4, 5-8 in epoch 0; 9-16 in epoch 1


def test_record_lengths_and_records_per_epoch(tmp_path: Path) -> None:
    searcher = {"name": "single", "metric": "validation_loss", "max_length": {"records": 100}}
    _, master = run(
        tmp_path,
        [20, 100],
        searcher=searcher,
        records_per_epoch=40,
        min_validation_period={"epochs": 1},
    )
    # 20 records -> 3 batches of 8; 100 -> 13; an "epoch" of 40 records -> 5 batches.
    assert [c["metadata"]["steps_completed"] for c in master.checkpoints()] == [3, 13]
    assert [m["stepsCompleted"] for m in master.metrics("validation")] == [3, 8, 13]


# ---- errors ---------------------------------------------------------------------------------


def test_invalid_training_metric_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidMetricError, match="metric 'loss' is nan"):
        run(tmp_path, [8], hparams={**HPARAMS, "nan_at": 2})


def test_missing_searcher_metric(tmp_path: Path) -> None:
    searcher = {"name": "single", "metric": "accuracy", "max_length": {"batches": 4}}
    with pytest.raises(RuntimeError, match=r"searcher metric 'accuracy' .* validation_loss"):
        run(tmp_path, [4], searcher=searcher)


def test_invalid_hp_is_an_early_exit(tmp_path: Path) -> None:
    outcome, master = run(tmp_path, [8], hparams={**HPARAMS, "invalid": True})
    assert outcome is Outcome.INVALID_HP
    assert master.early_exits() == ["EXITED_REASON_INVALID_HP"]


def test_digits_example_trains(tmp_path: Path) -> None:
    """The example's trial, a few batches: it learns (the README has the full run)."""
    from harness.launch import load_trial_class

    digits = load_trial_class("model_def", "DigitsTrial", str(EXAMPLES / "digits_pytorch"))
    searcher = {"name": "single", "metric": "validation_loss", "max_length": {"batches": 30}}
    with running_fake_trial_master([30]) as master:
        env = trial_environ(
            master,
            config=experiment_config(searcher=searcher, scheduling_unit=10),
            hparams={
                "learning_rate": 1.0,
                "global_batch_size": 64,
                "n_filters1": 8,
                "n_filters2": 16,
                "dropout1": 0.25,
                "dropout2": 0.5,
            },
            storage_dir=tmp_path / "checkpoints",
        )
        with harness.core.init(environ=env) as core:
            assert Trainer(digits, core).run() is Outcome.COMPLETED
    (validation,) = master.metrics("validation")
    assert validation["avgMetrics"]["accuracy"] > 0.5


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
