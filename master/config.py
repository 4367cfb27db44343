"""The master's configuration: ``master.yaml``, then ``FLOTILLA_*`` environment variables, then
``det-master`` flags, each overriding the one before.

Every default lives here, once; ``docs/reference/master-config.md`` is generated from these models
(``python -m master.config_docs``). Nested fields are set from the environment with ``__``
between levels, e.g. ``FLOTILLA_DB__URL=postgresql://…`` or ``FLOTILLA_PORT=8081``; values that
look like JSON lists or objects (``FLOTILLA_RESOURCE_POOLS='[{"pool_name": "gpu"}]'``) are parsed
as JSON.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.cloudwatch.config import CloudWatchConfig
from harness.experiment_config import CheckpointStorage, SharedFSStorage
from harness.task_config import MASTER_UNREACHABLE_TIMEOUT
from harness.units import Duration, OptionalDuration
from master.config_determined import (
    LOG_LEVELS,
    DatabaseConfig,
    LogConfig,
    ResourceManagerConfig,
)
from provisioner.config import PoolProvider, ProviderType

DEFAULT_PORT = 8080
DEFAULT_POOL = "default"
ENV_PREFIX = "FLOTILLA_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResourcePoolConfig(_Section):
    pool_name: str = Field(description="Name tasks use in `resources.resource_pool`.")
    description: str = Field(default="", description="Free text shown by `det resource-pool list`.")
    provider: PoolProvider | None = Field(
        default=None,
        description="Launch and terminate this pool's agents with the queue; unset: a static pool.",
    )

    @field_validator("pool_name")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class RequestLimitsConfig(_Section):
    max_body: ByteSize = Field(
        default=ByteSize(2**20),
        gt=0,
        description=(
            "Largest `/api/` request body, e.g. `1MiB`: a larger declared body is refused with 413 "
            "before it is read, a streamed one as soon as it passes the limit. Also the most an "
            "unauthenticated caller may send to any route."
        ),
    )
    max_context_body: ByteSize = Field(
        default=ByteSize(128 * 2**20),
        gt=0,
        description=(
            "Largest body of a request that uploads a context directory (creating a command, "
            "notebook, shell, TensorBoard or experiment), read only from an authenticated caller. "
            "The context's files themselves are limited to 96 MiB encoded, as in Determined."
        ),
    )


class LoginConfig(_Section):
    attempts_per_user: int = Field(
        default=10,
        ge=1,
        description=(
            "Failed logins a username may have in a row before `/api/v1/auth/login` answers 429 "
            "with `Retry-After`; one attempt comes back every `window / attempts_per_user`. A "
            "successful login does not count."
        ),
    )
    attempts_per_client: int = Field(
        default=30,
        ge=1,
        description=(
            "The same for all failed logins from one client address, whatever the usernames."
        ),
    )
    window: Duration = Field(
        default=timedelta(minutes=5),
        description="Time in which a username's or a client's attempts fully come back.",
    )
    tracked_keys: int = Field(
        default=10_000,
        ge=100,
        description=(
            "Usernames and client addresses remembered, each; beyond it the least recently "
            "seen is forgotten (its attempts come back), so the limiter's memory is bounded."
        ),
    )
    password_workers: int = Field(
        default=1,
        ge=1,
        le=16,
        description=(
            "Threads that check passwords (argon2: about 0.1 s of CPU and 64 MiB each), at a lower "
            "CPU priority and apart from the threads serving other requests, so a flood of logins "
            "never delays them. One serves about ten logins a second; raise it on a master with "
            "many cores and many users logging in at once."
        ),
    )
    password_queue: int = Field(
        default=16,
        ge=0,
        description=(
            "Logins that may wait for a password thread; beyond it a login is answered 503 "
            "with `Retry-After` at once."
        ),
    )


class SpotEventsConfig(_Section):
    """An SQS queue an EventBridge rule feeds with EC2 spot interruption warnings and
    rebalance recommendations (docs/spot.md), read by the master itself."""

    queue_url: str = Field(
        min_length=1, description="The SQS queue's URL, e.g. https://sqs.<region>.amazonaws.com/…"
    )
    region: str | None = Field(default=None, description="AWS region; default from the SDK.")
    endpoint_url: str | None = Field(
        default=None, description="SQS endpoint override (moto and other AWS-compatible APIs)."
    )


class MasterConfig(_Section):
    """Everything `det-master` reads at start."""

    host: str = Field(default="0.0.0.0", description="Address the HTTP server binds.")
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535, description="HTTP port.")
    external_url: str | None = Field(
        default=None,
        description=(
            "URL agents and tasks use to reach the master; default http://<host>:<port> "
            "(127.0.0.1 when host is 0.0.0.0)."
        ),
    )
    cluster_name: str = Field(default="", description="Shown by `det master info`.")
    data_dir: Path = Field(
        default=Path("~/.flotilla/master"),
        description="Where the embedded SQLite database and the generated join token live.",
    )
    db: DatabaseConfig = Field(default_factory=DatabaseConfig, description="Database connection.")
    agent_join_token: str | None = Field(
        default=None,
        description=(
            "Shared secret agents present to join. Unset: generated once and stored in "
            "`<data_dir>/agent-join-token`."
        ),
    )
    resource_pools: list[ResourcePoolConfig] = Field(
        default_factory=lambda: [ResourcePoolConfig(pool_name=DEFAULT_POOL)],
        description="Resource pools; agents join one by name.",
    )
    default_resource_pool: str = Field(
        default=DEFAULT_POOL, description="Pool for tasks that do not name one."
    )
    default_aux_resource_pool: str | None = Field(
        default=None,
        description=(
            "Pool for tasks that need no slot (`resources.slots: 0`) and name none, as "
            "Determined's. Unset: `default_resource_pool`."
        ),
    )
    resource_manager: ResourceManagerConfig | None = Field(
        default=None,
        description="Determined's section; its pool names set the two fields above.",
    )
    token_lifetime: Duration = Field(
        default=timedelta(days=7), description="How long a login token stays valid."
    )
    agent_ping_interval: Duration = Field(
        default=timedelta(seconds=5), description="How often the master pings each agent."
    )
    agent_ping_timeout: Duration = Field(
        default=timedelta(seconds=20),
        description="Silence after which an agent's connection counts as lost.",
    )
    agent_reconnect_wait: Duration = Field(
        default=timedelta(seconds=20),
        description=(
            "How long the tasks of a disconnected agent (or, after a master restart, of an agent "
            "not yet back) wait for it to reconnect before they fail."
        ),
    )
    db_unavailable_wait: Duration = Field(
        default=timedelta(seconds=60),
        description=(
            "How long a new database transaction waits for a database it cannot reach (a "
            "PostgreSQL restart) before it fails; requests that fail so are answered 503."
        ),
    )
    master_unreachable_timeout: Duration = Field(
        default=MASTER_UNREACHABLE_TIMEOUT,
        description=(
            "How long a task's harness keeps retrying a report the master did not answer "
            "(it is down or unreachable) before the task gives up; training goes on meanwhile. "
            "Passed to every task as `DET_MASTER_UNREACHABLE_TIMEOUT` (seconds)."
        ),
    )
    shell_idle_timeout: OptionalDuration = Field(
        default=timedelta(hours=1),
        description=(
            "Kill a shell after this long with no open SSH session and no proxied traffic, "
            "freeing its slots; `off` keeps idle shells. A shell's `idle_timeout` overrides it."
        ),
    )
    notebook_idle_timeout: OptionalDuration = Field(
        default=timedelta(hours=1),
        description=(
            "Kill a notebook after this long with no proxied traffic and no busy kernel; `off` "
            "keeps idle notebooks. A notebook's `idle_timeout` overrides it."
        ),
    )
    tensorboard_timeout: OptionalDuration = Field(
        default=timedelta(minutes=5),
        description="Kill a TensorBoard after this long with no proxied traffic; `off`: never.",
    )
    tensorboard_dir: Path | None = Field(
        default=None,
        description=(
            "Shared directory where trials write TensorBoard event files, as "
            "`experiment/<id>/trial/<id>/`, and TensorBoards read them. Master and agents must "
            "see it at the same path. Unset: `<data_dir>/tensorboard`."
        ),
    )
    checkpoint_storage: CheckpointStorage | None = Field(
        default=None,
        description=(
            "Where trials keep checkpoints unless their experiment config says otherwise: "
            "`{type: shared_fs, host_path: …}`, `{type: s3, bucket: …}` or `{type: gcs, bucket: "
            "…}`. The master reads it too (checkpoint downloads, garbage collection). Unset: "
            "shared_fs at `<data_dir>/checkpoints`."
        ),
    )
    request_limits: RequestLimitsConfig = Field(
        default_factory=RequestLimitsConfig, description="Limits on request bodies."
    )
    login: LoginConfig = Field(
        default_factory=LoginConfig,
        description="Login rate limits and the password-checking threads.",
    )
    console_dir: Path | None = Field(
        default=None,
        description=(
            "The built web console the master serves at `/` (index.html and assets/). Unset: "
            "`console/dist` inside the master package, built by `npm ci && npm run build` in "
            "master/console."
        ),
    )
    log_level: str = Field(default="INFO", description="Python logging level of the master.")
    log: LogConfig | None = Field(
        default=None, description="Determined's section; `level` sets `log_level`."
    )
    logging: CloudWatchConfig | None = Field(
        default=None,
        description="Ship the master's logs (and optionally task logs) to CloudWatch Logs; "
        "unset: logs stay on stderr and task logs in the database. See docs/logging.md.",
    )
    spot_events: SpotEventsConfig | None = Field(
        default=None,
        description="Also read spot notices from an SQS queue fed by EventBridge, so an "
        "instance whose agent hangs is handled too; unset: agents' own notices only. See "
        "docs/spot.md.",
    )

    def _adopt(self, ours: str, value: str | None, theirs: str) -> None:
        """Take Determined's spelling ``theirs`` of the field ``ours`` unless both differ."""
        if value is None:
            return
        if ours in self.model_fields_set and getattr(self, ours) != value:
            raise ValueError(
                f"{ours} is {getattr(self, ours)!r} but {theirs} (Determined's name for it) is "
                f"{value!r}; give one of them"
            )
        setattr(self, ours, value)

    @model_validator(mode="after")
    def _pools_consistent(self) -> MasterConfig:
        if self.resource_manager is not None:
            rm = self.resource_manager
            self._adopt(
                "default_resource_pool",
                rm.default_compute_resource_pool,
                "resource_manager.default_compute_resource_pool",
            )
            self._adopt(
                "default_aux_resource_pool",
                rm.default_aux_resource_pool,
                "resource_manager.default_aux_resource_pool",
            )
        if self.log is not None:
            self._adopt("log_level", LOG_LEVELS[self.log.level], "log.level")
        names = [p.pool_name for p in self.resource_pools]
        if len(set(names)) != len(names):
            raise ValueError(f"resource_pools: duplicate pool_name in {names}")
        if self.default_resource_pool not in names:
            raise ValueError(
                f"default_resource_pool: {self.default_resource_pool!r} is not one of the "
                f"resource_pools {names}"
            )
        if self.default_aux_resource_pool not in (None, *names):
            raise ValueError(
                f"default_aux_resource_pool: {self.default_aux_resource_pool!r} is not one of "
                f"the resource_pools {names}"
            )
        return self

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser()

    @property
    def resolved_tensorboard_dir(self) -> Path:
        path = self.tensorboard_dir or self.resolved_data_dir / "tensorboard"
        return path.expanduser()

    @property
    def resolved_checkpoint_storage(self) -> CheckpointStorage:
        if self.checkpoint_storage is not None:
            return self.checkpoint_storage
        host_path = str((self.resolved_data_dir / "checkpoints").absolute())
        return SharedFSStorage(type="shared_fs", host_path=host_path)

    @property
    def aux_resource_pool(self) -> str:
        """Where a task that needs no slot goes when it names no pool."""
        return self.default_aux_resource_pool or self.default_resource_pool

    @property
    def database_url(self) -> str:
        url = self.db.resolved_url()
        if url:
            return url
        return f"sqlite:///{self.resolved_data_dir / 'flotilla.db'}"

    @property
    def master_url(self) -> str:
        if self.external_url:
            return self.external_url.rstrip("/")
        host = "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host
        return f"http://{host}:{self.port}"

    def join_token(self) -> str:
        """The configured join token, or the one generated for this data dir."""
        if self.agent_join_token:
            return self.agent_join_token
        path = self.resolved_data_dir / "agent-join-token"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()


