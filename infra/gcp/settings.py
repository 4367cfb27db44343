"""What ``det deploy gcp up`` was asked for: the flags, validated once, with every default here.

Names follow Determined's ``det deploy gcp`` where it has the flag (``--cluster-id``,
``--project-id`` as ``--project``, ``--region``, ``--zone``, ``--master-machine-type``,
``--agent-machine-type``, ``--gpu-type``, ``--gpu-num``, ``--max-dynamic-agents``,
``--preemptible``, ``--network``, ``--subnetwork``); the CLI builds :class:`GcpDeploySettings`
from them and the program reads nothing else.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infra.common.validation import cidr_block

# The cluster id names the stack and prefixes GCP names. The tightest limits: service account
# ids (6-30 characters: "fl-<id>-master") and the bucket "flotilla-<id>-<project id>" (63).
CLUSTER_ID = re.compile(r"^[a-z][a-z0-9-]{0,18}[a-z0-9]$|^[a-z]$")
CLUSTER_ID_RULE = (
    "1 to 20 lowercase letters, digits and hyphens, starting with a letter and not ending with "
    "a hyphen"
)
# "The project ID must be 6 to 30 lowercase ASCII letters, digits, or hyphens. It must start
# with a letter. Trailing hyphens are prohibited." (Resource Manager documentation)
PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
DB_TIER = re.compile(r"^db-(f1-micro|g1-small|custom-[0-9]+-[0-9]+|[a-z0-9-]+)$")
WORLD_CIDRS = ("0.0.0.0/0", "::/0")
DEFAULT_MASTER_PORT = 8080
DB_PORT = 5432
POOL_NAME = "gcp"
DEFAULT_ZONE_SUFFIX = "b"  # every GCP region has a zone "b"; not every one has an "a"
# The image family `--image` defaults to: images with det-master and det-agent baked in.
IMAGE_FAMILY = "flotilla-agent"


class GcpDeploySettings(BaseModel):
    """One GCP deployment's settings (``det deploy gcp up`` flags)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster_id: str = Field(description="The stack's name and the label on everything it makes.")
    project: str = Field(description="GCP project id everything is created in.")
    region: str = Field(default="us-central1", description="GCP region, e.g. us-central1.")
    zone: str | None = Field(
        default=None,
        description="Zone of the master and the agents; unset: the region's zone b.",
    )
    inbound_cidr: str = Field(
        description="Who may reach the master's port; 0.0.0.0/0 is allowed with a warning."
    )
    ssh_cidr: str | None = Field(default=None, description="Who may SSH in; unset: nobody.")
    image: str | None = Field(
        default=None,
        description=(
            "Image with det-master and det-agent; unset: the newest of the project's "
            f"`{IMAGE_FAMILY}` family built by agent_image/."
        ),
    )
    master_machine_type: str = Field(default="e2-standard-2", description="The master's type.")
    master_disk_gb: int = Field(default=50, ge=10, description="The master's boot disk, GB.")
    agent_machine_type: str = Field(default="n1-standard-4", description="The agents' type.")
    gpu_type: str | None = Field(
        default="nvidia-tesla-t4", description="GPU on each agent; none with gpu_num 0."
    )
    gpu_num: int = Field(default=1, ge=0, description="GPUs per agent.")
    max_dynamic_agents: int = Field(default=5, ge=0, description="Most agents at once.")
    spot: bool = Field(default=False, description="Agents on Spot VMs first.")
    db: Literal["cloudsql", "local"] = Field(
        default="cloudsql",
        description="`cloudsql`: PostgreSQL on Cloud SQL (private IP); `local`: on the master.",
    )
    db_tier: str = Field(default="db-custom-1-3840", description="The Cloud SQL machine tier.")
    db_disk_gb: int = Field(default=20, ge=10, description="Cloud SQL storage, GB (SSD).")
    network: str | None = Field(
        default=None, description="Use this VPC network (name) instead of a new one."
    )
    subnetwork: str | None = Field(
        default=None, description="With network: the subnetwork (name) in the region."
    )
    subnet_cidr: str = Field(default="10.20.0.0/20", description="The new subnetwork's range.")
    master_port: int = Field(default=DEFAULT_MASTER_PORT, ge=1, le=65535, description="Port.")

    @field_validator("cluster_id")
    @classmethod
    def _cluster_id(cls, value: str) -> str:
        if len(value) > 20 or not CLUSTER_ID.match(value):
            raise ValueError(f"{value!r} is not a cluster id: use {CLUSTER_ID_RULE}")
        return value

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if not PROJECT_ID.match(value):
            raise ValueError(
                f"{value!r} is not a GCP project id: 6 to 30 lowercase letters, digits and "
                "hyphens, starting with a letter"
            )
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not REGION.match(value):
            raise ValueError(f"{value!r} is not a GCP region like us-central1")
        return value

    @field_validator("db_tier")
    @classmethod
    def _tier(cls, value: str) -> str:
        if not DB_TIER.match(value):
            raise ValueError(
                f"{value!r} is not a Cloud SQL tier like db-custom-1-3840 or db-g1-small"
            )
        return value

    @field_validator("inbound_cidr", "ssh_cidr", "subnet_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        return cidr_block(value)

    @model_validator(mode="after")
    def _consistent(self) -> GcpDeploySettings:
        if self.zone is not None and (
            not ZONE.match(self.zone) or not self.zone.startswith(self.region + "-")
        ):
            raise ValueError(f"zone: {self.zone!r} is not a zone of region {self.region}")
        if bool(self.network) != bool(self.subnetwork):
            raise ValueError("network and subnetwork go together: give both or neither")
        if self.gpu_num > 0 and not self.gpu_type:
            raise ValueError("gpu_type: required with gpu_num > 0, e.g. nvidia-tesla-t4")
        return self

    @property
    def agent_zone(self) -> str:
        return self.zone or f"{self.region}-{DEFAULT_ZONE_SUFFIX}"

    @property
    def agent_gpu_type(self) -> str | None:
        """The agents' GPU, or None when they have none (``--gpu-num 0``)."""
        return self.gpu_type if self.gpu_num > 0 else None

    @property
    def inbound_is_world(self) -> bool:
        return self.inbound_cidr in WORLD_CIDRS

    def name(self, suffix: str) -> str:
        """A GCP resource name: ``flotilla-<cluster id>-<suffix>``."""
        return f"flotilla-{self.cluster_id}-{suffix}"

    @property
    def master_tag(self) -> str:
        """The network tag firewall rules target the master by."""
        return self.name("master")

    @property
    def agent_tag(self) -> str:
        return self.name("agent")

    @property
    def bucket(self) -> str:
        """Globally unique per project and cluster; at most 9 + 20 + 1 + 30 = 60 characters."""
        return f"flotilla-{self.cluster_id}-{self.project}"
