"""``det.get_cluster_info()``: who this task is, from the variables the master set.

Determined's ``ClusterInfo``/``TrialInfo`` read the same facts from files its entrypoint wrote;
here they come from the task's ``DET_*`` variables (``harness.core.env``). Outside a task
``get_cluster_info()`` returns None, as Determined's does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from harness.core.env import NotInTrialError, TrialEnv, slot_ids_from_environ
from harness.service import TaskEnv

from ._unsupported import unsupported


class TrialInfo:
    """The trial part of :class:`ClusterInfo` (``info.trial``)."""

    def __init__(self, env: TrialEnv) -> None:
        self.trial_id = env.trial_id
        self.experiment_id = env.experiment_id
        self.hparams: dict[str, Any] = env.hparams
        self._config: dict[str, Any] = env.config
        self._trial_run_id = env.trial_run_id
        self._steps_completed = 0  # Determined's harness fills it for its own trainer only

    @property
    def trial_seed(self) -> int:
        """The seed the PyTorch trainer uses for this trial (torch is imported only here)."""
        from harness.pytorch.trainer import trial_seed

        return trial_seed(self.experiment_id, self.trial_id)


class ClusterInfo:
    """What Determined's ``ClusterInfo`` holds, for a task started by Flotilla's master."""

    def __init__(self, task: TaskEnv, environ: Mapping[str, str]) -> None:
        self.master_url = task.master_url
        self.cluster_id = ""  # a Flotilla master has no cluster id
        self.agent_id = environ.get("DET_AGENT_ID", "")
        self.slot_ids = list(slot_ids_from_environ(environ))
        self.task_id = task.task_id
        self.allocation_id = task.allocation_id
        self.session_token = task.token
        self._trial: TrialInfo | None = None
        self._latest_checkpoint: str | None = None
        self.task_type = "TRIAL" if isinstance(task, TrialEnv) else "COMMAND"
        if isinstance(task, TrialEnv):
            self._trial = TrialInfo(task)
            self._latest_checkpoint = task.latest_checkpoint
        self._slots_per_trial = _slots_per_trial(task)
        self._gpu_uuids = [u for u in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if u]

    @property
    def latest_checkpoint(self) -> str | None:
        """The checkpoint to resume from (None on a trial's first start)."""
        return self._latest_checkpoint

    @property
    def trial(self) -> TrialInfo:
        if self._trial is None:
            raise RuntimeError(
                f"ClusterInfo.trial is only available in trials; this task is a {self.task_type}"
            )
        return self._trial

    @property
    def user_data(self) -> dict[str, Any]:
        """The experiment config's ``data`` section (``{}`` when it has none)."""
        if self._trial is None:
            return {}
        data = self._trial._config.get("data")
        return dict(data) if isinstance(data, dict) else {}

    @property
    def gpu_uuids(self) -> list[str]:
        return list(self._gpu_uuids)

    def _single_agent(self, what: str) -> None:
        if self._slots_per_trial > len(self.slot_ids) > 0:
            unsupported(
                f"ClusterInfo.{what} for a trial spanning several agents",
                "start workers with `python3 -m determined.launch.torch_distributed` instead",
            )

    @property
    def container_addrs(self) -> list[str]:
        """The addresses of the trial's containers: one, this machine, when the trial's slots
        are all here."""
        self._single_agent("container_addrs")
        return ["127.0.0.1"]

    @property
    def container_rank(self) -> int:
        self._single_agent("container_rank")
        return 0

    @property
    def container_slot_counts(self) -> list[int]:
        self._single_agent("container_slot_counts")
        return [len(self.slot_ids)]


def _slots_per_trial(task: TaskEnv) -> int:
    if not isinstance(task, TrialEnv):
        return 1
    resources = task.config.get("resources") or {}
    slots = resources.get("slots_per_trial", 1) if isinstance(resources, dict) else 1
    return slots if isinstance(slots, int) and slots > 0 else 1


def get_cluster_info(environ: Mapping[str, str] | None = None) -> ClusterInfo | None:
    """This task's :class:`ClusterInfo`, or None when not running in a Flotilla task."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    try:
        task: TaskEnv = TrialEnv.from_environ(env)
    except NotInTrialError:
        if env.get("DET_TRIAL_ID"):
            raise  # a trial with a broken variable: say which, rather than "not a task"
        try:
            task = TaskEnv.from_environ(dict(env))
        except RuntimeError:
            return None
    return ClusterInfo(task, env)
