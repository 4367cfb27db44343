"""The agent's configuration: one pydantic model, and how it is assembled from its sources.

Sources, lowest precedence first: the model's defaults, the YAML file given with ``--config``,
environment variables ``DET_AGENT_<FIELD>`` (e.g. ``DET_AGENT_JOIN_TOKEN``), then command-line
flags. Every default is defined here, once. A config that does not validate raises
:class:`ConfigError` whose message is a single line naming the field, where its value came
from, and what is allowed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.cloudwatch.config import CloudWatchConfig
from agent.isolation import parse_uid_range
from agent.protocol import AGENT_WS_PATH
from harness.units import Seconds

ENV_PREFIX = "DET_AGENT_"
# Root's default work dirs: task uids must reach them, so not under /var/lib/flotilla, the
# master's usual data_dir (0700).
ROOT_WORK_BASE = Path("/var/lib/flotilla-agent")


class AgentConfig(BaseModel):
    """Everything ``det-agent`` needs to join a master and run allocations.

    ``agent_id`` and ``work_dir`` are filled in by validation when left empty (hostname;
    ``/var/lib/flotilla-agent/<agent_id>`` for root, else ``~/.flotilla/agent/<agent_id>``);
    use :attr:`work_path` to read the latter and :attr:`uid_range` for ``task_uid_range``.
    """

    model_config = ConfigDict(extra="forbid")

    master_url: str = Field(
        default="http://127.0.0.1:8080",
        description="The master's base URL, http:// or https://; the agent connects its WebSocket "
        "to the same host with ws:// or wss:// and the path " + AGENT_WS_PATH + ".",
    )
    join_token: str = Field(
        min_length=1,
        description="Cluster join token, sent as 'Authorization: Bearer <token>'. Also read from "
        "DET_AGENT_JOIN_TOKEN; never passed on to tasks.",
    )
    agent_id: str = Field(
        default="",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$",
        max_length=255,
        description="This agent's unique name in the cluster; empty means the hostname.",
    )
    resource_pool: str = Field(
        default="default", min_length=1, description="The resource pool this agent joins."
    )
    slots: int | None = Field(
        default=1,
        ge=1,
        description="Number of CPU slots to offer when no GPU is used; null means one per CPU "
        "core. Ignored when GPUs are detected.",
    )
    no_gpu: bool = Field(
        default=False, description="Offer CPU slots even if nvidia-smi finds GPUs."
    )
    work_dir: Path | None = Field(
        default=None,
        description="Directory holding one working directory per allocation; defaults to "
        "/var/lib/flotilla-agent/<agent_id> when the agent runs as root (task uids must reach "
        "it), else ~/.flotilla/agent/<agent_id>.",
    )
    isolation: Literal["auto", "uid", "none"] = Field(
        default="auto",
        description="How tasks are kept apart. uid: each task runs as its own unprivileged uid "
        "from task_uid_range in a 0700 work dir (needs root, and the agent's Python and work_dir "
        "reachable by other uids); the agent refuses to start if that cannot work. none: tasks "
        "run as the agent's user and can read each other's environment and files (fine for a "
        "one-person local cluster only). auto: uid when possible, otherwise none with a warning "
        "saying why.",
    )
    task_uid_range: str = Field(
        default="20000-29999",
        description="Uids handed to tasks under isolation uid, '<first>-<last>' inclusive; one "
        "per running allocation (gid = uid). They need no passwd entry and must not be used by "
        "anything else on the machine, the agent's own uid included.",
    )
    reconnect_initial_backoff: Seconds = Field(
        default=0.5, gt=0, description="First delay before reconnecting to the master."
    )
    reconnect_max_backoff: Seconds = Field(
        default=10.0,
        gt=0,
        description="Longest delay between reconnection attempts (the delay doubles, with jitter).",
    )
    reconnect_give_up_after: Seconds = Field(
        default=600.0,
        gt=0,
        description="Seconds without a connection to the master after which the agent runs "
        "connection_lost_hook and exits with code 3.",
    )
    connection_lost_hook: str | None = Field(
        default=None,
        description="Shell command run once when the agent gives up on the master, e.g. "
        "'sudo shutdown -h now' on a cloud instance.",
    )
    kill_grace_period: Seconds = Field(
        default=10.0,
        ge=0,
        description="Seconds between SIGTERM to an allocation's process group and SIGKILL.",
    )
    log_batch_interval: Seconds = Field(
        default=0.2,
        gt=0,
        description="Seconds the agent may hold task log lines before sending them; the "
        "master's welcome message overrides it.",
    )
    metadata_url: str = Field(
        default="http://169.254.169.254",
        description="Base URL of the instance metadata service the agent watches for spot "
        "interruption notices (AWS IMDSv2 and GCP both answer on the link-local address). "
        "Where nothing answers, the watch stops after one log line.",
    )
    metadata_service: Literal["auto", "aws", "gcp", "off"] = Field(
        default="auto",
        description="Which metadata service to watch at metadata_url: auto asks which one "
        "answers; off never watches. See docs/spot.md.",
    )
    logging: CloudWatchConfig | None = Field(
        default=None,
        description="Ship the agent's own logs to CloudWatch Logs, spooled on disk until "
        "delivered; unset: stderr only. See docs/logging.md.",
    )

    @field_validator("master_url")
    @classmethod
    def _check_master_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL with a host; got {value!r}")
        return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))

    @field_validator("metadata_url")
    @classmethod
    def _check_metadata_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL with a host; got {value!r}")
        return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))

    @field_validator("task_uid_range")
    @classmethod
    def _check_uid_range(cls, value: str) -> str:
        first, last = parse_uid_range(value)
        if first <= os.getuid() <= last:
            raise ValueError(
                f"{value!r} holds the agent's own uid {os.getuid()}; pick uids no one uses"
            )
        return f"{first}-{last}"

    @model_validator(mode="after")
    def _fill_defaults_and_check_backoff(self) -> AgentConfig:
        if not self.agent_id:
            self.agent_id = socket.gethostname()
        if self.work_dir is None:
            base = ROOT_WORK_BASE if os.geteuid() == 0 else Path.home() / ".flotilla" / "agent"
            self.work_dir = base / self.agent_id
        self.work_dir = self.work_dir.expanduser()
        if self.reconnect_max_backoff < self.reconnect_initial_backoff:
            raise ValueError(
                "reconnect_max_backoff must be >= reconnect_initial_backoff "
                f"({self.reconnect_max_backoff} < {self.reconnect_initial_backoff})"
            )
        return self

    @property
    def work_path(self) -> Path:
        assert self.work_dir is not None  # filled in by validation
        return self.work_dir

    @property
    def uid_range(self) -> tuple[int, int]:
        return parse_uid_range(self.task_uid_range)

    @property
    def ws_url(self) -> str:
        """The agent WebSocket URL: http→ws, https→wss, plus the protocol's path."""
        parts = urlsplit(self.master_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + AGENT_WS_PATH, "", ""))

    @property
    def master_host(self) -> str | None:
        return urlsplit(self.master_url).hostname


