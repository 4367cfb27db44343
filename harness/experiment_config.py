"""Experiment configuration: what ``det experiment create CONFIG DIR`` sends, as the master reads.

Shared by CLI and master, so a bad config fails on the user's machine before upload and, for
other clients, with a 400 from the master — both naming the field path and what is allowed
(:func:`parse_experiment_config`). Determined's field names and shapes; defaults live here once,
and ``docs/reference/experiment-config.md`` is generated from these models.
"""

from __future__ import annotations

import shlex
from enum import StrEnum
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from harness.experiment_config_determined import (
    BindMount,
    CheckpointPolicy,
    ExperimentEnvironment,
    Reproducibility,
    inert,
)
from harness.units import OptionalDuration

DEFAULT_PRIORITY = 42


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Unit(StrEnum):
    RECORDS = "records"
    BATCHES = "batches"
    EPOCHS = "epochs"


class Length(_Config):
    """A training length in one unit: ``{batches: 937}``, ``{epochs: 2}`` or ``{records: N}``.
    A bare integer means that many of the experiment's ``scheduling_unit``-independent
    *batches* (Determined reads bare numbers as batches too)."""

    records: int | None = Field(default=None, ge=1)
    batches: int | None = Field(default=None, ge=1)
    epochs: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _bare_number(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"batches": value}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Length:
        given = [u for u in Unit if getattr(self, u.value) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of records, batches or epochs, e.g. {batches: 100}")
        return self

    @property
    def unit(self) -> Unit:
        return next(u for u in Unit if getattr(self, u.value) is not None)

    @property
    def value(self) -> int:
        number: int = getattr(self, self.unit.value)
        return number


# ---- hyperparameters ---------------------------------------------------------------------------


class ConstHP(_Config):
    type: Literal["const"]
    val: Any


class IntHP(_Config):
    type: Literal["int"]
    minval: int
    maxval: int
    count: int | None = Field(default=None, ge=1, description="Grid points (grid searcher).")

    @model_validator(mode="after")
    def _range(self) -> IntHP:
        if self.minval > self.maxval:
            raise ValueError(f"minval {self.minval} is greater than maxval {self.maxval}")
        return self


class DoubleHP(_Config):
    type: Literal["double"]
    minval: float
    maxval: float
    count: int | None = Field(default=None, ge=1, description="Grid points (grid searcher).")

    @model_validator(mode="after")
    def _range(self) -> DoubleHP:
        if self.minval > self.maxval:
            raise ValueError(f"minval {self.minval} is greater than maxval {self.maxval}")
        return self


class LogHP(_Config):
    """``base ** x`` for x uniform in [minval, maxval]."""

    type: Literal["log"]
    minval: float
    maxval: float
    base: float = Field(default=10.0, gt=0)
    count: int | None = Field(default=None, ge=1, description="Grid points (grid searcher).")

    @model_validator(mode="after")
    def _range(self) -> LogHP:
        if self.minval > self.maxval:
            raise ValueError(f"minval {self.minval} is greater than maxval {self.maxval}")
        if self.base == 1:
            raise ValueError("base must not be 1")
        return self


class CategoricalHP(_Config):
    type: Literal["categorical"]
    vals: list[Any] = Field(min_length=1)


HPSpec = Annotated[ConstHP | IntHP | DoubleHP | LogHP | CategoricalHP, Field(discriminator="type")]


def normalize_hyperparameters(value: Any, path: str = "hyperparameters") -> dict[str, Any]:
    """Bare constants become ``{type: const, val: …}``; a dict without ``type`` is a nested
    group. Returns the same tree with every leaf a validated spec (as a plain dict)."""
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a mapping of names to hyperparameters")
    out: dict[str, Any] = {}
    for name, spec in value.items():
        where = f"{path}.{name}"
        if isinstance(spec, dict) and "type" in spec:
            from pydantic import TypeAdapter

            try:
                parsed = TypeAdapter(HPSpec).validate_python(spec)
            except ValidationError as exc:
                raise ValueError(_describe(exc, where)) from None
            out[name] = parsed.model_dump()
        elif isinstance(spec, dict):
            out[name] = normalize_hyperparameters(spec, where)
        else:
            out[name] = {"type": "const", "val": spec}
    return out


# ---- searchers ---------------------------------------------------------------------------------


class _SearcherBase(_Config):
    metric: str = Field(
        description="Validation metric the searcher optimizes, e.g. `validation_loss`."
    )
    smaller_is_better: bool = Field(default=True, description="Whether lower `metric` is better.")
    max_length: Length | None = Field(
        default=None, description="How long each trial trains: `{batches: N}`, `{epochs: N}`, …"
    )
    source_trial_id: int | None = Field(
        default=None,
        description=(
            "Warm start: every trial starts from the model weights of this trial's latest "
            "completed checkpoint (fresh optimizer, from batch 0)."
        ),
    )
    source_checkpoint_uuid: str | None = Field(
        default=None,
        description=(
            "Warm start from this completed checkpoint instead of a trial's (not both). The "
            "stored config also records here the checkpoint `source_trial_id` resolved to."
        ),
    )


class SingleSearcher(_SearcherBase):
    name: Literal["single"]


class GridSearcher(_SearcherBase):
    name: Literal["grid"]
    max_concurrent_trials: int = Field(default=16, ge=0, description="0: no limit.")


class RandomSearcher(_SearcherBase):
    name: Literal["random"]
    max_trials: int = Field(ge=1)
    max_concurrent_trials: int = Field(default=16, ge=0, description="0: no limit.")
    seed: int | None = Field(
        default=None, description="Seed for sampling; unset: the experiment id."
    )


class AshaMode(StrEnum):
    AGGRESSIVE = "aggressive"
    STANDARD = "standard"
    CONSERVATIVE = "conservative"


class AdaptiveAshaSearcher(_SearcherBase):
    name: Literal["adaptive_asha"]
    max_trials: int = Field(ge=1)
    max_concurrent_trials: int = Field(default=16, ge=0, description="0: no limit.")
    mode: AshaMode = Field(
        default=AshaMode.STANDARD,
        description="How many brackets: aggressive 1, standard up to 3, conservative up to 4.",
    )
    divisor: float = Field(
        default=4.0, gt=1, description="Promote the best 1/divisor of each rung."
    )
    max_rungs: int = Field(default=5, ge=1)
    max_time: int | None = Field(
        default=None, ge=1, description="Instead of max_length: a budget in `time_metric` units."
    )
    time_metric: str | None = Field(
        default=None, description="A reported metric measuring progress, with max_time."
    )
    seed: int | None = Field(
        default=None, description="Seed for sampling; unset: the experiment id."
    )

    @model_validator(mode="after")
    def _length_or_time(self) -> AdaptiveAshaSearcher:
        if (self.max_time is None) != (self.time_metric is None):
            raise ValueError("give max_time and time_metric together")
        if self.max_length is None and self.max_time is None:
            raise ValueError("give max_length (e.g. {batches: 937}) or max_time with time_metric")
        return self


SearcherConfig = Annotated[
    SingleSearcher | GridSearcher | RandomSearcher | AdaptiveAshaSearcher,
    Field(discriminator="name"),
]


# ---- resources, storage ------------------------------------------------------------------------


class ExperimentResources(_Config):
    slots_per_trial: int = Field(
        default=1, ge=1, description="Slots each trial uses; >1 trains distributed."
    )
    max_slots: int | None = Field(
        default=None, ge=1, description="At most this many slots for the whole experiment."
    )
    priority: int = Field(default=DEFAULT_PRIORITY, ge=1, le=99, description="Lower runs first.")
    weight: float = Field(default=1.0, gt=0, description="Fair-share weight.")
    resource_pool: str | None = Field(default=None, description="Unset: the master's default pool.")
    native_parallel: bool | None = inert("resources.native_parallel")
    shm_size: int | str | None = inert("resources.shm_size")
    devices: list[dict[str, Any]] | None = inert("resources.devices")
    agent_label: str | None = inert("resources.agent_label")
    is_single_node: bool | None = inert("resources.is_single_node")


class _StorageBase(_Config):
    save_experiment_best: int = Field(
        default=0, ge=0, description="Keep the best N checkpoints of the experiment."
    )
    save_trial_best: int = Field(default=1, ge=0, description="Keep each trial's best N.")
    save_trial_latest: int = Field(default=1, ge=0, description="Keep each trial's latest N.")


class SharedFSStorage(_StorageBase):
    type: Literal["shared_fs"]
    host_path: str = Field(
        description="Directory every agent (and the master) sees at the same path."
    )
    storage_path: str | None = Field(default=None, description="Subdirectory of host_path.")
    container_path: str | None = inert("checkpoint_storage.container_path")
    propagation: str | None = inert("checkpoint_storage.propagation")
    checkpoint_path: str | None = inert("checkpoint_storage.checkpoint_path")
    tensorboard_path: str | None = inert("checkpoint_storage.tensorboard_path")


class S3Storage(_StorageBase):
    type: Literal["s3"]
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = Field(
        default=None, description="For S3-compatible stores (MinIO, moto)."
    )
    access_key: str | None = None
    secret_key: str | None = None


class GCSStorage(_StorageBase):
    type: Literal["gcs"]
    bucket: str
    prefix: str = ""


CheckpointStorage = Annotated[SharedFSStorage | S3Storage | GCSStorage, Field(discriminator="type")]


# ---- the experiment ------------------------------------------------------------------------------


class ExperimentConfig(_Config):
    name: str | None = Field(default=None, description="Shown in `det experiment list`.")
    description: str | None = Field(default=None, description="Free text shown by describe.")
    labels: list[str] = Field(default_factory=list, description="Tags; filter with `labels=`.")
    entrypoint: str = Field(
        description=(
            "`module:Class` of a trainer class (`model_def:DigitsTrial`), or a shell command for "
            "a script that uses the Core API (`python3 train.py`)."
        )
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Name → a bare constant, or `{type: const, val}`, `{type: int|double, minval, maxval, "
            "count?}`, `{type: log, minval, maxval, base: 10, count?}` (base ** x), `{type: "
            "categorical, vals: [...]}`; a mapping without `type` is a nested group. `count` is "
            "the number of grid points (grid searcher)."
        ),
    )
    searcher: SearcherConfig = Field(description="How trials are chosen, by `name`.")
    resources: ExperimentResources = Field(
        default_factory=ExperimentResources, description="Slots, priority and pool of trials."
    )
    max_restarts: int = Field(
        default=5, ge=0, description="Restarts of a crashed trial before it errors."
    )
    min_validation_period: Length | None = Field(
        default=None, description="Validate at least this often (besides each searcher step)."
    )
    min_checkpoint_period: Length | None = Field(
        default=None, description="Checkpoint at least this often (besides each searcher step)."
    )
    records_per_epoch: int | None = Field(
        default=None, ge=1, description="Needed to count epochs in records."
    )
    scheduling_unit: int = Field(default=100, ge=1, description="Batches between progress reports.")
    checkpoint_storage: CheckpointStorage | None = Field(
        default=None, description="Unset: the master's `checkpoint_storage`."
    )
    environment: ExperimentEnvironment = Field(
        default_factory=ExperimentEnvironment, description="Environment of the trial processes."
    )
    perform_initial_validation: bool = Field(
        default=False, description="Validate once before the first training batch."
    )
    preemption_timeout: OptionalDuration = Field(
        default=None, description="Unset or off: wait for the trial to checkpoint."
    )
    data: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Anything the trial should read: `context.get_data_config()` (trainer) or "
            "`core.info.user_data` (Core API), as in Determined."
        ),
    )
    bind_mounts: list[BindMount] = Field(
        default_factory=list,
        description=(
            "Host directories linked into the task's directory at `container_path` where "
            "`host_path` exists on the agent (else a warning in the trial's log)."
        ),
    )
    reproducibility: Reproducibility = Field(
        default_factory=Reproducibility, description="`experiment_seed` seeds every trial."
    )
    debug: bool | None = inert("debug")
    optimizations: dict[str, Any] | None = inert("optimizations")
    profiling: dict[str, Any] | None = inert("profiling")
    project: str | None = inert("project")
    workspace: str | None = inert("workspace")
    checkpoint_policy: CheckpointPolicy | None = inert("checkpoint_policy")
    log_policies: list[dict[str, Any]] | dict[str, Any] | None = inert("log_policies")
    retention_policy: dict[str, Any] | None = inert("retention_policy")
    integrations: dict[str, Any] | None = inert("integrations")
    internal: dict[str, Any] | None = inert("internal")
    pbs: dict[str, Any] | None = inert("pbs")
    slurm: dict[str, Any] | None = inert("slurm")

    @field_validator("entrypoint", mode="before")
    @classmethod
    def _entrypoint_list(cls, value: Any) -> Any:
        """Determined also takes a list (``[python3, train.py]``): one shell-quoted command."""
        if isinstance(value, list) and all(isinstance(part, str) for part in value):
            return shlex.join(value)
        return value

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _hps(cls, value: Any) -> Any:
        return normalize_hyperparameters(value or {})


