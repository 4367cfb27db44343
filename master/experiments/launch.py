"""What a trial run is given on an agent (docs/design/experiments.md, "A trial on an agent")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.experiment_config import ExperimentConfig
from master.tasks import TaskSpec

TASK_TYPE = "TRIAL"
TRIAL_ARGV = ["python", "-m", "harness.launch"]


@dataclass(frozen=True)
class RunRequest:
    experiment_id: int
    trial_id: int
    run_id: int
    owner_id: int
    hparams: dict[str, Any]
    latest_checkpoint: str | None
    checkpoint_storage: dict[str, Any]
    files: dict[str, str]
    # Model weights to start from (searcher.source_*) and the storage holding them; only for a
    # trial without a checkpoint of its own.
    warm_start_checkpoint: str | None = None
    warm_start_storage: dict[str, Any] | None = None


def trial_spec(config: ExperimentConfig, run: RunRequest, tensorboard_dir: Path) -> TaskSpec:
    """The TRIAL task of one run: ``python -m harness.launch`` with the contract's variables.

    The config's own ``environment_variables`` come first, so nothing there can masquerade as
    the master's ``DET_*`` values."""
    env = {
        **config.environment.environment_variables,
        "DET_EXPERIMENT_ID": str(run.experiment_id),
        "DET_TRIAL_ID": str(run.trial_id),
        "DET_TRIAL_RUN_ID": str(run.run_id),
        "DET_HPARAMS": json.dumps(run.hparams),
        "DET_EXPERIMENT_CONFIG": json.dumps(config.model_dump(mode="json")),
        "DET_LATEST_CHECKPOINT": run.latest_checkpoint or "",
        "DET_CHECKPOINT_STORAGE": json.dumps(run.checkpoint_storage),
        "DET_WARM_START_CHECKPOINT": run.warm_start_checkpoint or "",
        "DET_WARM_START_STORAGE": (
            json.dumps(run.warm_start_storage) if run.warm_start_storage is not None else ""
        ),
        "DET_TENSORBOARD_DIR": str(tensorboard_dir),
    }
    return TaskSpec(
        task_type=TASK_TYPE,
        owner_id=run.owner_id,
        description=f"Trial {run.trial_id} (Experiment {run.experiment_id}), run {run.run_id}",
        resource_pool=config.resources.resource_pool,
        slots=config.resources.slots_per_trial,
        priority=config.resources.priority,
        argv=list(TRIAL_ARGV),
        env=env,
        files=run.files,
        bind_mounts=[
            {"host_path": m.host_path, "container_path": m.container_path}
            for m in config.bind_mounts
        ],
        config={
            "experiment_id": run.experiment_id,
            "trial_id": run.trial_id,
            "trial_run_id": run.run_id,
        },
    )