class ConfigError(Exception):
    """A config file that cannot be used; the message names the field and what is allowed."""


def _field_path(loc: tuple[int | str, ...]) -> list[int | str]:
    """A validation error's location as the field path a user writes: pydantic puts the
    ``type`` of a pool's provider section (its union tag) after ``provider``; drop it."""
    path: list[int | str] = []
    for part in loc:
        if path and path[-1] == "provider" and part in get_args(ProviderType):
            continue
        path.append(part)
    return path


def format_validation_error(
    error: ValidationError, source: str, environ: Mapping[str, str] | None = None
) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        loc = _field_path(item["loc"])
        path = ".".join(str(part) for part in loc) or "(top level)"
        variable = ENV_PREFIX + "__".join(str(p) for p in loc).upper()
        origin = f" (from {variable})" if environ and variable in environ else ""
        lines.append(f"  {path}{origin}: {item['msg']}")
    return "\n".join(lines)


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``FLOTILLA_A__B=v`` as ``{"a": {"b": v}}``; JSON-looking values are parsed.

    Only variables naming a top-level setting count: ``FLOTILLA_HOME`` and the like belong to
    other tools sharing the prefix."""
    data: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = key[len(ENV_PREFIX) :].lower().split("__")
        if parts[0] not in MasterConfig.model_fields:
            continue
        parsed: Any = value
        if value.strip()[:1] in ("[", "{"):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parsed
    return data


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: Path | None = None, environ: Mapping[str, str] | None = None, **overrides: Any
) -> MasterConfig:
    """Read ``path`` (YAML) if given, then the environment, then ``overrides``; validate."""
    data: dict[str, Any] = {}
    source = "environment"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        data.update(loaded)
    environ = os.environ if environ is None else environ
    data = _merge(data, env_overrides(environ))
    data = _merge(data, overrides)
    try:
        return MasterConfig(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, environ)) from exc
