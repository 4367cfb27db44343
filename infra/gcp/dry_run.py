"""``det deploy gcp up --dry-run``: the GCP program under mocks, its plan, the policies' verdict
and the monthly estimate, with no credentials and no Pulumi CLI.

What the mocks stand in for: resource ids are GCP's paths for the names the program chose
(``projects/<project>/global/networks/flotilla-<id>-net``), service accounts' emails follow
GCP's pattern, the master's address and Cloud SQL's private IP come from documentation or
private ranges. The resource graph, the firewall rules, the custom role's permissions and the
IAM bindings are exactly what ``up`` would send.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.common.cost import Estimate, PriceLookupError, PriceTable
from infra.common.plan import Plan, PlannedResource, PlanSection, render_plan, run_program
from infra.gcp.program import DB_PASSWORD_KEY, JOIN_TOKEN_KEY, PROJECT, program
from infra.gcp.settings import GcpDeploySettings
from infra.policy.pack import all_policies
from infra.policy.runner import Violation, check

PRICE_TABLE = Path(__file__).with_name("prices.json")
DRY_RUN_PUBLIC_IP = "198.51.100.20"  # RFC 5737 documentation range
DRY_RUN_DB_IP = "10.99.0.3"
DRY_RUN_SECRETS = {JOIN_TOKEN_KEY: "dry-run-join-token", DB_PASSWORD_KEY: "dry-run-db-pw"}


def _computed(project: str) -> Any:
    def computed(type_token: str, name: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        given = str(inputs.get("name", name))
        if type_token == "gcp:compute/network:Network":
            return {"id": f"projects/{project}/global/networks/{given}"}
        if type_token == "gcp:compute/subnetwork:Subnetwork":
            region = inputs.get("region")
            return {"id": f"projects/{project}/regions/{region}/subnetworks/{given}"}
        if type_token == "gcp:serviceaccount/account:Account":
            email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
            return {
                "id": f"projects/{project}/serviceAccounts/{email}",
                "name": f"projects/{project}/serviceAccounts/{email}",
                "email": email,
                "member": f"serviceAccount:{email}",
            }
        if type_token == "gcp:projects/iAMCustomRole:IAMCustomRole":
            role = f"projects/{project}/roles/{inputs['roleId']}"
            return {"id": role, "name": role}
        if type_token == "gcp:sql/databaseInstance:DatabaseInstance":
            return {"id": given, "name": given, "privateIpAddress": DRY_RUN_DB_IP}
        if type_token == "gcp:compute/address:Address":
            return {"id": given, "address": DRY_RUN_PUBLIC_IP}
        if type_token == "gcp:storage/bucket:Bucket":
            return {"id": given, "url": f"gs://{given}"}
        return {"id": given}

    return computed


def plan(settings: GcpDeploySettings, secrets: Mapping[str, str] = DRY_RUN_SECRETS) -> Plan:
    """The GCP program for ``settings`` under mocks (provider registrations left out)."""
    return run_program(
        program(settings),
        project=PROJECT,
        stack=settings.cluster_id,
        config={"gcp:project": settings.project, "gcp:region": settings.region, **secrets},
        computed=_computed(settings.project),
    ).without_providers()


# -- what the plan shows ------------------------------------------------------------------------

_KEY_SETTINGS: dict[str, tuple[str, ...]] = {
    "gcp:compute/network:Network": ("name", "autoCreateSubnetworks"),
    "gcp:compute/subnetwork:Subnetwork": ("name", "region", "ipCidrRange", "privateIpGoogleAccess"),
    "gcp:serviceaccount/account:Account": ("accountId",),
    "gcp:projects/iAMCustomRole:IAMCustomRole": ("roleId",),
    "gcp:projects/iAMMember:IAMMember": ("role", "member"),
    "gcp:serviceaccount/iAMMember:IAMMember": ("serviceAccountId", "role", "member"),
    "gcp:storage/bucket:Bucket": (
        "name",
        "location",
        "uniformBucketLevelAccess",
        "publicAccessPrevention",
    ),
    "gcp:storage/bucketIAMMember:BucketIAMMember": ("bucket", "role", "member"),
    "gcp:compute/globalAddress:GlobalAddress": ("name", "purpose", "prefixLength"),
    "gcp:servicenetworking/connection:Connection": ("service",),
    "gcp:sql/databaseInstance:DatabaseInstance": ("name", "databaseVersion", "region"),
    "gcp:sql/database:Database": ("name",),
    "gcp:sql/user:User": ("name",),
    "gcp:compute/address:Address": ("name", "addressType", "networkTier"),
    "gcp:compute/instance:Instance": (
        "name",
        "zone",
        "machineType",
        "tags",
        "shieldedInstanceConfig",
    ),
}
_DB_SETTINGS = ("tier", "diskSize", "diskType", "ipConfiguration", "backupConfiguration")


def key_settings(resource: PlannedResource) -> dict[str, Any]:
    keys = _KEY_SETTINGS.get(resource.type, ())
    shown: dict[str, Any] = {key: resource.inputs.get(key) for key in keys}
    if resource.type == "gcp:sql/databaseInstance:DatabaseInstance":
        db = resource.inputs.get("settings") or {}
        shown |= {key: db.get(key) for key in _DB_SETTINGS}
    if resource.type == "gcp:compute/instance:Instance":
        disk = (resource.inputs.get("bootDisk") or {}).get("initializeParams") or {}
        shown |= {"image": disk.get("image"), "bootDiskGb": disk.get("size")}
        shown["serviceAccount"] = (resource.inputs.get("serviceAccount") or {}).get("email")
    return shown


def _allows(rule: Mapping[str, Any]) -> str:
    parts = []
    for allow in rule.get("allows") or []:
        ports = allow.get("ports")
        parts.append(f"{allow.get('protocol')} {','.join(ports)}" if ports else allow["protocol"])
    return "; ".join(parts)


def firewall_lines(resources: list[PlannedResource]) -> list[str]:
    lines = []
    for r in resources:
        if r.type != "gcp:compute/firewall:Firewall":
            continue
        tags = r.inputs.get("sourceTags") or []
        sources = r.inputs.get("sourceRanges") or [f"tag {t}" for t in tags]
        targets = ", ".join(r.inputs.get("targetTags") or ["all instances"])
        arrow = f"{targets} <- {', '.join(sources)}"
        lines.append(f"{arrow:<60} {_allows(r.inputs):<16} {r.inputs.get('description', '')}")
    return lines


def iam_lines(resources: list[PlannedResource]) -> list[str]:
    lines = []
    for r in resources:
        if r.type == "gcp:projects/iAMCustomRole:IAMCustomRole":
            lines.append(f"custom role {r.inputs['roleId']}: {', '.join(r.inputs['permissions'])}")
        elif r.type == "gcp:projects/iAMMember:IAMMember":
            lines.append(
                f"project {r.inputs['project']}: {r.inputs['role']} to {r.inputs['member']}"
            )
        elif r.type == "gcp:serviceaccount/iAMMember:IAMMember":
            lines.append(
                f"service account {r.inputs['serviceAccountId']}: {r.inputs['role']} to "
                f"{r.inputs['member']}"
            )
        elif r.type == "gcp:storage/bucketIAMMember:BucketIAMMember":
            lines.append(f"bucket {r.inputs['bucket']}: {r.inputs['role']} to {r.inputs['member']}")
    return lines


# -- the estimate -------------------------------------------------------------------------------


def estimate(settings: GcpDeploySettings, resources: list[PlannedResource]) -> Estimate:
    """The monthly cost of what the plan creates, from the shipped table; agents are extra."""
    table = PriceTable.load(PRICE_TABLE)
    result = Estimate(table, settings.region)
    for r in resources:
        if r.type == "gcp:compute/instance:Instance":
            kind = str(r.inputs["machineType"])
            result.hourly(f"{r.name} VM {kind}", "vm_hour", kind)
            disk = (r.inputs.get("bootDisk") or {}).get("initializeParams") or {}
            disk_type = str(disk.get("type", "pd-balanced"))
            result.monthly(
                f"{r.name} boot disk {disk_type}",
                float(disk.get("size", 10)),
                "GB-month",
                "disk_gb_month",
                disk_type,
            )
        elif r.type == "gcp:compute/address:Address":
            result.hourly(f"{r.name} external IPv4 address", "ipv4_hour", "in_use")
        elif r.type == "gcp:sql/databaseInstance:DatabaseInstance":
            db = r.inputs.get("settings") or {}
            tier = str(db["tier"])
            result.hourly(f"{r.name} Cloud SQL PostgreSQL {tier}", "cloudsql_hour", tier)
            result.monthly(
                f"{r.name} Cloud SQL storage SSD",
                float(db.get("diskSize", 10)),
                "GB-month",
                "cloudsql_gb_month",
                "ssd",
            )
    gcs = table.price(settings.region, "gcs_gb_month", "standard")
    backups = table.price(settings.region, "cloudsql_gb_month", "backup")
    gpu = f" + {settings.gpu_num}x {settings.agent_gpu_type}" if settings.agent_gpu_type else ""
    stored = f"checkpoints in GCS: ${gcs}/GB-month as they accumulate"
    if settings.db == "cloudsql":
        stored += f"; Cloud SQL backups ${backups}/GB-month"
    result.notes += [
        stored,
        "free: VPC network, subnetwork, firewall rules, service accounts, custom role, "
        "private services access peering",
        f"agents are extra: {settings.agent_machine_type}{gpu} per second while they run (1 "
        f"minute minimum), up to {settings.max_dynamic_agents} at once"
        + (" (Spot)" if settings.spot else ""),
    ]
    return result


def render(settings: GcpDeploySettings) -> tuple[str, list[Violation]]:
    """The dry run's whole text (plan, rules, IAM, policy verdict, estimate) and the violations."""
    result = plan(settings)
    violations = check(result.resources, all_policies(), project=PROJECT, stack=settings.cluster_id)
    verdict = [str(v) for v in violations] or ["all policies pass"]
    title = (
        f"Plan for Flotilla cluster {settings.cluster_id!r} in project {settings.project}, "
        f"{settings.region} ({len(result.resources)} resources; dry run: ids and addresses "
        f"stand in for GCP's)"
    )
    text = render_plan(
        title,
        result.resources,
        key_settings,
        [
            PlanSection(
                "Firewall rules (ingress; all other ingress is denied)",
                firewall_lines(result.resources),
            ),
            PlanSection("IAM", iam_lines(result.resources)),
            PlanSection("Policy pack (mandatory on up)", verdict),
        ],
    )
    try:
        cost = estimate(settings, result.resources).render()
    except PriceLookupError as e:
        cost = f"No monthly estimate: {e}"
    return f"{text}\n\n{cost}", violations