class ConfigError(Exception):
    """A config that cannot be used; ``str()`` is one line fit for the user."""


def env_values(environ: Mapping[str, str]) -> dict[str, str]:
    """``DET_AGENT_<FIELD>`` variables that name a config field. Others are ignored, so the
    ``DET_AGENT_ID`` the agent itself sets for tasks never confuses a nested agent."""
    values = {}
    for name, value in environ.items():
        field = name[len(ENV_PREFIX) :].lower()
        if name.startswith(ENV_PREFIX) and field in AgentConfig.model_fields:
            values[field] = value
    return values


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        detail = " ".join(str(e).split())
        raise ConfigError(f"config file {path} is not valid YAML: {detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of field: value")
    return data


def load_config(
    path: Path | None,
    overrides: Mapping[str, object],
    environ: Mapping[str, str],
) -> AgentConfig:
    """Merge file < environment < ``overrides`` (flags; ``None`` values are unset) and validate."""
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for source, layer in (
        (str(path), read_config_file(path) if path else {}),
        ("env", env_values(environ)),
        ("flag", {k: v for k, v in overrides.items() if v is not None}),
    ):
        for key, value in layer.items():
            values[key] = value
            sources[key] = source
    try:
        return AgentConfig.model_validate(values)
    except ValidationError as e:
        raise ConfigError(describe_errors(e, sources)) from None


def describe_errors(error: ValidationError, sources: Mapping[str, str]) -> str:
    """One line: ``field (from <source>): <what is wrong>`` for each error, joined by ``; ``."""
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "config"
        source = sources.get(str(item["loc"][0])) if item["loc"] else None
        if source == "env":
            where = f" (from {ENV_PREFIX}{field.upper()})"
        elif source == "flag":
            where = f" (from --{field.replace('_', '-')})"
        elif source:
            where = f" (from {source})"
        else:
            where = ""
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field; allowed: " + ", ".join(AgentConfig.model_fields)
        elif item["type"] == "missing":
            message = "required"
            if field == "join_token":
                message += (
                    " (set join_token in the config file, --join-token or DET_AGENT_JOIN_TOKEN)"
                )
        elif "input" in item and item["type"] not in ("value_error",):
            message += f", got {item['input']!r}"
        parts.append(f"{field}{where}: {message}")
    return "invalid agent config: " + "; ".join(parts)
