"""A resource pool's ``provider`` section (Determined's field names), validated once.

Defaults live here only; the reference page is generated from these models.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from harness.units import (
    ALLOWED_DURATIONS,
    Duration,
    format_duration,
    parse_duration,
)


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
    key: str = Field(description="Tag key.")
    value: str = Field(description="Tag value.")


class NetworkInterface(_Section):
    subnet_id: str | None = Field(default=None, description="Subnet (and so zone) to launch in.")
    security_group_id: str | None = Field(default=None, description="Security group id.")
    public_ip: bool = Field(default=True, description="Give instances a public address.")


AUTO: Literal["auto"] = "auto"


def parse_idle_period(value: object) -> timedelta | str | None:
    """``auto`` (break-even, learned per pool), a duration, or ``off``."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(
            f"invalid max_idle_agent_period {value!r}: expected 'auto', or {ALLOWED_DURATIONS}"
        ) from None


def format_idle_period(value: timedelta | str | None) -> str:
    return value if isinstance(value, str) else format_duration(value)


IdlePeriod = Annotated[
    Literal["auto"] | timedelta | None,
    BeforeValidator(parse_idle_period),
    PlainSerializer(format_idle_period, return_type=str),
]
"""``auto``, a duration (``30s``, ``20m``) or ``off``."""


ProviderType = Literal["local", "aws", "gcp"]


class ProviderConfig(_Section):
    """The fields every provider shares: how many instances, when they go, spot and its
    fallback, prices. A pool's ``provider`` section is one of the subclasses
    (``LocalProviderConfig``, ``AWSProviderConfig``, ``GCPProviderConfig``), chosen by
    ``type`` (see :data:`PoolProvider`); the decider and the loop read only these fields, so
    code that needs nothing else (the simulator, decider tests) may build this class itself
    with ``type: local``."""

    type: ProviderType = Field(
        description="`local` agent processes, AWS EC2 or GCP Compute Engine."
    )
    instance_slots: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Slots per instance. Default: the GPUs of the instance type (from the price "
            "table on AWS, `gpu_num` on GCP), 1 for local and CPU-only types."
        ),
    )
    min_instances: int = Field(default=0, ge=0, description="Never fewer instances than this.")
    max_instances: int = Field(default=5, ge=0, description="Never more instances than this.")
    max_idle_agent_period: IdlePeriod = Field(
        default=AUTO,
        description=(
            "An agent idle this long is drained, then terminated; `off` keeps it. `auto` keeps "
            "an idle agent while keeping it is expected to cost less than booting a new one "
            "when work comes (boot time × price plus the wait it saves), learned from the "
            "pool's recent arrivals and boot times (docs/design/provisioning-decider.md)."
        ),
    )
    # ---- the fleet's cost rules (issue 16), kept together; mixed types: AWS's instance_types
    max_cost_per_hour: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Never run instances costing more than this many $/hour together (spot at its "
            "current price); queued work then says `budget cap $X/h reached`. Default: no cap."
        ),
    )
    max_warm_cost_per_hour: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Keep or launch idle capacity for the work forecast to arrive within one boot "
            "time (recent arrivals and the same hour last week), spending at most this many "
            "$/hour on idle instances; 0 turns the warm pool off. Reasons name the forecast: "
            "`warm: 2 slots forecast for 14:00–14:04`."
        ),
    )
    boot_hedge: float = Field(
        default=1.0,
        ge=0,
        le=4,
        description=(
            "Race boots: launch this fraction more instances than the pending work needs, "
            "rounded up, start the work on the first agents to join and cancel the surplus "
            "still starting (billed up to the cloud's minimum charge). Boot times have a long "
            "tail, so 1 (one spare per instance) cuts the long waits; 0 turns it off."
        ),
    )
    # ---- end of the fleet's cost rules ----
    max_agent_starting_period: Duration = Field(
        default=timedelta(minutes=20),
        description="An instance whose agent has not joined within this is terminated.",
    )
    max_disconnected_period: Duration = Field(
        default=timedelta(minutes=5),
        description="An instance whose agent has been disconnected this long is terminated.",
    )
    spot: bool = Field(
        default=False,
        description="Launch spot instances first (GCP: Spot VMs; `preemptible` is an alias).",
    )
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
    startup_script: str = Field(default="", description="Shell run on boot before the agent.")
    prices: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "On-demand $/hour per instance type (AWS) or per machine type and GPU type (GCP), "
            "overriding the shipped price table."
        ),
    )

    @property
    def instance_type_name(self) -> str:
        """The instance type as one string, as offers, instances and the console name it."""
        return "local"

    @property
    def types(self) -> list[str]:
        """The pool's instance types by name: one, except in a mixed AWS pool."""
        return [self.instance_type_name]

    @model_validator(mode="after")
    def _consistent(self) -> ProviderConfig:
        if self.min_instances > self.max_instances:
            raise ValueError(
                f"min_instances ({self.min_instances}) is more than max_instances "
                f"({self.max_instances})"
            )
        if type(self) is ProviderConfig and self.type != "local":
            raise ValueError(
                f"type: a {self.type} pool's section is read as a whole resource pool "
                "provider (PoolProvider), not as the shared fields alone"
            )
        return self


