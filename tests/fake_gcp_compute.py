"""A loopback fake of the Compute Engine REST API (v1), for the GCP provider and ``det deploy gcp``.

Google ships no emulator for Compute Engine, so this is a fake: an ``http.server`` on a free
127.0.0.1 port keeping instances and operations in memory, reached by google-cloud-compute
through ``client_options={"api_endpoint": url}`` with anonymous credentials. It is the only
check of our requests, so it follows the REST reference
(https://cloud.google.com/compute/docs/reference/rest/v1) where our calls touch it, and is
strict where a client could go wrong:

- ``POST   /compute/v1/projects/{p}/zones/{z}/instances?requestId=…`` (instances.insert): the
  body must be an Instance with a valid ``name``, ``machineType`` in the zone, a boot disk with
  ``initializeParams.sourceImage`` and ``networkInterfaces``; labels must follow GCP's label
  rules. A repeated ``requestId`` returns the first call's operation and creates nothing.
- ``GET    …/zones/{z}/instances[?filter=…&maxResults=…&pageToken=…]`` (instances.list)
- ``GET    /compute/v1/projects/{p}/aggregated/instances`` (instances.aggregatedList), its
  ``items`` keyed ``zones/{z}``, each with ``instances`` or a ``NO_RESULTS_ON_PAGE`` warning
- ``GET    …/zones/{z}/instances/{name}`` (instances.get)
- ``DELETE …/zones/{z}/instances/{name}?requestId=…`` (instances.delete)
- ``GET    …/zones/{z}/operations/{op}`` and ``POST …/operations/{op}/wait`` (zoneOperations)

Filters: the list filter grammar's subset that clients use for labels — comparisons
``field = value`` / ``field != value`` (``eq``/``ne`` too) on ``name``, ``status``, ``zone`` or
``labels.KEY``, joined by ``AND`` or by plain juxtaposition of parenthesised terms. Anything
else is answered 400 ``invalid`` like Compute answers a bad filter, so an unsupported filter
fails loudly instead of matching everything.

Errors use Compute's shapes: an HTTP error is ``{"error": {"code", "message", "errors":
[{"message", "domain", "reason"}]}}``; a failure after acceptance is an Operation that ends
``DONE`` with ``error.errors[{"code", "message"}]`` and ``httpErrorStatusCode``. Faults are
injected per zone and market (``inject``: e.g. ``ZONE_RESOURCE_POOL_EXHAUSTED`` on spot in one
zone, ``QUOTA_EXCEEDED``) and for the next calls (``fail_next``: e.g. 403 ``rateLimitExceeded``).
Spot VMs can be preempted (``preempt``): status ``TERMINATED`` with ``lastStopTimestamp`` and
a ``compute.instances.preempted`` zone operation, as GCP reports it.
Timestamps are RFC 3339 with Google's Pacific offset, like the real API's.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

API_PREFIX = "/compute/v1/projects/"
# Google answers timestamps in US Pacific time ("2026-12-07T04:30:24.123-08:00").
_PACIFIC = timezone(timedelta(hours=-8))
# RFC 1035 names: "The first character must be a lowercase letter, and all following
# characters must be a dash, lowercase letter, or digit, except the last character, which
# cannot be a dash." (63 characters at most)
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# Labels: "Keys must start with a lowercase letter … can contain only lowercase letters,
# numeric characters, underscores, and dashes"; at most 64 labels, 63 characters each.
LABEL_KEY_RE = re.compile(r"^[a-z][-_a-z0-9]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[-_a-z0-9]{0,63}$")
MAX_LABELS = 64
# instances.list maxResults: "Acceptable values are 0 to 500, inclusive. (Default: 500)"
MAX_RESULTS = 500
# zoneOperations.wait returns "when the operation is done or … after approximately 2 minutes";
# the fake waits at most this long so a test never hangs on it.
WAIT_MAX_S = 10.0


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(_PACIFIC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Fault:
    """An operation error Compute reports after accepting an insert (or an HTTP error when
    ``http_status`` is set and ``sync`` is true)."""

    code: str  # e.g. ZONE_RESOURCE_POOL_EXHAUSTED, QUOTA_EXCEEDED
    message: str
    http_status: int = 503
    sync: bool = False  # answer the insert itself with an HTTP error instead
    reason: str = ""  # the HTTP error's errors[0].reason when sync


STOCKOUT = Fault(
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "The zone '{zone}' does not have enough resources available to fulfill the request.  "
    "Try a different zone, or try again later.",
    503,
)
QUOTA = Fault(
    "QUOTA_EXCEEDED",
    "Quota 'NVIDIA_T4_GPUS' exceeded.  Limit: 0.0 in region {region}.",
    403,
)


@dataclass
class FakeComputeState:
    """What the fake holds and how it behaves; tests read and tweak it directly (under
    ``lock``)."""

    project: str = "flotilla-test"
    zones: set[str] = field(default_factory=lambda: {"us-central1-a", "us-central1-b"})
    images: set[str] | None = None
    """Source images an insert may use (their URL's path from ``projects/`` or ``global/``);
    None accepts any."""
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """(zone, name) → the Instance resource as the API returns it."""
    operations: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests_by_id: dict[str, tuple[str, str]] = field(default_factory=dict)
    """requestId → (zone, operation name) of the first call that carried it."""
    faults: dict[tuple[str, str], Fault] = field(default_factory=dict)
    """(zone, market "spot"|"on-demand") → the fault every insert there meets."""
    fail_next: list[tuple[int, str, str]] = field(default_factory=list)
    """HTTP errors (status, reason, message) for the next API calls, in order."""
    operation_delay_s: float = 0.0
    """How long an insert's operation stays RUNNING (its instance PROVISIONING) before DONE."""
    page_size: int = MAX_RESULTS
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    """Every call: (method, path with query, JSON body or None)."""
    lock: threading.RLock = field(default_factory=threading.RLock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(4_000_000_000_000_000))
    _finishing: dict[tuple[str, str], float] = field(default_factory=dict)
    """(zone, operation name) → when (monotonic) a RUNNING operation becomes DONE."""

    def next_id(self) -> str:
        return str(next(self._ids))

    def inject(self, zone: str, market: str, fault: Fault) -> None:
        """Every insert in ``zone`` on ``market`` ("spot" or "on-demand") fails with ``fault``."""
        with self.lock:
            self.faults[(zone, market)] = fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def live(self, label: str | None = None, value: str | None = None) -> list[dict[str, Any]]:
        """Instances present (any status), optionally only those with ``labels[label]==value``."""
        with self.lock:
            return [
                dict(i)
                for i in self.instances.values()
                if label is None or i.get("labels", {}).get(label) == value
            ]

    def preempt(self, zone: str, name: str) -> None:
        """Preempt a spot VM as GCP does: a ``compute.instances.preempted`` operation, the VM
        ``TERMINATED`` with ``lastStopTimestamp`` (deleted only when someone deletes it)."""
        with self.lock:
            instance = self.instances[(zone, name)]
            model = instance.get("scheduling", {}).get("provisioningModel")
            if model != "SPOT" and not instance.get("scheduling", {}).get("preemptible"):
                raise ValueError(f"{name} is not a spot VM")
            now = rfc3339(datetime.now(UTC))
            instance["status"] = "TERMINATED"
            instance["lastStopTimestamp"] = now
            self._operation(
                zone, "compute.instances.preempted", instance, status="DONE", user="system"
            )

    # ---- resources ------------------------------------------------------------------------

    def zone_url(self, base: str, zone: str) -> str:
        return f"{base}/compute/v1/projects/{self.project}/zones/{zone}"

    def _operation(
        self,
        zone: str,
        kind: str,
        instance: dict[str, Any],
        status: str,
        user: str = "anonymous",
        error: Fault | None = None,
        done_at: float | None = None,
    ) -> dict[str, Any]:
        now = rfc3339(datetime.now(UTC))
        op_id = self.next_id()
        name = f"operation-{int(time.time() * 1000)}-{op_id[-6:]}-{kind.rsplit('.', 1)[-1]}"
        base = instance["selfLink"].split("/compute/v1/")[0]
        zone_link = self.zone_url(base, zone)
        operation: dict[str, Any] = {
            "kind": "compute#operation",
            "id": op_id,
            "name": name,
            "zone": zone_link,
            "operationType": kind,
            "targetLink": instance["selfLink"],
            "targetId": instance.get("id", ""),
            "status": status,
            "user": user,
            "progress": 100 if status == "DONE" else 0,
            "insertTime": now,
            "startTime": now,
            "selfLink": f"{zone_link}/operations/{name}",
        }
        if status == "DONE":
            operation["endTime"] = now
        if error is not None:
            region = zone.rsplit("-", 1)[0]
            message = error.message.format(
                zone=f"projects/{self.project}/zones/{zone}", region=region
            )
            operation["error"] = {"errors": [{"code": error.code, "message": message}]}
            operation["httpErrorStatusCode"] = error.http_status
            operation["httpErrorMessage"] = _STATUS_TEXT.get(error.http_status, "ERROR")
        self.operations[(zone, name)] = operation
        operation_done_at = done_at
        if operation_done_at is not None:
            self._finishing[(zone, name)] = operation_done_at
        return operation

    def settle(self) -> None:
        """Finish operations whose delay is over: DONE, and their instance RUNNING."""
        now = time.monotonic()
        for key, at in list(self._finishing.items()):
            if at > now:
                continue
            del self._finishing[key]
            operation = self.operations[key]
            operation.update(status="DONE", progress=100, endTime=rfc3339(datetime.now(UTC)))
            zone, _ = key
            name = operation["targetLink"].rsplit("/", 1)[-1]
            instance = self.instances.get((zone, name))
            if instance is not None and instance["status"] == "PROVISIONING":
                instance["status"] = "RUNNING"
                instance["lastStartTimestamp"] = operation["endTime"]


_STATUS_TEXT = {
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


def _matches(instance: dict[str, Any], terms: list[tuple[str, bool, str]]) -> bool:
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


def _invalid(field_path: str, value: Any, why: str = "") -> ApiError:
    detail = f" {why}" if why else ""
    return ApiError(400, f"Invalid value for field '{field_path}': '{value}'.{detail}")


def _check_instance(state: FakeComputeState, zone: str, body: dict[str, Any]) -> str:
    """Validate an Instance body as Compute would; returns the market."""
    name = body.get("name", "")
    if not NAME_RE.match(name):
        raise _invalid(
            "resource.name",
            name,
            "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'",
        )
    machine_type = body.get("machineType", "")
    if not re.search(rf"(^|/)zones/{re.escape(zone)}/machineTypes/[a-z0-9-]+$", machine_type):
        raise _invalid("resource.machineType", machine_type, "Must be a machine type in the zone.")
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
    if state.images is not None and image_path not in state.images:
        raise ApiError(404, f"The resource '{image_path}' was not found")
    if not body.get("networkInterfaces"):
        raise ApiError(400, "Required field 'resource.networkInterfaces' not specified")
    labels = body.get("labels") or {}
    if len(labels) > MAX_LABELS:
        raise _invalid("labels", len(labels), f"At most {MAX_LABELS} labels.")
    for key, value in labels.items():
        if not LABEL_KEY_RE.match(key):
            raise _invalid(f"labels.{key}", key, "Label keys must start with a lowercase letter.")
        if not LABEL_VALUE_RE.match(value):
            raise _invalid(
                f"labels.{key}",
                value,
                "Label values may contain only lowercase letters, digits, '_' and '-'.",
            )
    for accelerator in body.get("guestAccelerators") or []:
        kind = accelerator.get("acceleratorType", "")
        if not re.search(rf"(^|/)zones/{re.escape(zone)}/acceleratorTypes/[a-z0-9-]+$", kind):
            raise _invalid("resource.guestAccelerators[0].acceleratorType", kind)
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


# ---- the server ----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _json(self, status: int, value: Any) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, error: ApiError) -> None:
        self._json(
            error.status,
            {
                "error": {
                    "code": error.status,
                    "message": error.message,
                    "errors": [
                        {"message": error.message, "domain": "global", "reason": error.reason}
                    ],
                }
            },
        )

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise ApiError(400, "Invalid JSON payload received.") from None

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _route(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            body = self._body() if self.command in ("POST", "PUT", "PATCH") else None
            with state.lock:
                state.requests.append((self.command, self.path, body))
                if state.fail_next:
                    status, reason, message = state.fail_next.pop(0)
                    raise ApiError(status, message, reason)
                state.settle()
                answer = self._dispatch(url.path, query, body)
            if isinstance(answer, tuple):  # (operation to wait for, deadline)
                answer = self._wait(*answer)
            self._json(200, answer)
        except ApiError as error:
            self._error(error)

    def _dispatch(self, path: str, query: dict[str, str], body: Any) -> Any:
        state = self.server.state
        if not path.startswith(API_PREFIX):
            raise ApiError(404, f"no route {self.command} {path}")
        parts = [unquote(p) for p in path[len(API_PREFIX) :].split("/")]
        project, rest = parts[0], parts[1:]
        if project != state.project:
            raise ApiError(404, f"The resource 'projects/{project}' was not found")
        if rest == ["aggregated", "instances"] and self.command == "GET":
            return self._aggregated(query)
        if len(rest) < 3 or rest[0] != "zones":
            raise ApiError(404, f"no route {self.command} {path}")
        zone = rest[1]
        if zone not in state.zones:
            raise ApiError(404, f"The resource 'projects/{project}/zones/{zone}' was not found")
        match rest[2:], self.command:
            case ["instances"], "POST":
                return self._insert(zone, query, body)
            case ["instances"], "GET":
                return self._list(zone, query)
            case ["instances", name], "GET":
                return self._instance(zone, name)
            case ["instances", name], "DELETE":
                return self._delete(zone, name, query)
            case ["operations", name], "GET":
                return self._get_operation(zone, name)
            case ["operations", name, "wait"], "POST":
                self._get_operation(zone, name)
                return (zone, name), time.monotonic() + WAIT_MAX_S
        raise ApiError(404, f"no route {self.command} {path}")

    # ---- instances ----------------------------------------------------------------------

    def _instance(self, zone: str, name: str) -> dict[str, Any]:
        instance = self.server.state.instances.get((zone, name))
        if instance is None:
            project = self.server.state.project
            raise ApiError(
                404,
                f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found",
            )
        return instance

    def _insert(self, zone: str, query: dict[str, str], body: Any) -> dict[str, Any]:
        state = self.server.state
        request_id = query.get("requestId")
        if request_id is not None and request_id in state.requests_by_id:
            return state.operations[state.requests_by_id[request_id]]
        if not isinstance(body, dict):
            raise ApiError(400, "Required field 'resource' not specified")
        market = _check_instance(state, zone, body)
        fault = state.faults.get((zone, market))
        if fault is not None and fault.sync:
            raise ApiError(fault.http_status, fault.message, fault.reason or None)
        name = body["name"]
        if (zone, name) in state.instances:
            project = state.project
            raise ApiError(
                409,
                f"The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists",
            )
        zone_link = state.zone_url(self.base, zone)
        instance: dict[str, Any] = {
            **body,
            "kind": "compute#instance",
            "id": state.next_id(),
            "creationTimestamp": rfc3339(datetime.now(UTC)),
            "zone": zone_link,
            "selfLink": f"{zone_link}/instances/{name}",
            "machineType": f"{zone_link}/machineTypes/{body['machineType'].rsplit('/', 1)[-1]}",
            "status": "PROVISIONING",
        }
        if fault is not None:  # accepted, then refused: nothing is created
            operation = state._operation(zone, "insert", instance, "DONE", error=fault)
        else:
            delay = state.operation_delay_s
            state.instances[(zone, name)] = instance
            if delay > 0:
                operation = state._operation(
                    zone, "insert", instance, "RUNNING", done_at=time.monotonic() + delay
                )
            else:
                instance["status"] = "RUNNING"
                instance["lastStartTimestamp"] = instance["creationTimestamp"]
                operation = state._operation(zone, "insert", instance, "DONE")
        if request_id is not None:
            state.requests_by_id[request_id] = (zone, operation["name"])
        return operation

    def _delete(self, zone: str, name: str, query: dict[str, str]) -> dict[str, Any]:
        state = self.server.state
        request_id = query.get("requestId")
        if request_id is not None and request_id in state.requests_by_id:
            return state.operations[state.requests_by_id[request_id]]
        instance = self._instance(zone, name)
        del state.instances[(zone, name)]
        operation = state._operation(zone, "delete", instance, "DONE")
        if request_id is not None:
            state.requests_by_id[request_id] = (zone, operation["name"])
        return operation

    def _page(self, items: list[dict[str, Any]], query: dict[str, str]) -> tuple[list[Any], str]:
        size = int(query.get("maxResults", MAX_RESULTS))
        if not 0 <= size <= MAX_RESULTS:
            raise _invalid("maxResults", size, f"Must be 0 to {MAX_RESULTS}.")
        size = min(size or MAX_RESULTS, self.server.state.page_size)
        start = int(query.get("pageToken") or 0)
        page = items[start : start + size]
        return page, str(start + size) if start + size < len(items) else ""

    def _filtered(self, query: dict[str, str]) -> list[dict[str, Any]]:
        terms = parse_filter(query.get("filter", ""))
        state = self.server.state
        return [i for key, i in sorted(state.instances.items()) if _matches(i, terms)]

    def _list(self, zone: str, query: dict[str, str]) -> dict[str, Any]:
        found = [i for i in self._filtered(query) if i["zone"].endswith(f"/zones/{zone}")]
        page, token = self._page(found, query)
        zone_link = self.server.state.zone_url(self.base, zone)
        answer: dict[str, Any] = {
            "kind": "compute#instanceList",
            "id": f"projects/{self.server.state.project}/zones/{zone}/instances",
            "items": page,
            "selfLink": f"{zone_link}/instances",
        }
        if not page:
            del answer["items"]
        if token:
            answer["nextPageToken"] = token
        return answer

    def _aggregated(self, query: dict[str, str]) -> dict[str, Any]:
        state = self.server.state
        found = self._filtered(query)
        page, token = self._page(found, query)
        items: dict[str, Any] = {}
        for zone in sorted(state.zones):
            here = [i for i in page if i["zone"].endswith(f"/zones/{zone}")]
            if here:
                items[f"zones/{zone}"] = {"instances": here}
            else:
                items[f"zones/{zone}"] = {
                    "warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": f"There are no results for scope 'zones/{zone}' on this page.",
                        "data": [{"key": "scope", "value": f"zones/{zone}"}],
                    }
                }
        answer: dict[str, Any] = {
            "kind": "compute#instanceAggregatedList",
            "id": f"projects/{state.project}/aggregated/instances",
            "items": items,
            "selfLink": f"{self.base}/compute/v1/projects/{state.project}/aggregated/instances",
        }
        if token:
            answer["nextPageToken"] = token
        return answer

    # ---- operations ---------------------------------------------------------------------

    def _get_operation(self, zone: str, name: str) -> dict[str, Any]:
        operation = self.server.state.operations.get((zone, name))
        if operation is None:
            project = self.server.state.project
            raise ApiError(
                404,
                f"The resource 'projects/{project}/zones/{zone}/operations/{name}' was not found",
            )
        return operation

    def _wait(self, key: tuple[str, str], deadline: float) -> dict[str, Any]:
        state = self.server.state
        while True:
            with state.lock:
                state.settle()
                operation = dict(state.operations[key])
            if operation["status"] == "DONE" or time.monotonic() >= deadline:
                return operation
            time.sleep(0.02)

    do_GET = do_POST = do_DELETE = _route


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: FakeComputeState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@contextmanager
def fake_compute(state: FakeComputeState | None = None) -> Iterator[tuple[str, FakeComputeState]]:
    """Run the fake; yields its endpoint (``http://127.0.0.1:PORT``, for ``api_endpoint``) and
    its state, and shuts it down afterwards."""
    state = state or FakeComputeState()
    server = _Server(state)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
