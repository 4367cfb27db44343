"""The rules of the fake Compute API (``tests.fake_gcp_compute``): its error type, the list
filter grammar it understands, and the validation of an ``instances.insert`` body, each as the
Compute REST reference states them."""

from __future__ import annotations

import re
from typing import Any

# RFC 1035 names: "The first character must be a lowercase letter, and all following
# characters must be a dash, lowercase letter, or digit, except the last character, which
# cannot be a dash." (63 characters at most)
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# Labels: "Keys must start with a lowercase letter … can contain only lowercase letters,
# numeric characters, underscores, and dashes"; at most 64 labels, 63 characters each.
LABEL_KEY_RE = re.compile(r"^[a-z][-_a-z0-9]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[-_a-z0-9]{0,63}$")
MAX_LABELS = 64

STATUS_TEXT = {
    400: "BAD REQUEST",
    403: "FORBIDDEN",
    404: "NOT FOUND",
    409: "CONFLICT",
    429: "TOO MANY REQUESTS",
    503: "SERVICE UNAVAILABLE",
}
_REASONS = {400: "invalid", 403: "forbidden", 404: "notFound", 409: "alreadyExists"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or _REASONS.get(status, "backendError")


# ---- filters -------------------------------------------------------------------------------

_TERM = re.compile(
    r"""\s*\(?\s*(?P<field>[A-Za-z][\w.\-]*)\s*(?P<op>=|!=|\beq\b|\bne\b)\s*
    (?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s()"]+))\s*\)?\s*""",
    re.VERBOSE,
)


def parse_filter(text: str) -> list[tuple[str, bool, str]]:
    """``(field, equal?, value)`` terms that must all hold. Raises ``ApiError`` 400 for what
    this fake does not understand (OR, wildcards, other fields)."""
    terms: list[tuple[str, bool, str]] = []
    rest = text.strip()
    while rest:
        match = _TERM.match(rest)
        if match is None:
            raise ApiError(400, f"Invalid value for field 'filter': '{text}'. Invalid list filter.")
        name = match["field"]
        if name not in ("name", "status", "zone") and not name.startswith("labels."):
            raise ApiError(
                400, f"Invalid value for field 'filter': '{text}'. Unknown field {name}."
            )
        value = match["quoted"] if match["quoted"] is not None else match["bare"]
        terms.append((name, match["op"] in ("=", "eq"), value))
        rest = rest[match.end() :]
        if rest.upper().startswith("AND "):
            rest = rest[4:]
        elif rest.upper().startswith("OR "):
            raise ApiError(400, f"Invalid value for field 'filter': '{text}'. OR is not supported.")
    return terms


def matches(instance: dict[str, Any], terms: list[tuple[str, bool, str]]) -> bool:
    for name, equal, value in terms:
        if name.startswith("labels."):
            actual = instance.get("labels", {}).get(name[len("labels.") :])
        elif name == "zone":
            actual = instance["zone"].rsplit("/", 1)[-1]
        else:
            actual = instance.get(name)
        if (actual == value) != equal:
            return False
    return True


# ---- validation of an insert ---------------------------------------------------------------


def invalid(field_path: str, value: Any, why: str = "") -> ApiError:
    detail = f" {why}" if why else ""
    return ApiError(400, f"Invalid value for field '{field_path}': '{value}'.{detail}")


def check_instance(images: set[str] | None, zone: str, body: dict[str, Any]) -> str:
    """Validate an Instance body as Compute would; returns the market."""
    name = body.get("name", "")
    if not NAME_RE.match(name):
        raise invalid(
            "resource.name",
            name,
            "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'",
        )
    machine_type = body.get("machineType", "")
    if not re.search(rf"(^|/)zones/{re.escape(zone)}/machineTypes/[a-z0-9-]+$", machine_type):
        raise invalid("resource.machineType", machine_type, "Must be a machine type in the zone.")
    disks = body.get("disks") or []
    boot = [d for d in disks if d.get("boot")]
    if len(boot) != 1:
        raise ApiError(400, "Invalid value for field 'resource.disks': exactly one boot disk.")
    image = boot[0].get("initializeParams", {}).get("sourceImage", "")
    if not image:
        raise ApiError(
            400, "Required field 'resource.disks[0].initializeParams.sourceImage' not specified"
        )
    image_path = image.split("/compute/v1/")[-1]
    if images is not None and image_path not in images:
        raise ApiError(404, f"The resource '{image_path}' was not found")
    if not body.get("networkInterfaces"):
        raise ApiError(400, "Required field 'resource.networkInterfaces' not specified")
    labels = body.get("labels") or {}
    if len(labels) > MAX_LABELS:
        raise invalid("labels", len(labels), f"At most {MAX_LABELS} labels.")
    for key, value in labels.items():
        if not LABEL_KEY_RE.match(key):
            raise invalid(f"labels.{key}", key, "Label keys must start with a lowercase letter.")
        if not LABEL_VALUE_RE.match(value):
            raise invalid(
                f"labels.{key}",
                value,
                "Label values may contain only lowercase letters, digits, '_' and '-'.",
            )
    for accelerator in body.get("guestAccelerators") or []:
        kind = accelerator.get("acceleratorType", "")
        if not re.search(rf"(^|/)zones/{re.escape(zone)}/acceleratorTypes/[a-z0-9-]+$", kind):
            raise invalid("resource.guestAccelerators[0].acceleratorType", kind)
        scheduling = body.get("scheduling") or {}
        if scheduling.get("onHostMaintenance") != "TERMINATE":
            raise ApiError(400, "Instances with guest accelerators do not support live migration.")
    scheduling = body.get("scheduling") or {}
    spot = scheduling.get("provisioningModel") == "SPOT" or scheduling.get("preemptible")
    if spot and scheduling.get("automaticRestart"):
        raise ApiError(
            400,
            "Invalid value for field 'resource.scheduling.automaticRestart': "
            "'true'. Preemptible instances cannot be automatically restarted.",
        )
    return "spot" if spot else "on-demand"