class LocalProviderConfig(ProviderConfig):
    """Agent processes on the master's machine: the embedded default."""

    type: Literal["local"] = Field(description="`local` agent processes.")
    instance_type: Literal["local"] = Field(default="local", description="Always `local`.")


class AWSProviderConfig(ProviderConfig):
    """EC2 instances launched from an AMI with the agent baked in."""

    type: Literal["aws"] = Field(description="AWS EC2.")
    instance_type: str = Field(
        description="EC2 instance type, e.g. `g5.xlarge` (default: the first of `instance_types`)."
    )
    image_id: str = Field(description="AMI with the agent baked in.")
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
    instance_types: list[str] = Field(
        default_factory=list,
        description=(
            "Several instance types for one pool, e.g. `[g5.xlarge, g5.12xlarge]`: each job is "
            "fitted to the cheapest type, zone and market that holds its shape, and a type "
            "without capacity falls through to the next. Empty: `instance_type` alone."
        ),
    )

    @property
    def instance_type_name(self) -> str:
        return self.instance_type

    @property
    def types(self) -> list[str]:
        """The pool's instance types: ``instance_types``, or the one ``instance_type``."""
        return self.instance_types or [self.instance_type]

    @model_validator(mode="before")
    @classmethod
    def _first_of_instance_types(cls, data: Any) -> Any:
        """A mixed pool may name only ``instance_types``; ``instance_type`` is then the first."""
        if isinstance(data, dict) and "instance_type" not in data:
            types = data.get("instance_types")
            if isinstance(types, list) and types:
                data = {**data, "instance_type": types[0]}
        return data

    @model_validator(mode="after")
    def _mixed_types(self) -> AWSProviderConfig:
        if self.instance_types and self.instance_slots is not None:
            raise ValueError(
                "instance_slots: applies to one instance_type; with instance_types each type's "
                "slots come from the price table"
            )
        if len(set(self.instance_types)) != len(self.instance_types):
            raise ValueError(f"instance_types: each type once, got {self.instance_types}")
        if "local" in self.types:
            raise ValueError("instance_type: name an EC2 instance type, e.g. g5.xlarge")
        return self


# GCP's naming rules, quoted from the Compute Engine reference. Names: "The first character
# must be a lowercase letter, and all following characters must be a dash, lowercase letter, or
# digit, except the last character, which cannot be a dash" (at most 63). Label keys: start with
# a lowercase letter; keys and values only lowercase letters, digits, '_' and '-', at most 63.
GCP_NAME_MAX_CHARS = 63
GCP_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
GCP_LABEL_KEY_RE = re.compile(r"^[a-z][-_a-z0-9]{0,62}$")
GCP_LABEL_VALUE_RE = re.compile(r"^[-_a-z0-9]{0,63}$")
# Instance names are the prefix, then a 12-character suffix that makes them unique.
GCP_NAME_SUFFIX_CHARS = 12
GCP_NAME_PREFIX_MAX_CHARS = GCP_NAME_MAX_CHARS - GCP_NAME_SUFFIX_CHARS
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class GCPInstanceType(_Section):
    machine_type: str = Field(description="Machine type, e.g. `n1-standard-8`.")
    gpu_type: str | None = Field(
        default=None, description="GPU attached to each VM, e.g. `nvidia-tesla-t4`; none if unset."
    )
    gpu_num: int = Field(default=0, ge=0, description="GPUs of `gpu_type` per VM.")

    @model_validator(mode="after")
    def _gpus(self) -> GCPInstanceType:
        if self.gpu_type is not None and self.gpu_num == 0:
            raise ValueError(f"gpu_num: at least 1 with gpu_type {self.gpu_type!r}")
        if self.gpu_type is None and self.gpu_num > 0:
            raise ValueError("gpu_type: required with gpu_num, e.g. nvidia-tesla-t4")
        return self

    @property
    def name(self) -> str:
        """One string for offers and the console: ``n1-standard-8+1xnvidia-tesla-t4``."""
        if self.gpu_type is None:
            return self.machine_type
        return f"{self.machine_type}+{self.gpu_num}x{self.gpu_type}"


class GCPNetworkInterface(_Section):
    network: str = Field(
        default="global/networks/default",
        description="VPC network, e.g. `global/networks/default` or its full URL.",
    )
    subnetwork: str | None = Field(
        default=None,
        description="Subnetwork, e.g. `regions/us-central1/subnetworks/agents`; default: auto.",
    )
    external_ip: bool = Field(
        default=False, description="Give VMs an external address (else use Cloud NAT)."
    )


class GCPServiceAccount(_Section):
    email: str | None = Field(
        default=None, description="Service account the VMs run as; unset: none attached."
    )
    scopes: list[str] = Field(
        default_factory=lambda: [CLOUD_PLATFORM_SCOPE],
        description="OAuth scopes of the service account on the VMs.",
    )


