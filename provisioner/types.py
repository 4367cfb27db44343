"""The values that cross between the provisioning loop, the scale decider and the providers.

Everything here is immutable and plain: a snapshot goes into the decider, a decision comes out,
and providers speak in offers and instances. Times are aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Market(StrEnum):
    SPOT = "spot"
    ON_DEMAND = "on-demand"


class InstanceState(StrEnum):
    """What the cloud says about an instance (not whether its agent joined)."""

    PENDING = "pending"  # launch accepted, not running yet
    RUNNING = "running"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


class ErrorClass(StrEnum):
    """Why a cloud call failed, and so what the loop does next."""

    CAPACITY = "capacity"  # no capacity for this offer now: back off this offer, try the next
    QUOTA = "quota"  # account limit: back off every offer of this market
    THROTTLE = "throttle"  # rate limited: retry later, nothing wrong with the offer
    CONFIG = "config"  # bad image, subnet, permissions…: the pool is degraded until fixed
    TRANSIENT = "transient"  # anything else worth retrying


@dataclass(frozen=True)
class OfferKey:
    instance_type: str
    zone: str | None
    market: Market

    def __str__(self) -> str:
        where = f" in {self.zone}" if self.zone else ""
        return f"{self.instance_type} {self.market.value}{where}"


@dataclass(frozen=True)
class Offer:
    """Something a provider can launch: a shape in a zone on a market, at a price."""

    instance_type: str
    zone: str | None
    market: Market
    price_per_hour: float
    slots: int

    @property
    def key(self) -> OfferKey:
        return OfferKey(self.instance_type, self.zone, self.market)


@dataclass(frozen=True)
class Instance:
    """A machine the provider launched for a pool. ``agent_id`` is the agent it runs (the
    instance id on clouds), set once known. ``interruption`` says why the cloud took it back
    (e.g. "preempted by GCP"): its work is re-queued without spending a restart, and it is
    terminated."""

    id: str
    instance_type: str
    zone: str | None
    market: Market
    price_per_hour: float
    slots: int
    state: InstanceState
    launched_at: datetime
    agent_id: str | None = None
    interruption: str | None = None


@dataclass(frozen=True)
class AgentInfo:
    """An agent the scheduler knows for the pool, seen from the provisioner.

    ``idle_since`` is None while it runs work; ``disconnected_since`` is set while it is away.
    ``interrupting``: the cloud announced it reclaims the instance (spot notice, or a rebalance
    recommendation the pool acts on); its instance no longer counts as capacity.
    """

    agent_id: str
    instance_id: str | None
    slots: int
    idle_since: datetime | None
    draining: bool = False
    disconnected_since: datetime | None = None
    interrupting: bool = False


@dataclass(frozen=True)
class Demand:
    """Slots one job still waits for (already capped by its ``max_slots``).

    ``single_agent`` jobs must fit on one instance; others may span instances.
    """

    job_id: str
    slots: int
    single_agent: bool = True


@dataclass(frozen=True)
class Backoff:
    """An offer not to try before ``until`` after ``failures`` consecutive failures."""

    key: OfferKey
    until: datetime
    failures: int
    reason: str


@dataclass(frozen=True)
class PoolHistory:
    """What the pool saw recently, for the rules that learn (``max_idle_agent_period: auto``,
    the warm pool): when demand arrived and how many slots it asked for, oldest first, and how
    long recent instances took from launch to their agent joining, in seconds; ``since``: when
    the recording began (None: nothing recorded); ``same_hour_last_week``: slots that arrived
    in the hour starting a week before now (None until the pool has been watched that long).
    The loop keeps it bounded (``provisioner/history.py``)."""

    arrivals: tuple[tuple[datetime, int], ...] = ()
    boot_seconds: tuple[float, ...] = ()
    since: datetime | None = None
    same_hour_last_week: int | None = None


@dataclass(frozen=True)
class PoolSnapshot:
    pool: str
    pending: tuple[Demand, ...] = ()
    instances: tuple[Instance, ...] = ()
    agents: tuple[AgentInfo, ...] = ()
    offers: tuple[Offer, ...] = ()
    backoffs: tuple[Backoff, ...] = ()
    spot_unavailable_since: datetime | None = None
    history: PoolHistory = field(default_factory=PoolHistory)


@dataclass(frozen=True)
class Launch:
    offer: Offer
    count: int
    reason: str


@dataclass(frozen=True)
class Termination:
    instance_id: str
    reason: str


@dataclass(frozen=True)
class Drain:
    agent_id: str
    reason: str


@dataclass
class Decision:
    launches: list[Launch] = field(default_factory=list)
    terminations: list[Termination] = field(default_factory=list)
    drains: list[Drain] = field(default_factory=list)
    status: str = ""  # one line for the pool and its waiting tasks, e.g. "launching 2 × …"
    # True when the config wants spot and no spot offer is usable now (backed off, or dearer
    # than spot_max_price). The loop keeps PoolSnapshot.spot_unavailable_since from the first
    # pass that says so and clears it on the first pass that does not.
    spot_unavailable: bool = False


@dataclass(frozen=True)
class LaunchedInstance:
    id: str
    offer: Offer
    launched_at: datetime


@dataclass(frozen=True)
class TerminateResult:
    instance_id: str
    ok: bool
    message: str = ""


class ProviderError(Exception):
    """A cloud call failed; ``error_class`` says what the loop should do about it."""

    def __init__(self, error_class: ErrorClass, message: str, offer: OfferKey | None = None):
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.offer = offer


@dataclass(frozen=True)
class FailedLaunch:
    """A launch the cloud accepted, then refused (a GCP zone operation that ended in error).
    ``instance_id`` is the instance it would have been; None when none was named."""

    instance_id: str | None
    error: ProviderError
