"""``logging:`` in ``master.yaml`` and ``agent.yaml``: where the process ships its logs.

CloudWatch names, as the Logs API validates them: a log group name is 1-512 characters of
``[.-_/#A-Za-z0-9]``; a log stream name is 1-512 characters without ``:`` or ``*``; retention
is one of a fixed list of day counts (anything else is an ``InvalidParameterException``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# "Possible values are: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
# 1827, 2192, 2557, 2922, 3288, and 3653." (PutRetentionPolicy, retentionInDays)
RETENTION_DAYS: tuple[int, ...] = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731)
RETENTION_DAYS += (1096, 1827, 2192, 2557, 2922, 3288, 3653)
# LogGroupName: "max": 512, "min": 1, "pattern": "[\.\-_/#A-Za-z0-9]+"
MAX_LOG_GROUP_NAME = 512
LOG_GROUP_NAME = re.compile(r"^[.\-_/#A-Za-z0-9]+$")
# LogStreamName: "max": 512, "min": 1, "pattern": "[^:*]*"
MAX_LOG_STREAM_NAME = 512
FORBIDDEN_IN_STREAM_NAME = (":", "*")
# Room left in a stream name for the prefix: "agent/" or "task/" plus a 255-character id.
MAX_STREAM_PREFIX = MAX_LOG_STREAM_NAME - len("agent/") - 255

DEFAULT_GROUP_PREFIX = "/flotilla/"
DEFAULT_RETENTION_DAYS = 30


class CloudWatchConfig(BaseModel):
    """Ship this process's Python logging (and, on the master, task logs) to CloudWatch Logs.

    Streams in the group: ``<stream_prefix>master``, ``<stream_prefix>agent/<agent-id>`` and,
    with ``ship_task_logs``, ``<stream_prefix>task/<task-id>``. The database stays the store
    that serves ``det … logs``; CloudWatch is the copy that outlives instances.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["cloudwatch"] = Field(description="Where logs go; `cloudwatch` is the only kind.")
    log_group: str | None = Field(
        default=None,
        description="Log group name; unset means `/flotilla/<cluster-id>`, the id shown by "
        "`det master info` (agents ask the master for it). The master creates the group; "
        "master and agents must name the same group.",
    )
    region: str | None = Field(
        default=None,
        description="AWS region, e.g. `us-west-2`; unset means the AWS SDK's own lookup "
        "(`AWS_REGION`, `AWS_DEFAULT_REGION`, `~/.aws/config`).",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="CloudWatch Logs endpoint override (a VPC endpoint, or moto in tests).",
    )
    retention_days: int | None = Field(
        default=DEFAULT_RETENTION_DAYS,
        description="Days CloudWatch keeps events, set on the group by whoever creates it "
        "(the master, on every start). One of " + ", ".join(map(str, RETENTION_DAYS)) + "; "
        "null leaves the group's retention as it is (a new group never expires).",
    )
    stream_prefix: str = Field(
        default="",
        description="Prepended to every stream name, e.g. `prod/` gives `prod/master`, "
        "`prod/agent/<agent-id>`.",
    )
    ship_task_logs: bool = Field(
        default=False,
        description="Master only: also ship every task's log lines (its output and the "
        "master's lines about it) to `<stream_prefix>task/<task-id>`. Agents ignore it: their "
        "tasks' output already reaches the master.",
    )

    @field_validator("log_group")
    @classmethod
    def _check_log_group(cls, value: str | None) -> str | None:
        if value is not None and (
            len(value) > MAX_LOG_GROUP_NAME or not LOG_GROUP_NAME.match(value)
        ):
            raise ValueError(
                f"expected 1-{MAX_LOG_GROUP_NAME} characters of letters, digits and . - _ / #; "
                f"got {value!r}"
            )
        return value

    @field_validator("retention_days")
    @classmethod
    def _check_retention(cls, value: int | None) -> int | None:
        if value is not None and value not in RETENTION_DAYS:
            allowed = ", ".join(map(str, RETENTION_DAYS))
            raise ValueError(f"CloudWatch accepts only {allowed} (or null); got {value}")
        return value

    @field_validator("stream_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if any(c in value for c in FORBIDDEN_IN_STREAM_NAME) or len(value) > MAX_STREAM_PREFIX:
            raise ValueError(
                f"expected at most {MAX_STREAM_PREFIX} characters without ':' or '*'; got {value!r}"
            )
        return value

    def group_name(self, cluster_id: str) -> str:
        return self.log_group or f"{DEFAULT_GROUP_PREFIX}{cluster_id}"

    def master_stream(self) -> str:
        return f"{self.stream_prefix}master"

    def agent_stream(self, agent_id: str) -> str:
        return f"{self.stream_prefix}agent/{agent_id}"

    def task_stream(self, task_id: str) -> str:
        return f"{self.stream_prefix}task/{task_id}"
