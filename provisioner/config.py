"""A resource pool's ``provider`` section (Determined's field names), validated once.

Defaults live here only; the reference page is generated from these models.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.units import Duration, OptionalDuration


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpotFallbackPolicy(StrEnum):
    SPOT_ONLY = "spot_only"
    SPOT_THEN_ON_DEMAND = "spot_then_on_demand"
    ON_DEMAND = "on_demand"


class RebalancePolicy(StrEnum):
    IGNORE = "ignore"
    REPLACE = "replace"
    MIGRATE = "migrate"


class SpotFallback(_Section):
    policy: SpotFallbackPolicy = Field(
        default=SpotFallbackPolicy.SPOT_THEN_ON_DEMAND,
        description=(
            "With `spot: true`: `spot_only` never buys on-demand; `spot_then_on_demand` buys "
            "on-demand once every spot offer has been unavailable for `delay`; `on_demand` "
            "ignores spot."
        ),
    )
    delay: Duration = Field(
        default=timedelta(minutes=2),
        description="How long spot must be unavailable before falling back to on-demand.",
    )


class CapacityBackoff(_Section):
    initial: Duration = Field(
        default=timedelta(minutes=1),
        description="How long an offer that hit a capacity error is skipped the first time.",
    )
    max: Duration = Field(
        default=timedelta(minutes=30), description="The cap of the doubling backoff."
    )


class Tag(_Section):
    key: str
    value: str


class NetworkInterface(_Section):
    subnet_id: str | None = Field(default=None, description="Subnet (and so zone) to launch in.")
    security_group_id: str | None = Field(default=None, description="Security group id.")
    public_ip: bool = Field(default=True, description="Give instances a public address.")


class ProviderConfig(_Section):
    """How a pool's instances are launched and when they are terminated."""

    type: Literal["local", "aws"] = Field(description="`local` agent processes, or AWS EC2.")
    instance_type: str = Field(
        default="local", description="EC2 instance type (e.g. `g5.xlarge`); `local` for local."
    )
    instance_slots: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Slots per instance. Default: the GPUs of the EC2 instance type (from the price "
            "table), 1 for local."
        ),
    )
    min_instances: int = Field(default=0, ge=0, description="Never fewer instances than this.")
    max_instances: int = Field(default=5, ge=0, description="Never more instances than this.")
    max_idle_agent_period: OptionalDuration = Field(
        default=timedelta(minutes=20),
        description="An agent idle this long is drained, then terminated; `off` keeps it.",
    )
    max_agent_starting_period: Duration = Field(
        default=timedelta(minutes=20),
        description="An instance whose agent has not joined within this is terminated.",
    )
    max_disconnected_period: Duration = Field(
        default=timedelta(minutes=5),
        description="An instance whose agent has been disconnected this long is terminated.",
    )
    spot: bool = Field(default=False, description="Launch spot instances first.")
    spot_max_price: float | None = Field(
        default=None, gt=0, description="Highest spot price to pay, $/hour; default on-demand."
    )
    spot_fallback: SpotFallback = Field(default_factory=SpotFallback)
    rebalance: RebalancePolicy = Field(
        default=RebalancePolicy.REPLACE,
        description="On an AWS rebalance recommendation (an instance at elevated risk of "
        "interruption): `ignore` it; `replace` launches a replacement at once and places "
        "nothing new on the instance; `migrate` also asks its trials to checkpoint and move. "
        "See docs/spot.md.",
    )
    capacity_backoff: CapacityBackoff = Field(default_factory=CapacityBackoff)
    provisioning_tick: Duration = Field(
        default=timedelta(seconds=10),
        description="How often the pool is re-examined when nothing wakes it earlier.",
    )
    image_id: str | None = Field(default=None, description="AMI with the agent baked in.")
    startup_script: str = Field(default="", description="Shell run on boot before the agent.")
    tag_key: str = Field(default="flotilla-pool", description="Tag marking managed instances.")
    tag_value: str | None = Field(
        default=None, description="Its value; default `<cluster id>/<pool name>`."
    )
    custom_tags: list[Tag] = Field(default_factory=list, description="Extra tags on everything.")
    ssh_key_name: str | None = Field(default=None, description="EC2 key pair for SSH access.")
    iam_instance_profile_arn: str | None = Field(default=None, description="Instance profile.")
    network_interface: NetworkInterface = Field(default_factory=NetworkInterface)
    root_volume_size: int = Field(default=200, ge=8, description="Root volume size in GiB.")
    region: str | None = Field(default=None, description="AWS region; default from the SDK.")
    endpoint_url: str | None = Field(
        default=None, description="EC2 endpoint override (moto and other AWS-compatible APIs)."
    )
    prices: dict[str, float] = Field(
        default_factory=dict,
        description="On-demand $/hour per instance type, overriding the shipped price table.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ProviderConfig:
        if self.min_instances > self.max_instances:
            raise ValueError(
                f"min_instances ({self.min_instances}) is more than max_instances "
                f"({self.max_instances})"
            )
        if self.type == "aws":
            if self.image_id is None:
                raise ValueError("image_id: required for type aws (an AMI with the agent)")
            if self.instance_type == "local":
                raise ValueError("instance_type: name an EC2 instance type, e.g. g5.xlarge")
        return self
