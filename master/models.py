"""The master's tables (SQLAlchemy 2 ORM). The schema changes only through Alembic migrations.

Timestamps are timezone-aware UTC; anything filtered on is a typed, indexed column.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always returns aware datetimes (SQLite forgets the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def sqlite_datetime(value: datetime) -> str:
    """What :class:`UTCDateTime` stores on SQLite (SQLAlchemy's DATETIME text, naive UTC with
    microseconds), for writes that bypass SQLAlchemy's type processing; its reader parses it."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Cluster(Base):
    """One row: the cluster's identity, stable across master restarts."""

    __tablename__ = "cluster"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    password_hash: Mapped[str | None] = mapped_column(Text)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    remote: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_auth_at: Mapped[datetime | None] = mapped_column()


class UserSession(Base):
    """A bearer token. Only its SHA-256 is stored; the token itself is shown once, at login.

    ``scope`` says what it is (see ``master.auth``): ``login`` (a user session), ``task`` (bound
    to ``allocation_id``; ``acts_as_owner`` when it may also act as its owner for ordinary
    work) or ``proxy`` (a browser cookie for ``/proxy/<task_id>/`` only).
    """

    __tablename__ = "user_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16), default="login")
    allocation_id: Mapped[str | None] = mapped_column(String(128), index=True)
    task_id: Mapped[str | None] = mapped_column(String(128))
    acts_as_owner: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class Agent(Base):
    """Every agent that ever joined; enable/drain survive a master restart."""

    __tablename__ = "agents"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    resource_pool: Mapped[str] = mapped_column(String(255))
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_connected_at: Mapped[datetime | None] = mapped_column()
    last_disconnected_at: Mapped[datetime | None] = mapped_column()
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    draining: Mapped[bool] = mapped_column(Boolean, default=False)


class AgentSequence(Base):
    """Per agent: which run of its process the master last heard from (``boot_id``) and the last
    message sequence number it applied from that run (see ``master/agent_sequences.py``)."""

    __tablename__ = "agent_sequences"
    agent_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    boot_id: Mapped[str] = mapped_column(String(64))
    booted_at: Mapped[datetime] = mapped_column()
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Task(Base):
    """A unit of work of any kind (command now; trials, shells, notebooks, TensorBoards later)."""

    __tablename__ = "tasks"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    task_type: Mapped[str] = mapped_column(String(32), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    resource_pool: Mapped[str] = mapped_column(String(255))
    slots: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=42)
    state: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()


class Allocation(Base):
    """One attempt to run a task on agents. ``agent_slots`` maps agent id → slot ids."""

    __tablename__ = "allocations"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(32), index=True)
    agent_slots: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    is_ready: Mapped[bool] = mapped_column(Boolean, default=False)
    # Where an interactive task's service listens ("host:port"), as the task reported it.
    proxy_address: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    exit_code: Mapped[int | None] = mapped_column(Integer)
    exit_reason: Mapped[str | None] = mapped_column(Text)


class TaskLog(Base):
    __tablename__ = "task_logs"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    task_id: Mapped[str] = mapped_column(String(128))
    allocation_id: Mapped[str | None] = mapped_column(String(128))
    agent_id: Mapped[str | None] = mapped_column(String(255))
    timestamp: Mapped[datetime] = mapped_column()
    stdtype: Mapped[str] = mapped_column(String(16))
    level: Mapped[str] = mapped_column(String(16), default="INFO")
    source: Mapped[str] = mapped_column(String(16), default="task")
    log: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_task_logs_task_id_id", "task_id", "id"),)


class ProvisionedInstance(Base):
    """A machine a pool's provider launched: what it costs and what happened to it."""

    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    resource_pool: Mapped[str] = mapped_column(String(255), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    instance_type: Mapped[str] = mapped_column(String(64))
    zone: Mapped[str | None] = mapped_column(String(64))
    market: Mapped[str] = mapped_column(String(16))
    price_per_hour: Mapped[float] = mapped_column(Float)
    slots: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), index=True)
    launched_at: Mapped[datetime] = mapped_column()
    joined_at: Mapped[datetime | None] = mapped_column()
    terminated_at: Mapped[datetime | None] = mapped_column()
    termination_reason: Mapped[str | None] = mapped_column(Text)
    launch_reason: Mapped[str] = mapped_column(Text, default="")


class InstanceEvent(Base):
    """Why the fleet is the size it is: every launch, join, drain and termination, with a reason."""

    __tablename__ = "instance_events"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    resource_pool: Mapped[str] = mapped_column(String(255))
    instance_id: Mapped[str | None] = mapped_column(String(255), index=True)
    at: Mapped[datetime] = mapped_column()
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_instance_events_pool_at", "resource_pool", "at"),)


# ---- experiments (docs/design/experiments.md) ----------------------------------------------------


