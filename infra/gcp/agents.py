"""The first half of ``det deploy gcp down``: stop the master, then delete every VM of the
cluster that Pulumi does not know about (the agents the master launched), before the stack is
destroyed.

Why this runs first and on its own: agents are launched by the master at run time, so they are
not in the stack; destroying the stack first would leave them running (and billing) with their
master gone, and a running master would launch replacements while we delete. So the master VM
is stopped, then every VM labelled ``flotilla-deployment = <cluster id>`` (the master's pool
puts that label on each launch, Spot included) other than the master is deleted, and the label
is listed again until none is left. This needs only Compute credentials, never Pulumi: it runs
and reports even when the Pulumi step cannot.

How Compute behaves here: ``instances.delete`` answers at once with a zone operation; the VM is
gone when ``instances.get`` answers 404 (a VM being deleted is listed as ``STOPPING``). A
``requestId`` makes a repeated delete a no-op, so a retried ``down`` never fails on its own
earlier calls. ``aggregatedList`` with a label filter finds VMs in every zone at once.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.gcp.master_config import DEPLOYMENT_LABEL
from infra.gcp.program import ROLE_LABEL

RUNNING_STATES = ("PROVISIONING", "STAGING", "RUNNING")
DEFAULT_WAIT_S = 600.0
POLL_S = 5.0
# requestId: "must be a valid UUID with the exception that zero UUID is not supported".
_REQUEST_NAMESPACE = uuid.UUID("0b7f3c52-58f1-4c55-9c1e-6a2d1f3e9b40")


@dataclass
class TeardownReport:
    """What the agent step did; ``remaining`` lists VMs still present at the deadline."""

    stopped_masters: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    spot: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        if self.stopped_masters:
            out.append(f"stopped the master {', '.join(self.stopped_masters)}")
        if self.deleted:
            spot = f" ({len(self.spot)} Spot)" if self.spot else ""
            out.append(f"deleted {len(self.deleted)} agent VM(s){spot}")
        else:
            out.append("no agent VMs were running")
        if self.remaining:
            out.append(f"still not deleted: {', '.join(self.remaining)}")
        return out


def compute_clients(endpoint: str | None = None) -> tuple[Any, Any]:
    """``(InstancesClient, ZoneOperationsClient)``; anonymous against a plain-HTTP endpoint
    (the tests' fake), application default credentials otherwise."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.compute_v1 import InstancesClient, ZoneOperationsClient

    options = ClientOptions(api_endpoint=endpoint) if endpoint else None
    credentials = AnonymousCredentials() if (endpoint or "").startswith("http://") else None
    return (
        InstancesClient(credentials=credentials, client_options=options),
        ZoneOperationsClient(credentials=credentials, client_options=options),
    )


def _zone(instance: Any) -> str:
    return str(instance.zone).rsplit("/", 1)[-1]


def _is_master(instance: Any) -> bool:
    return dict(instance.labels).get(ROLE_LABEL) == "master"


def cluster_vms(instances: Any, project: str, cluster_id: str) -> list[Any]:
    """Every VM of the project labelled for ``cluster_id``, in any zone and status."""
    from google.cloud.compute_v1 import AggregatedListInstancesRequest

    request = AggregatedListInstancesRequest(
        project=project, filter=f'labels.{DEPLOYMENT_LABEL} = "{cluster_id}"'
    )
    found = []
    for _zone_name, scoped in instances.aggregated_list(request=request):
        found += list(scoped.instances)
    return found


def _request_id(*parts: str) -> str:
    return str(uuid.uuid5(_REQUEST_NAMESPACE, "/".join(parts)))


def delete_agents(
    project: str,
    cluster_id: str,
    *,
    instances: Any,
    wait_s: float = DEFAULT_WAIT_S,
    poll_s: float = POLL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_progress: Callable[[str], None] = lambda line: None,
) -> TeardownReport:
    """Stop the master, delete the cluster's agent VMs and wait until they are gone (or
    ``wait_s`` passes: then ``remaining`` names them). Idempotent."""
    from google.api_core import exceptions as api_exceptions
    from google.cloud.compute_v1 import DeleteInstanceRequest, StopInstanceRequest

    report = TeardownReport()
    deadline = clock() + wait_s
    vms = cluster_vms(instances, project, cluster_id)
    for master in (vm for vm in vms if _is_master(vm)):
        if master.status not in RUNNING_STATES:
            continue
        on_progress(f"stopping the master {master.name} so it launches no more agents")
        try:
            instances.stop(
                request=StopInstanceRequest(
                    project=project,
                    zone=_zone(master),
                    instance=master.name,
                    request_id=_request_id(cluster_id, "stop", master.name),
                )
            )
        except api_exceptions.NotFound:
            continue  # deleted meanwhile: it launches nothing either
        report.stopped_masters.append(master.name)
    while report.stopped_masters and clock() < deadline:
        masters = [vm for vm in cluster_vms(instances, project, cluster_id) if _is_master(vm)]
        if all(vm.status not in (*RUNNING_STATES, "STOPPING") for vm in masters):
            break
        sleep(poll_s)
    while True:
        agents = [vm for vm in cluster_vms(instances, project, cluster_id) if not _is_master(vm)]
        if not agents:
            report.remaining = []
            return report
        for vm in agents:
            if vm.name in report.deleted:
                continue
            spot = vm.scheduling.provisioning_model == "SPOT" or vm.scheduling.preemptible
            on_progress(f"deleting {vm.name} in {_zone(vm)}" + (" (Spot)" if spot else ""))
            with contextlib.suppress(api_exceptions.NotFound):  # already gone: idempotent
                instances.delete(
                    request=DeleteInstanceRequest(
                        project=project,
                        zone=_zone(vm),
                        instance=vm.name,
                        request_id=_request_id(cluster_id, "delete", _zone(vm), vm.name),
                    )
                )
            report.deleted.append(vm.name)
            if spot:
                report.spot.append(vm.name)
        if clock() >= deadline:
            report.remaining = sorted(vm.name for vm in agents)
            return report
        sleep(poll_s)
