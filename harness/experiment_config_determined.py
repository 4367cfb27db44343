"""Determined's experiment-config fields that mean something only in Determined's world (Docker
images, Kubernetes pods, Slurm, Horovod tuning, the profiler, workspaces): accepted so that a
Determined config runs unchanged, each named in one warning at creation and in a line of every
trial's log saying why it has no effect here. Never refused.

What does work is in :mod:`harness.experiment_config` (``data`` is handed to the trial,
``bind_mounts`` are linked into the task's directory where the host path exists on the agent,
``reproducibility.experiment_seed`` seeds the trials); this module holds the models of those
sections. Why the inert ones are inert is :mod:`harness.determined_fields`, shared with task
configs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.determined_fields import INERT_FIELDS, ineffective_fields, inert
from harness.task_config import TaskEnvironment

__all__ = [
    "INERT_FIELDS",
    "BindMount",
    "CheckpointPolicy",
    "ExperimentEnvironment",
    "Reproducibility",
    "ineffective_fields",
    "inert",
]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BindMount(_Config):
    """A directory of the agent's host made visible to the trial. Without containers, it is a
    symbolic link at ``container_path`` inside the task's directory (a relative path, or an
    absolute one taken below the task's directory)."""

    host_path: str = Field(description="Absolute path on the agent.")
    container_path: str = Field(
        description="Where the trial sees it: a path inside the task's working directory."
    )
    read_only: bool = Field(
        default=False,
        description="Accepted; the link gives what the task's uid may do on the host path.",
    )
    propagation: str = Field(default="rprivate", description="Accepted; no effect (no mounts).")


class Reproducibility(_Config):
    experiment_seed: int | None = Field(
        default=None,
        ge=0,
        description="Seeds every trial (with its trial id); unset: the experiment id does.",
    )


# A trial's environment: variables, and Determined's container settings (inert here).
ExperimentEnvironment = TaskEnvironment


CheckpointPolicy = Literal["best", "all", "none"]
