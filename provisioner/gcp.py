"""The GCP provider: launches, lists and deletes a pool's agent VMs on Compute Engine with
google-cloud-compute.

How Compute Engine really behaves, and what this module does about it:

- Mutations are asynchronous. ``instances.insert`` answers at once with a zone Operation; a
  stockout or quota refusal often arrives later, as that operation ending ``DONE`` with
  ``error.errors[].code`` (``ZONE_RESOURCE_POOL_EXHAUSTED``, ``QUOTA_EXCEEDED``), and nothing is
  created. The client's ``ExtendedOperation.result()`` would block, and polls through a
  ZoneOperations client built without our ``api_endpoint`` (so against Google, not the endpoint
  we were given). We never call it: ``launch`` reads each operation once, and operations still
  running are followed by ``failed_launches`` with our own ZoneOperations client on the same
  endpoint, once per provisioning pass. A launch whose operation outlives
  ``operation_timeout_period`` is written off (and its VM deleted, if one appeared).
- Idempotency. Every insert and delete carries a ``requestId`` (a UUID derived from the
  loop's client token); Compute answers a repeat within an hour with the first call's
  operation. VM names derive from the same token, so a retry after that hour meets
  ``alreadyExists`` for what it created, which counts as created.
- Spot. ``scheduling.provisioningModel=SPOT`` with ``instanceTerminationAction=DELETE``: a
  preempted VM is stopped (``STOPPING`` → ``TERMINATED``, ``lastStopTimestamp`` set, 30 s after
  the notice) and then deleted by GCP. Spot has no bid: ``spot_max_price`` is only the
  decider's cap on the table price. A Spot VM that is ``TERMINATED`` or ``STOPPING`` with a
  ``lastStopTimestamp`` was preempted (we never stop VMs, we delete them): it is listed with
  ``interruption="preempted by GCP"`` so the loop re-queues its work without spending a
  restart, and deletes it. (A Spot VM whose agent shut it down after losing the master
  looks the same; it is deleted either way.) One GCP deleted before a pass saw it is only
  "no longer listed"; telling those apart needs the ``compute.instances.preempted`` zone
  operations, which we do not read.
- GPUs cannot live-migrate: VMs with guest accelerators set ``onHostMaintenance=TERMINATE``.
- Listing uses ``instances.aggregatedList`` filtered by the pool's labels: every zone of the
  project in one paginated call. Deleted VMs vanish from lists at once; a VM being deleted is
  ``STOPPING`` for a while.
- Throttling: Compute rate-limits per project and method (403/429 ``rateLimitExceeded``); the
  client retries nothing for mutations, so it surfaces as THROTTLE and the loop waits.
- Credentials: Application Default Credentials in production; a plain ``http://``
  ``endpoint_url`` (the tests' fake) gets anonymous credentials, which also keeps real
  credentials off an unencrypted connection.

This module makes the calls; the Instance body, labels, names and error classification are
pure functions in ``provisioner.gcp_requests``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as google_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import compute_v1

from provisioner.config import GCPProviderConfig
from provisioner.gcp_prices import GCPPriceBook
from provisioner.gcp_requests import (
    LABEL_MARKET,
    LABEL_PRICE,
    as_provider_error,
    insert_body,
    instance_labels,
    instance_name,
    label_filter,
    operation_error,
    pool_labels,
    price_from_label,
    request_id,
)
from provisioner.prices import UnknownInstanceType
from provisioner.types import (
    ErrorClass,
    FailedLaunch,
    Instance,
    InstanceState,
    LaunchedInstance,
    Market,
    Offer,
    OfferKey,
    ProviderError,
    TerminateResult,
)

log = logging.getLogger(__name__)

# instances.aggregatedList maxResults: "Acceptable values are 0 to 500, inclusive."
LIST_PAGE_SIZE = 500
# Seconds one API call may take before the client gives up (the provisioning pass waits on it).
CALL_TIMEOUT_S = 60.0
PREEMPTED = "preempted by GCP"

_DONE = compute_v1.Operation.Status.DONE
# Instance.status values and what they mean for the decider. SUSPENDED/TERMINATED VMs (stopped
# by hand: we only delete) still hold disks and count as running, so their silent agents get
# them deleted by the disconnected/never-joined rules.
_STATES = {
    "PROVISIONING": InstanceState.PENDING,
    "STAGING": InstanceState.PENDING,
    "RUNNING": InstanceState.RUNNING,
    "REPAIRING": InstanceState.RUNNING,
    "STOPPING": InstanceState.RUNNING,
    "SUSPENDING": InstanceState.RUNNING,
    "SUSPENDED": InstanceState.RUNNING,
    "TERMINATED": InstanceState.RUNNING,
    "DEPROVISIONING": InstanceState.TERMINATING,
}
# A status this table does not know (Compute adds some now and then) is listed as running, so
# the never-joined and disconnected rules still end the VM: a VM we stopped listing would bill
# unseen.
_STOPPED = ("STOPPING", "TERMINATED", "DEPROVISIONING")


@dataclass
class _Pending:
    zone: str
    operation: str
    offer: Offer
    deadline: float  # monotonic


def _timestamp(text: str) -> datetime:
    """Compute's RFC 3339 timestamps ("2026-12-07T04:30:24.123-08:00") as aware UTC."""
    if not text:
        return datetime.now(UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _last(url: str) -> str:
    return url.rsplit("/", 1)[-1]


class GCPProvider:
    """A pool's VMs on Compute Engine (see the module docstring for how it behaves).

    Assumes ``config`` is a validated ``type: gcp`` section and ``startup_script`` was rendered
    by ``provisioner.user_data`` with ``cloud="gcp"``. Lists only VMs carrying all of the
    pool's labels, so it never sees (or deletes) anyone else's."""

    def __init__(
        self,
        config: GCPProviderConfig,
        pool: str,
        cluster_id: str,
        startup_script: str,
        prices: GCPPriceBook,
        credentials: Credentials | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.pool = pool
        self.cluster_id = cluster_id
        self.startup_script = startup_script
        self.prices = prices
        self.clock = clock
        self.labels = pool_labels(config, cluster_id, pool)
        options = ClientOptions(api_endpoint=config.endpoint_url) if config.endpoint_url else None
        if credentials is None and (config.endpoint_url or "").startswith("http://"):
            credentials = AnonymousCredentials()
        try:
            self.instances = compute_v1.InstancesClient(
                credentials=credentials, client_options=options
            )
            self.operations = compute_v1.ZoneOperationsClient(
                credentials=credentials, client_options=options
            )
        except auth_exceptions.DefaultCredentialsError as e:
            raise ValueError(
                "provider: no Google credentials found (Application Default Credentials: the "
                f"VM's service account, or GOOGLE_APPLICATION_CREDENTIALS): {e}"
            ) from None
        self._pending: dict[str, _Pending] = {}  # VM name → its insert operation, still running
        self._failed: list[FailedLaunch] = []

    # -- calls ---------------------------------------------------------------------------

    def _call(self, where: str, offer: OfferKey | None, fn: Callable[..., Any], **kw: Any) -> Any:
        try:
            return fn(timeout=CALL_TIMEOUT_S, **kw)
        except (google_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as e:
            raise as_provider_error(e, where, offer) from e

    # -- offers ----------------------------------------------------------------------------

    def offers(self) -> list[Offer]:
        """One offer per zone and market: Spot (when ``spot`` is on) and on-demand, at the
        price table's (or the pool's override) $/hour for the machine type plus its GPUs."""
        shape = self.config.instance_type
        try:
            slots = self.config.instance_slots or self.prices.slots(shape)
            on_demand = self.prices.price(shape, Market.ON_DEMAND)
            spot = self.prices.price(shape, Market.SPOT) if self.config.spot else None
        except UnknownInstanceType as e:
            raise ProviderError(ErrorClass.CONFIG, str(e)) from None
        offers = []
        for zone in self.config.all_zones:
            if spot is not None:
                offers.append(Offer(shape.name, zone, Market.SPOT, spot, slots))
            offers.append(Offer(shape.name, zone, Market.ON_DEMAND, on_demand, slots))
        return offers

    # -- launch ----------------------------------------------------------------------------

    def launch(self, offer: Offer, count: int, client_token: str) -> list[LaunchedInstance]:
        """``instances.insert`` for ``count`` VMs of ``offer`` in its zone, each with a request id
        and name derived from ``client_token``. Returns the VMs Compute accepted; raises the
        classified error when the first one is refused (at once, or by an operation already
        done). Refusals after some VMs were accepted, and operations that fail later, come
        back from ``failed_launches``."""
        if count < 1:
            raise ValueError(f"count must be at least 1; got {count}")
        if not client_token:
            raise ValueError("client_token must not be empty")
        assert offer.zone is not None
        labels = instance_labels(
            self.config, cluster_id=self.cluster_id, pool=self.pool, offer=offer
        )
        created: list[LaunchedInstance] = []
        for index in range(count):
            name = instance_name(self.config.name_prefix, client_token, index)
            body = insert_body(
                self.config,
                offer=offer,
                name=name,
                startup_script=self.startup_script,
                labels=labels,
            )
            request = compute_v1.InsertInstanceRequest(
                project=self.config.project,
                zone=offer.zone,
                instance_resource=body,
                request_id=request_id(client_token, index),
            )
            where = f"{offer.key}: insert {name}"
            try:
                operation = self._call(
                    where, offer.key, self.instances.insert_unary, request=request
                )
            except ProviderError as error:
                cause = error.__cause__
                if isinstance(cause, google_exceptions.Conflict):  # made by an earlier try
                    created.append(LaunchedInstance(name, offer, datetime.now(UTC)))
                    continue
                return self._refused(created, error)
            if operation.status == _DONE and operation.error.errors:
                errors = [{"code": e.code, "message": e.message} for e in operation.error.errors]
                return self._refused(created, operation_error(errors, where, offer.key))
            if operation.status != _DONE:
                deadline = self.clock() + self.config.operation_timeout_period.total_seconds()
                self._pending[name] = _Pending(offer.zone, operation.name, offer, deadline)
            created.append(LaunchedInstance(name, offer, datetime.now(UTC)))
        return created

    def _refused(
        self, created: list[LaunchedInstance], error: ProviderError
    ) -> list[LaunchedInstance]:
        if not created:
            raise error
        self._failed.append(FailedLaunch(None, error))
        return created

    def failed_launches(self) -> list[FailedLaunch]:
        """Launches accepted earlier that Compute has since refused: each still-running insert
        operation is read once (on our endpoint, never waiting), and those done with an error,
        or older than ``operation_timeout_period``, are returned once, with their VM's name.
        Operations that cannot be read now are tried again next time."""
        failed, self._failed = self._failed, []
        for name, pending in list(self._pending.items()):
            where = f"{pending.offer.key}: insert {name}"
            try:
                operation = self._call(
                    where,
                    pending.offer.key,
                    self.operations.get,
                    project=self.config.project,
                    zone=pending.zone,
                    operation=pending.operation,
                )
            except ProviderError as e:
                log.warning("pool %s: could not follow %s: %s", self.pool, name, e.message)
                continue
            if operation.status == _DONE:
                del self._pending[name]
                if operation.error.errors:
                    errors = [
                        {"code": e.code, "message": e.message} for e in operation.error.errors
                    ]
                    failed.append(
                        FailedLaunch(name, operation_error(errors, where, pending.offer.key))
                    )
            elif self.clock() > pending.deadline:
                del self._pending[name]
                timeout = self.config.operation_timeout_period
                message = f"{where}: operation {pending.operation} not done within {timeout}"
                self._delete(pending.zone, name, f"{name}-timeout")
                error = ProviderError(ErrorClass.TRANSIENT, message, pending.offer.key)
                failed.append(FailedLaunch(name, error))
        return failed

    # -- list ------------------------------------------------------------------------------

    def list_instances(self) -> list[Instance]:
        """One paginated ``aggregatedList`` over the project's zones, filtered by every label of
        the pool. Market and price come from the labels written at launch."""
        request = compute_v1.AggregatedListInstancesRequest(
            project=self.config.project,
            filter=label_filter(self.labels),
            max_results=LIST_PAGE_SIZE,
            return_partial_success=True,
        )

        def collect() -> list[compute_v1.Instance]:
            pager = self.instances.aggregated_list(request=request, timeout=CALL_TIMEOUT_S)
            return [i for _, scoped in pager for i in scoped.instances]

        try:
            raw = collect()
        except (google_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as e:
            raise as_provider_error(e, f"pool {self.pool}: listing instances", None) from e
        return [self._to_instance(i) for i in raw]

    def _to_instance(self, raw: compute_v1.Instance) -> Instance:
        labels = dict(raw.labels)
        spot = labels.get(LABEL_MARKET) == "spot" or raw.scheduling.provisioning_model == "SPOT"
        machine_type = _last(raw.machine_type)
        name = machine_type
        for accelerator in raw.guest_accelerators:
            gpu = _last(accelerator.accelerator_type)
            name = f"{machine_type}+{accelerator.accelerator_count}x{gpu}"
        market = Market.SPOT if spot else Market.ON_DEMAND
        try:
            slots = self.config.instance_slots or self.prices.slots(self.config.instance_type)
            price = (
                price_from_label(labels[LABEL_PRICE])
                if LABEL_PRICE in labels
                else self.prices.price(self.config.instance_type, market)
            )
        except (UnknownInstanceType, ValueError) as e:  # not ours to fix here: offers() says
            log.warning("pool %s: instance %s: %s", self.pool, raw.name, e)
            slots, price = self.config.instance_slots or 1, 0.0
        state = _STATES.get(raw.status, InstanceState.RUNNING)
        interruption = None
        if spot and raw.status in _STOPPED and raw.last_stop_timestamp:
            interruption, state = PREEMPTED, InstanceState.TERMINATING
        return Instance(
            id=raw.name,
            instance_type=name,
            zone=_last(raw.zone),
            market=market,
            price_per_hour=price,
            slots=slots,
            state=state,
            launched_at=_timestamp(raw.creation_timestamp),
            agent_id=raw.name,
            interruption=interruption,
        )

    # -- terminate -------------------------------------------------------------------------

    def terminate(self, instance_ids: list[str]) -> list[TerminateResult]:
        """``instances.delete`` each VM (in the zone the last list saw it; else every zone of
        the pool). A VM already gone is done. One result per id, in order; never raises."""
        zones = self._zones_of(instance_ids)
        results: dict[str, TerminateResult] = {}
        for name in dict.fromkeys(instance_ids):
            results[name] = self._delete_anywhere(name, zones.get(name))
        return [results[i] for i in instance_ids]

    def _zones_of(self, names: list[str]) -> dict[str, str]:
        try:
            listed = self.list_instances()
        except ProviderError as e:
            log.warning("pool %s: %s; deleting in every zone", self.pool, e.message)
            return {}
        wanted = set(names)
        return {i.id: i.zone for i in listed if i.id in wanted and i.zone}

    def _delete_anywhere(self, name: str, zone: str | None) -> TerminateResult:
        zones = [zone] if zone else self.config.all_zones
        outcomes = [self._delete(z, name, name) for z in zones]
        done = [o for o in outcomes if o.ok and o.message != "already gone"]
        if done:
            return done[0]
        failed = [o for o in outcomes if not o.ok]
        return failed[0] if failed else TerminateResult(name, True, "already gone")

    def _delete(self, zone: str, name: str, token: str) -> TerminateResult:
        request = compute_v1.DeleteInstanceRequest(
            project=self.config.project,
            zone=zone,
            instance=name,
            request_id=request_id(token, 0, f"delete/{zone}"),
        )
        try:
            operation = self.instances.delete_unary(request=request, timeout=CALL_TIMEOUT_S)
        except google_exceptions.NotFound:
            return TerminateResult(name, True, "already gone")
        except (google_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as e:
            return TerminateResult(
                name, False, as_provider_error(e, f"delete {name}", None).message
            )
        if operation.status == _DONE and operation.error.errors:
            codes = {e.code for e in operation.error.errors}
            if codes <= {"RESOURCE_NOT_FOUND"}:
                return TerminateResult(name, True, "already gone")
            message = "; ".join(e.message for e in operation.error.errors)
            return TerminateResult(name, False, f"delete {name}: {message}")
        return TerminateResult(name, True, f"deleting in {zone}")
