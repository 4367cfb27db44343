"""The first half of ``det deploy aws down``: stop the master, then end every instance of the
cluster that Pulumi does not know about (the agents the master launched), before the stack is
destroyed.

Why this runs first and on its own: agents are launched by the master at run time, so they are
not in the stack; destroying the stack first would leave them running (and billing) with their
master gone, and a running master would launch replacements while we terminate. So the master
is stopped, then every instance carrying the deployment's tag (``flotilla:deployment``, which
the master's pool puts on each launch, spot included) is terminated and waited for, and open
spot requests with the tag are cancelled. This needs only EC2 credentials, never Pulumi: it runs
and reports even when the Pulumi step cannot.

How EC2 behaves here: ``TerminateInstances`` takes up to 1000 ids and answers at once with
``shutting-down``; an instance is gone when ``DescribeInstances`` says ``terminated`` (it stays
listed for about an hour). A one-time spot request closes when its instance ends; an open one
(not yet fulfilled) would still launch, so it is cancelled first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from infra.aws.iam import TAG_DEPLOYMENT
from infra.aws.program import TAG_ROLE
from provisioner.aws_requests import TAG_MARKET

LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
TERMINATE_BATCH = 100  # TerminateInstances allows 1000; smaller batches, as AWS recommends
DEFAULT_WAIT_S = 600.0
POLL_S = 5.0


@dataclass
class TeardownReport:
    """What the agent step did; ``remaining`` lists instances still not terminated at the
    deadline (empty when all are gone)."""

    stopped_masters: list[str] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    spot: list[str] = field(default_factory=list)
    cancelled_requests: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)
    error: str | None = None  # what EC2 answered when the step could not finish

    @property
    def complete(self) -> bool:
        return self.error is None and not self.remaining

    def lines(self) -> list[str]:
        out = []
        if self.stopped_masters:
            out.append(f"stopped the master {', '.join(self.stopped_masters)}")
        if self.cancelled_requests:
            out.append(f"cancelled {len(self.cancelled_requests)} open spot request(s)")
        if self.terminated:
            spot = f" ({len(self.spot)} spot)" if self.spot else ""
            out.append(f"terminated {len(self.terminated)} agent instance(s){spot}")
        else:
            out.append("no agent instances were running")
        if self.remaining:
            out.append(f"still not terminated: {', '.join(self.remaining)}")
        if self.error:
            out.append(f"could not finish: {self.error}")
        return out


def _tag(instance: dict[str, Any], key: str) -> str | None:
    return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == key), None)


def cluster_instances(ec2: Any, cluster_id: str, states: list[str] | None = None) -> list[dict]:
    """Every instance tagged for ``cluster_id`` in ``states`` (default: not yet terminated)."""
    filters = [
        {"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [cluster_id]},
        {"Name": "instance-state-name", "Values": states or LIVE_STATES},
    ]
    instances = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            instances += reservation["Instances"]
    return instances


def _is_master(instance: dict[str, Any]) -> bool:
    return _tag(instance, TAG_ROLE) == "master"


def _is_spot(instance: dict[str, Any]) -> bool:
    return instance.get("InstanceLifecycle") == "spot" or _tag(instance, TAG_MARKET) == "spot"


def _cancel_open_spot_requests(ec2: Any, cluster_id: str) -> list[str]:
    response = ec2.describe_spot_instance_requests(
        Filters=[
            {"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [cluster_id]},
            {"Name": "state", "Values": ["open"]},
        ]
    )
    ids = [r["SpotInstanceRequestId"] for r in response.get("SpotInstanceRequests", [])]
    if ids:
        ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=ids)
    return ids


def terminate_cluster_agents(
    ec2: Any,
    cluster_id: str,
    *,
    wait_s: float = DEFAULT_WAIT_S,
    poll_s: float = POLL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_progress: Callable[[str], None] = lambda line: None,
) -> TeardownReport:
    """Stop the cluster's master, cancel its open spot requests, terminate every other instance
    tagged for it and wait (up to ``wait_s``) until they are terminated. Instances of other
    clusters are never touched: every call filters on the deployment tag."""
    report = TeardownReport()
    instances = cluster_instances(ec2, cluster_id)
    masters = [i["InstanceId"] for i in instances if _is_master(i) and i["State"]["Name"] in (
        "pending", "running")]  # fmt: skip
    if masters:
        on_progress(f"stopping the master {', '.join(masters)}")
        ec2.stop_instances(InstanceIds=masters)
        report.stopped_masters = masters
    report.cancelled_requests = _cancel_open_spot_requests(ec2, cluster_id)
    agents = [i for i in cluster_instances(ec2, cluster_id) if not _is_master(i)]
    ids = [i["InstanceId"] for i in agents]
    report.spot = [i["InstanceId"] for i in agents if _is_spot(i)]
    for start in range(0, len(ids), TERMINATE_BATCH):
        batch = ids[start : start + TERMINATE_BATCH]
        on_progress(f"terminating {len(batch)} agent instance(s)")
        ec2.terminate_instances(InstanceIds=batch)
    report.terminated = ids
    deadline = clock() + wait_s
    while ids:
        alive = {i["InstanceId"] for i in cluster_instances(ec2, cluster_id) if not _is_master(i)}
        ids = [i for i in ids if i in alive]
        if not ids or clock() >= deadline:
            break
        on_progress(f"waiting for {len(ids)} instance(s) to terminate")
        sleep(poll_s)
    report.remaining = ids
    return report


def teardown(
    aws: Any, region: str, cluster_id: str, on_progress: Callable[[str], None]
) -> TeardownReport:
    """:func:`terminate_cluster_agents` with ``aws``'s EC2 client; an EC2 failure is recorded in
    the report (``error``) instead of raised, so ``down`` always reports this step."""
    try:
        ec2 = aws.client("ec2", region_name=region)
        return terminate_cluster_agents(ec2, cluster_id, on_progress=on_progress)
    except (ClientError, BotoCoreError) as e:
        return TeardownReport(error=str(e))