class GCPProviderConfig(ProviderConfig):
    """Compute Engine VMs from an image with the agent baked in (Determined's GCP names).
    ``preemptible`` (Determined's name) is accepted for ``spot``."""

    type: Literal["gcp"] = Field(description="GCP Compute Engine.")
    project: str = Field(description="GCP project id the VMs are created in.")
    zone: str | None = Field(default=None, description="Zone, e.g. `us-central1-a`.")
    zones: list[str] = Field(
        default_factory=list,
        description=(
            "Several zones instead of `zone`: a capacity error in one moves the launch to the "
            "next in the same pass."
        ),
    )
    instance_type: GCPInstanceType = Field(description="Machine type and GPUs of each VM.")
    boot_disk_source_image: str = Field(
        description="Image with the agent baked in, e.g. `projects/p/global/images/flotilla-agent`."
    )
    boot_disk_size: int = Field(default=200, ge=10, description="Boot disk size in GB.")
    network_interface: GCPNetworkInterface = Field(default_factory=GCPNetworkInterface)
    network_tags: list[str] = Field(
        default_factory=list, description="Network tags on the VMs (firewall rules use them)."
    )
    service_account: GCPServiceAccount = Field(default_factory=GCPServiceAccount)
    label_key: str = Field(default="flotilla-pool", description="Label marking managed VMs.")
    label_value: str | None = Field(
        default=None, description="Its value; default `<cluster id>-<pool name>`, sanitised."
    )
    name_prefix: str = Field(
        default="flotilla-agent-",
        description=f"Prefix of VM names (at most {GCP_NAME_PREFIX_MAX_CHARS} characters).",
    )
    operation_timeout_period: Duration = Field(
        default=timedelta(minutes=5),
        description="A launch whose zone operation has not finished within this has failed.",
    )
    spot_prices: dict[str, float] = Field(
        default_factory=dict,
        description="Spot $/hour per machine type and GPU type, overriding the shipped table.",
    )
    endpoint_url: str | None = Field(
        default=None, description="Compute API endpoint override (tests' fake Compute API)."
    )

    @model_validator(mode="before")
    @classmethod
    def _preemptible(cls, data: Any) -> Any:
        if isinstance(data, dict) and "preemptible" in data:
            data = dict(data)
            preemptible = data.pop("preemptible")
            if "spot" in data and data["spot"] != preemptible:
                raise ValueError("preemptible: an alias of spot; set one of them")
            data["spot"] = preemptible
        return data

    @model_validator(mode="after")
    def _gcp_consistent(self) -> GCPProviderConfig:
        if self.zone is not None and self.zones:
            raise ValueError("zones: set zone or zones, not both")
        if self.zone is None and not self.zones:
            raise ValueError("zone: required (or zones: [...] to fail over across zones)")
        if len(set(self.all_zones)) != len(self.all_zones):
            raise ValueError(f"zones: listed twice in {self.zones}")
        prefix = self.name_prefix
        if (
            len(prefix) > GCP_NAME_PREFIX_MAX_CHARS
            or not prefix
            or not GCP_NAME_RE.match(prefix + "x")
        ):
            raise ValueError(
                f"name_prefix: {prefix!r} must start with a lowercase letter, hold only "
                f"lowercase letters, digits and '-', and be at most {GCP_NAME_PREFIX_MAX_CHARS} "
                "characters"
            )
        if not GCP_LABEL_KEY_RE.match(self.label_key):
            raise ValueError(
                f"label_key: {self.label_key!r} must start with a lowercase letter and hold only "
                "lowercase letters, digits, '_' and '-' (at most 63)"
            )
        if self.label_value is not None and not GCP_LABEL_VALUE_RE.match(self.label_value):
            raise ValueError(
                f"label_value: {self.label_value!r} may hold only lowercase letters, digits, "
                "'_' and '-' (at most 63)"
            )
        for tag in self.network_tags:
            if len(tag) > GCP_NAME_MAX_CHARS or not GCP_NAME_RE.match(tag):
                raise ValueError(
                    f"network_tags: {tag!r} must start with a lowercase letter and hold only "
                    "lowercase letters, digits and '-' (at most 63)"
                )
        for field_name, table in (("prices", self.prices), ("spot_prices", self.spot_prices)):
            for key, price in table.items():
                if price <= 0:
                    raise ValueError(f"{field_name}.{key}: must be positive; got {price}")
        return self

    @property
    def all_zones(self) -> list[str]:
        """The zones to launch in, in the configured order."""
        return list(self.zones) if self.zones else [self.zone] if self.zone else []

    @property
    def instance_type_name(self) -> str:
        return self.instance_type.name


PoolProvider = Annotated[
    LocalProviderConfig | AWSProviderConfig | GCPProviderConfig, Field(discriminator="type")
]
"""A pool's ``provider`` section: the model for its ``type``."""
