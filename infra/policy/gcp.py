"""GCP rules of the pack. Each looks only at ``gcp:`` type tokens and reads properties in the
engine's camelCase (``uniformBucketLevelAccess``).

- ``gcp-no-broad-roles``: no IAM member or binding (project, bucket, service account) grants a
  primitive role (owner, editor, viewer), ``roles/compute.admin``/``instanceAdmin`` or
  ``roles/storage.admin``; ``roles/iam.serviceAccountUser`` only on one service account, never
  project-wide; no custom role holding ``*.setIamPolicy`` (which would let it grant itself more).
- ``gcp-bucket-private``: every bucket has uniform bucket-level access and public access
  prevention ``enforced``; no bucket IAM grant to ``allUsers`` or ``allAuthenticatedUsers``.
- ``gcp-no-ssh-from-world``: no ingress firewall rule from ``0.0.0.0/0`` or ``::/0`` that
  allows port 22 (a rule with no ports allows every port).
- ``gcp-cloudsql-private``: Cloud SQL instances have no public IPv4 address (``ipv4Enabled``
  false: GCP's default is true, so leaving it out is a violation too).
- ``gcp-shielded-vm``: instances run as Shielded VMs (secure boot, vTPM, integrity monitoring)
  and do not enable the interactive serial console (``serial-port-enable`` metadata).

GKE's metadata concealment does not apply to plain VMs; a VM's metadata is guarded by IAM
(``compute.instances.get``), which is why the master VM runs no user code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from infra.policy.pack import resource_policy

SSH_PORT = 22
WORLD = ("0.0.0.0/0", "::/0")
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
BROAD_ROLES = frozenset(
    {
        "roles/owner",
        "roles/editor",
        "roles/viewer",
        "roles/compute.admin",
        "roles/compute.instanceAdmin",
        "roles/compute.instanceAdmin.v1",
        "roles/storage.admin",
    }
)
ACT_AS_ROLE = "roles/iam.serviceAccountUser"

PROJECT_IAM_TYPES = (
    "gcp:projects/iAMMember:IAMMember",
    "gcp:projects/iAMBinding:IAMBinding",
)
PROJECT_IAM_POLICY = "gcp:projects/iAMPolicy:IAMPolicy"
SERVICE_ACCOUNT_IAM_TYPES = (
    "gcp:serviceaccount/iAMMember:IAMMember",
    "gcp:serviceaccount/iAMBinding:IAMBinding",
)
BUCKET_IAM_TYPES = (
    "gcp:storage/bucketIAMMember:BucketIAMMember",
    "gcp:storage/bucketIAMBinding:BucketIAMBinding",
)
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
BUCKET = "gcp:storage/bucket:Bucket"
FIREWALL = "gcp:compute/firewall:Firewall"
SQL_INSTANCE = "gcp:sql/databaseInstance:DatabaseInstance"
INSTANCE = "gcp:compute/instance:Instance"
INSTANCE_TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"


def _members(props: Any) -> list[str]:
    members = list(props.get("members") or [])
    if props.get("member"):
        members.append(props["member"])
    return [str(m) for m in members]


def _no_broad_roles(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = args.props
    kind = args.resource_type
    if kind in PROJECT_IAM_TYPES + SERVICE_ACCOUNT_IAM_TYPES + BUCKET_IAM_TYPES:
        role = str(props.get("role", ""))
        if role in BROAD_ROLES:
            report(f"grants {role}; use a custom role with only the permissions needed", None)
        if role == ACT_AS_ROLE and kind in PROJECT_IAM_TYPES:
            report(
                f"grants {role} project-wide (act as every service account); grant it on the "
                "one service account instead",
                None,
            )
    elif kind == PROJECT_IAM_POLICY:
        report("replaces the project's whole IAM policy; bind members one by one", None)
    elif kind == CUSTOM_ROLE:
        risky = [p for p in props.get("permissions") or [] if str(p).endswith(".setIamPolicy")]
        if risky:
            report(f"custom role holds {', '.join(risky)}: it could grant itself more", None)


def _bucket_private(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = args.props
    if args.resource_type == BUCKET:
        if props.get("uniformBucketLevelAccess") is not True:
            report("uniformBucketLevelAccess must be true (no per-object ACLs)", None)
        if props.get("publicAccessPrevention") != "enforced":
            report("publicAccessPrevention must be 'enforced'", None)
    elif args.resource_type in BUCKET_IAM_TYPES:
        public = [m for m in _members(props) if m in PUBLIC_MEMBERS]
        if public:
            report(f"grants {props.get('role')} on the bucket to {', '.join(public)}", None)


def _port_ranges(ports: Iterable[Any]) -> Iterable[tuple[int, int]]:
    for port in ports:
        low, _, high = str(port).partition("-")
        yield int(low), int(high or low)


def _allows_ssh(allows: Iterable[Any]) -> bool:
    for allow in allows:
        protocol = str(allow.get("protocol", "")).lower()
        if protocol not in ("tcp", "all", "6"):
            continue
        ports = allow.get("ports") or []
        if not ports or any(low <= SSH_PORT <= high for low, high in _port_ranges(ports)):
            return True
    return False


def _no_ssh_from_world(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != FIREWALL:
        return
    props = args.props
    if str(props.get("direction") or "INGRESS").upper() != "INGRESS":
        return
    world = [r for r in props.get("sourceRanges") or [] if r in WORLD]
    if world and _allows_ssh(props.get("allows") or []):
        report(f"ingress from {', '.join(world)} reaches port {SSH_PORT} (SSH)", None)


def _cloudsql_private(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != SQL_INSTANCE:
        return
    ip = (args.props.get("settings") or {}).get("ipConfiguration") or {}
    if ip.get("ipv4Enabled") is not False:
        report("settings.ipConfiguration.ipv4Enabled must be false (private IP only)", None)
    if not ip.get("privateNetwork"):
        report("settings.ipConfiguration.privateNetwork must name the cluster's network", None)


def _shielded_vm(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in (INSTANCE, INSTANCE_TEMPLATE):
        return
    shielded = args.props.get("shieldedInstanceConfig") or {}
    missing = [
        key
        for key in ("enableSecureBoot", "enableVtpm", "enableIntegrityMonitoring")
        if shielded.get(key) is not True
    ]
    if missing:
        report(f"shieldedInstanceConfig: {', '.join(missing)} must be true", None)
    metadata = args.props.get("metadata") or {}
    if str(metadata.get("serial-port-enable", "")).lower() in ("true", "1"):
        report("metadata serial-port-enable opens the interactive serial console", None)


POLICIES: list[Any] = [
    resource_policy(
        "gcp-no-broad-roles",
        "No primitive, compute.admin or storage.admin role; actAs only on one account.",
        _no_broad_roles,
    ),
    resource_policy(
        "gcp-bucket-private", "Buckets: uniform access, public access prevented.", _bucket_private
    ),
    resource_policy(
        "gcp-no-ssh-from-world", "No ingress from anywhere reaches port 22.", _no_ssh_from_world
    ),
    resource_policy(
        "gcp-cloudsql-private", "Cloud SQL instances have no public IP.", _cloudsql_private
    ),
    resource_policy(
        "gcp-shielded-vm", "VMs are Shielded VMs without serial console.", _shielded_vm
    ),
]
