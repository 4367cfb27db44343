"""What ``det deploy aws up`` was asked for: the flags, validated once, with every default here.

Names follow Determined's ``det deploy aws`` where it has the flag (``--cluster-id``,
``--keypair``, ``--master-instance-type``, ``--agent-instance-type``, ``--max-dynamic-agents``,
``--inbound-cidr``, ``--spot``, ``--spot-max-price``, ``--db-instance-type``); the CLI builds
:class:`AwsDeploySettings` from them and the program reads nothing else.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.cloudwatch.config import DEFAULT_RETENTION_DAYS, RETENTION_DAYS
from infra.common.validation import cidr_block

# The cluster id names the stack and prefixes AWS names; the tightest is the checkpoint bucket,
# "flotilla-<id>-<12-digit account>-<region>" within S3's 63 characters, lowercase.
CLUSTER_ID = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
CLUSTER_ID_RULE = "1 to 20 lowercase letters, digits and hyphens, starting with a letter"
WORLD_CIDRS = ("0.0.0.0/0", "::/0")
DEFAULT_MASTER_PORT = 8080
DB_PORT = 5432
POOL_NAME = "aws"


class AwsDeploySettings(BaseModel):
    """One AWS deployment's settings (``det deploy aws up`` flags)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster_id: str = Field(description="The stack's name and the tag on everything it makes.")
    region: str = Field(description="AWS region, e.g. us-east-1.")
    inbound_cidr: str = Field(
        description="Who may reach the master's port; 0.0.0.0/0 is allowed with a warning."
    )
    ssh_cidr: str | None = Field(default=None, description="Who may SSH in; unset: nobody.")
    keypair: str | None = Field(default=None, description="EC2 key pair for master and agents.")
    image_id: str | None = Field(
        default=None,
        description="AMI with det-master and det-agent; unset: the newest built by agent_image/.",
    )
    master_instance_type: str = Field(default="t3.medium", description="The master's type.")
    master_root_gb: int = Field(default=30, ge=8, description="The master's root volume, GiB.")
    agent_instance_type: str = Field(default="g4dn.xlarge", description="The agents' type.")
    max_dynamic_agents: int = Field(default=5, ge=0, description="Most agents at once.")
    spot: bool = Field(default=False, description="Agents on spot first.")
    spot_max_price: float | None = Field(
        default=None, gt=0, description="Highest spot price, $/hour; unset: on-demand."
    )
    db: Literal["rds", "local"] = Field(
        default="rds", description="`rds`: PostgreSQL on RDS; `local`: on the master instance."
    )
    db_instance_type: str = Field(default="db.t3.micro", description="The RDS instance class.")
    db_storage_gb: int = Field(default=20, ge=20, description="RDS storage, GiB (gp3).")
    db_backup_days: int = Field(default=7, ge=1, le=35, description="RDS backup retention.")
    vpc_id: str | None = Field(default=None, description="Use this VPC instead of a new one.")
    subnet_ids: tuple[str, ...] = Field(
        default=(),
        description="With vpc_id: subnets (two zones); master and agents use the first.",
    )
    master_port: int = Field(default=DEFAULT_MASTER_PORT, ge=1, le=65535, description="Port.")
    log_retention_days: int = Field(
        default=DEFAULT_RETENTION_DAYS, description="Days CloudWatch keeps the cluster's logs."
    )

    @field_validator("cluster_id")
    @classmethod
    def _cluster_id(cls, value: str) -> str:
        if not CLUSTER_ID.match(value):
            raise ValueError(f"{value!r} is not a cluster id: use {CLUSTER_ID_RULE}")
        return value

    @field_validator("inbound_cidr", "ssh_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        return cidr_block(value)

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in RETENTION_DAYS:
            allowed = ", ".join(map(str, RETENTION_DAYS))
            raise ValueError(f"{value} is not a CloudWatch retention; one of {allowed}")
        return value

    @model_validator(mode="after")
    def _network(self) -> AwsDeploySettings:
        if bool(self.vpc_id) != bool(self.subnet_ids):
            raise ValueError("vpc_id and subnet_ids go together: give both or neither")
        if self.vpc_id and self.db == "rds" and len(self.subnet_ids) < 2:
            raise ValueError("subnet_ids: RDS needs subnets in at least two zones; give two")
        if self.spot_max_price is not None and not self.spot:
            raise ValueError("spot_max_price: only with spot")
        return self

    @property
    def inbound_is_world(self) -> bool:
        return self.inbound_cidr in WORLD_CIDRS

    @property
    def log_group(self) -> str:
        return f"/flotilla/{self.cluster_id}"