class Experiment(Base):
    """A hyperparameter search: its config, its searcher's snapshot, and where it stands.

    ``searcher_state`` is the engine's whole durable search state (the searcher's own snapshot
    plus each trial's pending operations), rewritten in the same transaction as every change a
    searcher event causes, so a restarted master continues the search exactly."""

    __tablename__ = "experiments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(32), index=True)
    state_reason: Mapped[str | None] = mapped_column(Text)
    archived: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    original_config: Mapped[str] = mapped_column(Text)
    checkpoint_storage: Mapped[dict[str, Any]] = mapped_column(JSON)
    searcher_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    resource_pool: Mapped[str] = mapped_column(String(255))
    model_definition_size: Mapped[int] = mapped_column(BigInteger, default=0)
    start_time: Mapped[datetime] = mapped_column(default=utcnow)
    end_time: Mapped[datetime | None] = mapped_column()


class ExperimentLabel(Base):
    """One label of an experiment: a row each, so listing by label is an indexed lookup."""

    __tablename__ = "experiment_labels"
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    label: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)


class ExperimentModelDefinition(Base):
    """The uploaded model definition (path → base64), kept apart from ``experiments`` so
    listing experiments never loads it; read only to launch a trial run."""

    __tablename__ = "experiment_model_definitions"
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    files: Mapped[dict[str, Any]] = mapped_column(JSON)


class Trial(Base):
    """One set of hyperparameters the searcher asked for (``request_id``), across its runs."""

    __tablename__ = "trials"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    request_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32), index=True)
    state_reason: Mapped[str | None] = mapped_column(Text)
    hparams: Mapped[dict[str, Any]] = mapped_column(JSON)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[int] = mapped_column(Integer, default=0)
    # What the running harness said before exiting on purpose (EXITED_REASON_…); cleared per run.
    early_exit: Mapped[str | None] = mapped_column(String(64))
    latest_checkpoint: Mapped[str | None] = mapped_column(String(64))
    total_batches: Mapped[int] = mapped_column(BigInteger, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    start_time: Mapped[datetime] = mapped_column(default=utcnow)
    end_time: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        Index("ux_trials_experiment_request", "experiment_id", "request_id", unique=True),
    )


class TrialRun(Base):
    """One run of a trial: a TRIAL task. ``exit_handled`` marks its end as processed by the
    experiment engine, so a restarted master replays exactly the ends it had not seen."""

    __tablename__ = "trial_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[str] = mapped_column(String(128), index=True)
    allocation_id: Mapped[str] = mapped_column(String(128))
    exit_handled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrialMetrics(Base):
    """One report of averaged metrics of a group (``training``, ``validation``, …)."""

    __tablename__ = "trial_metrics"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    trial_run_id: Mapped[int] = mapped_column(Integer)
    group: Mapped[str] = mapped_column(String(64))
    steps_completed: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The searcher's metric when a validation report carries it (best-trial and GC queries).
    searcher_metric: Mapped[float | None] = mapped_column(Float)
    report_time: Mapped[datetime] = mapped_column()
    # The harness's idempotency key of the report (None for reports without one): a repeated
    # report is stored once (docs/design/experiments.md, "REST used by the harness").
    report_key: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_trial_metrics_trial_group_steps", "trial_id", "group", "steps_completed"),
        Index("ux_trial_metrics_trial_report_key", "trial_id", "report_key", unique=True),
    )


class TrialReportKey(Base):
    """The idempotency key of a report of a trial other than metrics (checkpoint, completed
    operation, early exit), written in the transaction that applied it, so a repeat is
    answered without being applied again. Deleted when the trial ends (nothing reports for an
    ended trial) and with the trial."""

    __tablename__ = "trial_report_keys"
    trial_id: Mapped[int] = mapped_column(
        ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    """A checkpoint a trial reported; its files live in the experiment's checkpoint storage."""

    __tablename__ = "checkpoints"
    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), index=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    task_id: Mapped[str | None] = mapped_column(String(128))
    allocation_id: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(32), index=True)
    report_time: Mapped[datetime] = mapped_column()
    steps_completed: Mapped[int] = mapped_column(BigInteger, default=0)
    resources: Mapped[dict[str, Any]] = mapped_column(JSON)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)


# ---- model registry (docs/cli/model.md) ----------------------------------------------------------


class RegisteredModel(Base):
    """A named model in the registry (Determined's ``v1Model``); its versions pin checkpoints."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    labels: Mapped[list[str]] = mapped_column(JSON)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    creation_time: Mapped[datetime] = mapped_column(default=utcnow)
    last_updated_time: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """Version ``version`` (1, 2, … per model) of a registered model: one checkpoint, which
    checkpoint GC never deletes while a version names it (the foreign key refuses too)."""

    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    checkpoint_uuid: Mapped[str] = mapped_column(ForeignKey("checkpoints.uuid"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(255), default="")
    comment: Mapped[str] = mapped_column(Text, default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    labels: Mapped[list[str]] = mapped_column(JSON)
    creation_time: Mapped[datetime] = mapped_column(default=utcnow)
    last_updated_time: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ux_model_versions_model_version", "model_id", "version", unique=True),)
