"""The variables the master gives a trial (docs/design/experiments.md, "A trial on an agent").

Read once, checked once: a Core API script started outside a trial fails at
``harness.core.init()`` with a message naming what is missing, instead of somewhere deep in a
REST call with an empty URL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.core import patience
from harness.service import TaskEnv

_REQUIRED = (
    "DET_MASTER",
    "DET_TASK_ID",
    "DET_ALLOCATION_ID",
    "DET_SESSION_TOKEN",
    "DET_EXPERIMENT_ID",
    "DET_TRIAL_ID",
    "DET_TRIAL_RUN_ID",
    "DET_HPARAMS",
    "DET_EXPERIMENT_CONFIG",
)


class NotInTrialError(RuntimeError):
    """The process is not a trial started by the master (a variable is missing or malformed)."""


@dataclass(frozen=True)
class TrialEnv(TaskEnv):
    """A task's variables plus the trial's own; see :meth:`from_environ`."""

    experiment_id: int
    trial_id: int
    trial_run_id: int
    hparams: dict[str, Any]
    config: dict[str, Any]
    latest_checkpoint: str | None
    checkpoint_storage: dict[str, Any] | None
    slot_ids: tuple[int, ...] = ()
    tensorboard_dir: str | None = None
    # Warm start (searcher.source_*): model weights to start from, only while the trial has no
    # checkpoint of its own, and the storage they are in (another experiment's, maybe).
    warm_start_checkpoint: str | None = None
    warm_start_storage: dict[str, Any] | None = None
    # How long to retry a master that does not answer (DET_MASTER_UNREACHABLE_TIMEOUT).
    master_unreachable_timeout: float = patience.DEFAULT_TIMEOUT_SECONDS

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> TrialEnv:
        env: Mapping[str, str] = os.environ if environ is None else environ
        missing = [name for name in _REQUIRED if not env.get(name)]
        if missing:
            raise NotInTrialError(
                f"not running as a Flotilla trial: {', '.join(missing)} unset (the master sets "
                "them when it starts a trial of an experiment; see docs/core-api.md)"
            )
        storage = env.get("DET_CHECKPOINT_STORAGE", "").strip()
        warm_storage = env.get("DET_WARM_START_STORAGE", "").strip()
        return cls(
            master_url=env["DET_MASTER"],
            task_id=env["DET_TASK_ID"],
            allocation_id=env["DET_ALLOCATION_ID"],
            token=env["DET_SESSION_TOKEN"],
            experiment_id=_int(env, "DET_EXPERIMENT_ID"),
            trial_id=_int(env, "DET_TRIAL_ID"),
            trial_run_id=_int(env, "DET_TRIAL_RUN_ID"),
            hparams=_json_object(env, "DET_HPARAMS"),
            config=_json_object(env, "DET_EXPERIMENT_CONFIG"),
            latest_checkpoint=env.get("DET_LATEST_CHECKPOINT", "").strip() or None,
            checkpoint_storage=_json_object(env, "DET_CHECKPOINT_STORAGE") if storage else None,
            slot_ids=_slot_ids(env.get("DET_SLOT_IDS", "")),
            tensorboard_dir=env.get("DET_TENSORBOARD_DIR", "").strip() or None,
            warm_start_checkpoint=env.get("DET_WARM_START_CHECKPOINT", "").strip() or None,
            warm_start_storage=(
                _json_object(env, "DET_WARM_START_STORAGE") if warm_storage else None
            ),
            master_unreachable_timeout=patience.timeout_from_env(env),
        )


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise NotInTrialError(f"{name} must be an integer, got {env[name]!r}") from None


def _json_object(env: Mapping[str, str], name: str) -> dict[str, Any]:
    try:
        value = json.loads(env[name])
    except ValueError as exc:
        raise NotInTrialError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise NotInTrialError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def _slot_ids(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise NotInTrialError(
            f"DET_SLOT_IDS must be comma-separated integers, got {text!r}"
        ) from None


def slot_ids_from_environ(environ: Mapping[str, str] | None = None) -> tuple[int, ...]:
    """``DET_SLOT_IDS`` as integers (empty when unset); the launcher needs only this."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    return _slot_ids(env.get("DET_SLOT_IDS", ""))
