"""What the GCP provider says to Compute Engine and how it reads Compute's refusals, as pure
functions.

Holds the Instance body of ``instances.insert``, the labels Flotilla puts on its VMs (and GCP's
label rules they must fit), the names and request ids that make a retried launch idempotent,
and the classification of Compute's errors into what the provisioning loop does about them.
Nothing here does I/O; ``provisioner.gcp`` makes the calls and explains the behaviour these
answer to.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from google.api_core import exceptions as google_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import compute_v1
from google.protobuf import json_format

from provisioner.config import GCP_NAME_SUFFIX_CHARS, GCPProviderConfig
from provisioner.types import ErrorClass, Market, Offer, OfferKey, ProviderError

# Label keys Flotilla writes besides the pool's label_key. Label values may hold only
# lowercase letters, digits, '_' and '-' (63 at most), so ids and prices are spelled to fit.
LABEL_CLUSTER = "flotilla-cluster"
LABEL_POOL = "flotilla-pool-name"
LABEL_MARKET = "flotilla-market"
LABEL_PRICE = "flotilla-price-microusd"  # $/hour at launch × 10⁶, so cost survives price changes
LABEL_MANAGED_BY = "flotilla-managed-by"
MANAGED_BY = "flotilla"
LABEL_VALUE_MAX_CHARS = 63
STARTUP_SCRIPT_KEY = "startup-script"
# requestId: "must be a valid UUID with the exception that zero UUID is not supported";
# Compute remembers it "for at least 60 minutes".
_REQUEST_NAMESPACE = uuid.UUID("6f1c9b7e-9a55-4d4c-9d0e-3b1f0f7f2a10")

# Compute's error codes and reasons by what the loop does about them; anything else, and any
# 5xx, is TRANSIENT. Operation errors carry codes (ZONE_RESOURCE_POOL_EXHAUSTED); HTTP errors
# carry reasons (rateLimitExceeded) in error.errors[].reason.
# fmt: off
_CAPACITY_CODES = {
    "ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "RESOURCE_POOL_EXHAUSTED", "INSUFFICIENT_CAPACITY",
}
_QUOTA = {"QUOTA_EXCEEDED", "quotaExceeded", "QUOTA_LIMIT"}
_THROTTLE = {"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"}
_CONFIG = {
    "notFound", "invalid", "badRequest", "required", "forbidden", "insufficientPermissions",
    "accessNotConfigured", "authError", "unauthorized", "conditionNotMet",
    "RESOURCE_NOT_FOUND", "INVALID_USAGE", "INVALID_FIELD_VALUE", "PERMISSIONS_ERROR",
    "SERVICE_ACCOUNT_NOT_FOUND", "UNSUPPORTED_OPERATION",
}
# fmt: on
_QUOTA_NAME = re.compile(r"Quota '([A-Z0-9_]+)' exceeded")


# -- errors ------------------------------------------------------------------------------------


def classify(code: str, http_status: int | None = None) -> ErrorClass:
    """What the provisioning loop should do about a Compute error code or reason."""
    if code in _CAPACITY_CODES or "STOCKOUT" in code.upper():
        return ErrorClass.CAPACITY
    if code in _QUOTA:
        return ErrorClass.QUOTA
    if code in _THROTTLE or http_status == 429:
        return ErrorClass.THROTTLE
    if code in _CONFIG:
        return ErrorClass.CONFIG
    if http_status is not None and http_status in (400, 401, 403, 404):
        return ErrorClass.CONFIG
    return ErrorClass.TRANSIENT


def _explain(kind: ErrorClass, message: str) -> str:
    if kind == ErrorClass.QUOTA:
        named = _QUOTA_NAME.search(message)
        if named:
            return f"quota {named.group(1)} exceeded: {message}"
    return message


def operation_error(
    errors: Iterable[Mapping[str, str]], where: str, offer: OfferKey | None
) -> ProviderError:
    """A failed zone operation's ``error.errors`` as the loop's ProviderError, classified by the
    first error's code (the one that failed the operation)."""
    listed = list(errors)
    first = listed[0] if listed else {"code": "UNKNOWN", "message": "operation failed"}
    code = first.get("code", "UNKNOWN")
    kind = classify(code)
    text = "; ".join(e.get("message", "") for e in listed) or code
    return ProviderError(kind, f"{where}: {_explain(kind, text)} ({code})", offer)


def as_provider_error(error: Exception, where: str, offer: OfferKey | None) -> ProviderError:
    """A google-cloud-compute failure as the loop's ProviderError: Compute's own reason and
    message when it answered, CONFIG for missing credentials, TRANSIENT for anything else."""
    if isinstance(error, google_exceptions.GoogleAPICallError):
        reasons = [e.get("reason", "") for e in error.errors or [] if isinstance(e, dict)]
        reason = next((r for r in reasons if r), error.reason or "")
        status = int(error.code) if error.code is not None else None
        kind = classify(reason, status)
        label = reason or f"HTTP {status}"
        return ProviderError(kind, f"{where}: {_explain(kind, error.message)} ({label})", offer)
    if isinstance(error, auth_exceptions.GoogleAuthError):
        return ProviderError(ErrorClass.CONFIG, f"{where}: {error}", offer)
    return ProviderError(ErrorClass.TRANSIENT, f"{where}: {error}", offer)


# -- names, ids, labels ------------------------------------------------------------------------


