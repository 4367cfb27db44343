"""Config of commands, shells, notebooks and TensorBoards: shared by CLI and master.

Defaults live here once. Unknown fields are rejected, and errors name the field path.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.determined_fields import inert
from harness.units import OptionalDuration

DEFAULT_PRIORITY = 42
PRIORITY_RANGE = (1, 99)
DESCRIPTION_CHARS = 60
# How long a task's harness retries a master that does not answer: master.yaml's
# master_unreachable_timeout defaults to it, and a task without DET_MASTER_UNREACHABLE_TIMEOUT
# uses it.
MASTER_UNREACHABLE_TIMEOUT = timedelta(minutes=10)


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResourcesConfig(_Config):
    slots: int = Field(default=1, ge=0, description="Slots (GPUs, or CPU slots) the task needs.")
    resource_pool: str | None = Field(
        default=None, description="Pool to run in; unset means the master's default pool."
    )
    priority: int = Field(
        default=DEFAULT_PRIORITY,
        ge=PRIORITY_RANGE[0],
        le=PRIORITY_RANGE[1],
        description="Lower numbers are scheduled first (1–99).",
    )


class EnvironmentConfig(_Config):
    environment_variables: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables; a list of `NAME=value` strings is accepted.",
    )

    @field_validator("environment_variables", mode="before")
    @classmethod
    def _from_list(cls, value: object) -> object:
        if isinstance(value, list):
            pairs: dict[str, str] = {}
            for item in value:
                name, sep, val = str(item).partition("=")
                if not sep or not name:
                    raise ValueError(f"expected NAME=value, got {item!r}")
                pairs[name] = val
            return pairs
        return value


class TaskEnvironment(EnvironmentConfig):
    """Environment variables, and Determined's container settings, accepted and inert here
    (tasks run as processes, not containers): see :mod:`harness.determined_fields`."""

    image: str | dict[str, str] | None = inert("environment.image")
    force_pull_image: bool | None = inert("environment.force_pull_image")
    registry_auth: dict[str, Any] | None = inert("environment.registry_auth")
    pod_spec: dict[str, Any] | None = inert("environment.pod_spec")
    add_capabilities: list[str] | None = inert("environment.add_capabilities")
    drop_capabilities: list[str] | None = inert("environment.drop_capabilities")
    ports: dict[str, int] | None = inert("environment.ports")
    proxy_ports: list[dict[str, Any]] | None = inert("environment.proxy_ports")


class CommandConfig(_Config):
    entrypoint: str | list[str] = Field(
        description=(
            "What to run. A string, or a one-element list, runs through `sh -c`; a longer list "
            "is a program and its arguments."
        )
    )
    description: str | None = Field(default=None, description="Shown in `det cmd list`.")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    environment: TaskEnvironment = Field(default_factory=TaskEnvironment)

    @field_validator("entrypoint")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        if not value or (isinstance(value, str) and not value.strip()):
            raise ValueError("must name a command to run")
        return value

    def argv(self) -> list[str]:
        if isinstance(self.entrypoint, str):
            return ["sh", "-c", self.entrypoint]
        if len(self.entrypoint) == 1:
            return ["sh", "-c", self.entrypoint[0]]
        return list(self.entrypoint)

    def default_description(self) -> str:
        shown = self.entrypoint if isinstance(self.entrypoint, str) else " ".join(self.entrypoint)
        if len(shown) > DESCRIPTION_CHARS:
            shown = shown[: DESCRIPTION_CHARS - 1] + "…"
        return f"Command ({shown})"


class ServiceConfig(_Config):
    """A shell, notebook or TensorBoard: an interactive task reached through the master's proxy."""

    description: str | None = Field(default=None, description="Shown in `det <kind> list`.")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    environment: TaskEnvironment = Field(default_factory=TaskEnvironment)
    idle_timeout: OptionalDuration = Field(
        default=None,
        description=(
            "Kill the task after this long without activity (proxied traffic, an open SSH "
            "session, a busy kernel), freeing its slots. Unset: the master's default for the "
            "kind (`shell_idle_timeout`, `notebook_idle_timeout`, `tensorboard_timeout`); "
            "`off`: never."
        ),
        json_schema_extra={"default_doc": "the master's default for the kind"},
    )

    def effective_idle_timeout(self, default: timedelta | None) -> timedelta | None:
        """This task's idle timeout: its own if set (``off`` included), else ``default``."""
        return self.idle_timeout if "idle_timeout" in self.model_fields_set else default


class TensorboardConfig(ServiceConfig):
    resources: ResourcesConfig = Field(
        default_factory=lambda: ResourcesConfig(slots=0),
        description="A TensorBoard needs no GPU: 0 slots unless asked.",
    )