class ConfigError(ValueError):
    """A config that cannot be used; the message names each bad field's path."""


# Discriminator values pydantic puts in error locations; users never wrote them as keys.
_UNION_TAGS = frozenset(
    {"single", "grid", "random", "adaptive_asha", "shared_fs", "s3", "gcs"}
    | {"const", "int", "double", "log", "categorical"}
)


def _describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for error in exc.errors():
        loc = ".".join(
            str(p)
            for i, p in enumerate(error["loc"])
            if not str(p).startswith("function-") and not (i > 0 and p in _UNION_TAGS)
        )
        if prefix and loc in _UNION_TAGS:
            loc = ""
        path = ".".join(p for p in (prefix, loc) if p) or "(top level)"
        message = str(error["msg"]).removeprefix("Value error, ")
        if message.startswith(f"{path}."):  # a nested validator already named the full path
            parts.append(message)
            continue
        if error["type"] == "union_tag_invalid":
            message = f"unknown kind; allowed: {error.get('ctx', {}).get('expected_tags')}"
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{path}: {message}")
    return "; ".join(parts)


def parse_experiment_config(source: str | dict[str, Any]) -> ExperimentConfig:
    """YAML text (or an already loaded mapping) as an :class:`ExperimentConfig`."""
    if isinstance(source, str):
        try:
            source = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config: not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(source, dict):
        raise ConfigError("config: an experiment config must be a YAML mapping")
    try:
        return ExperimentConfig.model_validate(source)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