def instance_name(prefix: str, client_token: str, index: int) -> str:
    """The name of the ``index``-th VM of launch ``client_token``: the same on every retry of
    that launch (so a retry finds, never duplicates, what it created), unique across launches."""
    digest = hashlib.sha256(f"{client_token}/{index}".encode()).hexdigest()
    return prefix + digest[:GCP_NAME_SUFFIX_CHARS]


def request_id(client_token: str, index: int, action: str = "insert") -> str:
    """The ``requestId`` of one call: Compute answers a repeat with the first call's
    operation instead of acting again."""
    return str(uuid.uuid5(_REQUEST_NAMESPACE, f"{action}/{client_token}/{index}"))


def label_value(text: str) -> str:
    """``text`` as a GCP label value: lowercase, other characters as '-', 63 at most."""
    return re.sub(r"[^-_a-z0-9]", "-", text.lower())[:LABEL_VALUE_MAX_CHARS]


def default_label_value(cluster_id: str, pool: str) -> str:
    return label_value(f"{cluster_id}-{pool}")


def price_label(price: float) -> str:
    return str(round(price * 1_000_000))


def price_from_label(value: str) -> float:
    return int(value) / 1_000_000


def pool_labels(config: GCPProviderConfig, cluster_id: str, pool: str) -> dict[str, str]:
    """The labels that identify this pool's VMs (every list filters on all of them)."""
    return {
        config.label_key: config.label_value or default_label_value(cluster_id, pool),
        LABEL_CLUSTER: label_value(cluster_id),
        LABEL_POOL: label_value(pool),
    }


def instance_labels(
    config: GCPProviderConfig, *, cluster_id: str, pool: str, offer: Offer
) -> dict[str, str]:
    """The labels of one VM: the pool's, plus market and price at launch."""
    return {
        **pool_labels(config, cluster_id, pool),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_MARKET: "spot" if offer.market == Market.SPOT else "on-demand",
        LABEL_PRICE: price_label(offer.price_per_hour),
    }


def label_filter(labels: Mapping[str, str]) -> str:
    """A list filter matching every one of ``labels``: ``labels.k = "v" AND …``."""
    return " AND ".join(f'labels.{key} = "{value}"' for key, value in sorted(labels.items()))


# -- instances.insert --------------------------------------------------------------------------


def _zonal(zone: str, collection: str, name: str) -> str:
    """A zonal resource by partial URL, unless ``name`` is already a path or URL."""
    return name if "/" in name else f"zones/{zone}/{collection}/{name}"


def insert_body(
    config: GCPProviderConfig,
    *,
    offer: Offer,
    name: str,
    startup_script: str,
    labels: Mapping[str, str],
) -> compute_v1.Instance:
    """The Instance of one VM of ``offer``: boot disk from ``boot_disk_source_image`` deleted
    with the VM, the agent's boot script as ``startup-script``, GPUs as guest accelerators (which
    cannot live-migrate, so ``onHostMaintenance=TERMINATE``), and for Spot
    ``provisioningModel=SPOT`` deleted on preemption (nothing stopped lingers to bill its
    disk)."""
    zone = offer.zone
    if zone is None:
        raise ValueError("a GCP offer always names its zone")
    shape = config.instance_type
    interface = compute_v1.NetworkInterface(network=config.network_interface.network)
    if config.network_interface.subnetwork:
        interface.subnetwork = config.network_interface.subnetwork
    if config.network_interface.external_ip:
        interface.access_configs = [
            compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")
        ]
    gpus = shape.gpu_type is not None and shape.gpu_num > 0
    spot = offer.market == Market.SPOT
    scheduling = compute_v1.Scheduling(
        on_host_maintenance="TERMINATE" if gpus or spot else "MIGRATE",
        automatic_restart=not spot,
    )
    if spot:
        scheduling.provisioning_model = "SPOT"
        scheduling.instance_termination_action = "DELETE"
    else:
        scheduling.provisioning_model = "STANDARD"
    body = compute_v1.Instance(
        name=name,
        machine_type=_zonal(zone, "machineTypes", shape.machine_type),
        labels=dict(labels),
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                auto_delete=True,
                type_="PERSISTENT",
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    source_image=config.boot_disk_source_image,
                    disk_size_gb=config.boot_disk_size,
                    labels=dict(labels),
                ),
            )
        ],
        network_interfaces=[interface],
        metadata=compute_v1.Metadata(
            items=[compute_v1.Items(key=STARTUP_SCRIPT_KEY, value=startup_script)]
        ),
        scheduling=scheduling,
    )
    if gpus:
        assert shape.gpu_type is not None
        body.guest_accelerators = [
            compute_v1.AcceleratorConfig(
                accelerator_type=_zonal(zone, "acceleratorTypes", shape.gpu_type),
                accelerator_count=shape.gpu_num,
            )
        ]
    if config.network_tags:
        body.tags = compute_v1.Tags(items=list(config.network_tags))
    if config.service_account.email:
        body.service_accounts = [
            compute_v1.ServiceAccount(
                email=config.service_account.email, scopes=list(config.service_account.scopes)
            )
        ]
    return body


def as_dict(instance: compute_v1.Instance) -> dict[str, Any]:
    """The Instance as the REST body the client sends (camelCase JSON, as its transport writes
    it with protobuf's ``MessageToJson``), for tests and logs."""
    message = compute_v1.Instance.pb(instance)
    return dict(json.loads(json_format.MessageToJson(message, use_integers_for_enums=False)))
