"""The Pulumi program of a GCP deployment: everything ``det deploy gcp up`` creates.

Resources (names are Pulumi's logical names; GCP names carry the cluster id):

- ``network``/``subnet``: a custom-mode VPC network and one regional subnetwork with Private
  Google Access, so agents without external addresses reach GCS and the Compute API (not with
  ``--network``/``--subnetwork``: those are used as they are);
- firewall rules, ingress only (GCP's implied rules deny all other ingress, allow egress):
  ``fw-master-api`` (the master's port from ``--inbound-cidr``), ``fw-agents-to-master``,
  ``fw-master-to-agents`` (the proxy to shells and notebooks), ``fw-agents-internal``
  (distributed training), and ``fw-ssh`` only with ``--ssh-cidr``;
- ``master-sa``/``agent-sa``: service accounts; ``master-role``: the master's custom role with
  ``infra.gcp.iam.MASTER_COMPUTE_PERMISSIONS`` bound in ``master-role-binding``;
  ``master-acts-as-agent``: the master may attach the agents' account, and only that one;
- ``checkpoints``: the bucket (uniform bucket-level access, public access prevention enforced),
  with ``checkpoints-master``/``checkpoints-agent`` object access on it alone. Kept when the stack
  is destroyed (``retain_on_delete``): it holds the users' checkpoints;
- ``db-range``/``db-peering``/``db``/``db-database``/``db-user``: Cloud SQL PostgreSQL on a
  private IP only, through a private services access peering (not with ``--db local``);
- ``master-ip``/``master``: a static external address and the master VM from the baked image
  (Shielded VM, OS Login, project SSH keys blocked), its ``startup-script`` from
  ``infra.gcp.master_config``.

Every labelable resource carries ``flotilla-deployment = <cluster id>`` and
``flotilla-managed-by = flotilla``. A re-run with a new ``--max-dynamic-agents`` changes only
the master's metadata (``allow_stopping_for_update``: same disk, same database, same bucket).
The join token and the database password are stack secrets (``flotilla:joinToken``,
``flotilla:dbPassword``) generated once by ``infra.common.automation.deploy_up``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infra.common.automation import Program
from infra.gcp import iam
from infra.gcp.master_config import (
    DB_NAME,
    DB_USER,
    DEPLOYMENT_LABEL,
    LOCAL_DB_HOST,
    MasterWiring,
    startup_script,
)
from infra.gcp.settings import IMAGE_FAMILY, GcpDeploySettings

PROJECT = "flotilla-gcp"
CONFIG_NAMESPACE = "flotilla"
JOIN_TOKEN_KEY = "flotilla:joinToken"
DB_PASSWORD_KEY = "flotilla:dbPassword"
MANAGED_BY_LABEL = "flotilla-managed-by"
ROLE_LABEL = "flotilla-role"
CLOUD_SQL_VERSION = "POSTGRES_16"
PEERING_PREFIX_LENGTH = 20  # a /20 of private services range: room for Cloud SQL's /24s
BOOT_DISK_TYPE = "pd-balanced"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def labels(settings: GcpDeploySettings, role: str | None = None) -> dict[str, str]:
    out = {DEPLOYMENT_LABEL: settings.cluster_id, MANAGED_BY_LABEL: "flotilla"}
    if role:
        out[ROLE_LABEL] = role
    return out


def default_image(project: str) -> str:
    """The newest image of ``IMAGE_FAMILY`` in the project, by family URL (resolved by GCE)."""
    return f"projects/{project}/global/images/family/{IMAGE_FAMILY}"


def _firewall(
    name: str, settings: GcpDeploySettings, network: Any, description: str, **rule: Any
) -> Any:
    import pulumi_gcp as gcp

    return gcp.compute.Firewall(
        name,
        name=settings.name(name),
        project=settings.project,
        network=network,
        direction="INGRESS",
        description=description,
        **rule,
    )


def firewall_rules(settings: GcpDeploySettings, network: Any) -> None:
    port = str(settings.master_port)
    _firewall(
        "fw-master-api",
        settings,
        network,
        "the master's API and console from --inbound-cidr",
        source_ranges=[settings.inbound_cidr],
        target_tags=[settings.master_tag],
        allows=[{"protocol": "tcp", "ports": [port]}],
    )
    _firewall(
        "fw-agents-to-master",
        settings,
        network,
        "agents reach the master's API and agent socket",
        source_tags=[settings.agent_tag],
        target_tags=[settings.master_tag],
        allows=[{"protocol": "tcp", "ports": [port]}],
    )
    _firewall(
        "fw-master-to-agents",
        settings,
        network,
        "the master proxies to shells, notebooks and TensorBoards on agents",
        source_tags=[settings.master_tag],
        target_tags=[settings.agent_tag],
        allows=[{"protocol": "tcp", "ports": ["1024-65535"]}],
    )
    _firewall(
        "fw-agents-internal",
        settings,
        network,
        "agents talk to each other (distributed training)",
        source_tags=[settings.agent_tag],
        target_tags=[settings.agent_tag],
        allows=[{"protocol": "tcp"}, {"protocol": "udp"}, {"protocol": "icmp"}],
    )
    if settings.ssh_cidr:
        _firewall(
            "fw-ssh",
            settings,
            network,
            "SSH from --ssh-cidr",
            source_ranges=[settings.ssh_cidr],
            target_tags=[settings.master_tag, settings.agent_tag],
            allows=[{"protocol": "tcp", "ports": ["22"]}],
        )


def build(settings: GcpDeploySettings) -> Mapping[str, Any]:
    """Register every resource of the deployment; the stack's outputs."""
    import pulumi
    import pulumi_gcp as gcp

    config = pulumi.Config(CONFIG_NAMESPACE)
    join_token = config.require_secret("joinToken")
    db_password = config.require_secret("dbPassword")
    project, region, zone = settings.project, settings.region, settings.agent_zone
    image = settings.image or default_image(project)

    network: Any
    subnetwork: Any
    if settings.network and settings.subnetwork:
        network = f"projects/{project}/global/networks/{settings.network}"
        subnetwork = f"projects/{project}/regions/{region}/subnetworks/{settings.subnetwork}"
    else:
        net = gcp.compute.Network(
            "network",
            name=settings.name("net"),
            project=project,
            auto_create_subnetworks=False,
            description=f"Flotilla cluster {settings.cluster_id}",
        )
        sub = gcp.compute.Subnetwork(
            "subnet",
            name=settings.name("subnet"),
            project=project,
            region=region,
            network=net.id,
            ip_cidr_range=settings.subnet_cidr,
            private_ip_google_access=True,
        )
        network, subnetwork = net.id, sub.id
    firewall_rules(settings, network)

    master_sa = gcp.serviceaccount.Account(
        "master-sa",
        project=project,
        account_id=iam.service_account_id(settings.cluster_id, "master"),
        display_name=f"Flotilla master of {settings.cluster_id}",
    )
    agent_sa = gcp.serviceaccount.Account(
        "agent-sa",
        project=project,
        account_id=iam.service_account_id(settings.cluster_id, "agent"),
        display_name=f"Flotilla agents of {settings.cluster_id}",
    )
    role = gcp.projects.IAMCustomRole(
        "master-role",
        project=project,
        role_id=iam.custom_role_id(settings.cluster_id, "master"),
        title=f"Flotilla master ({settings.cluster_id})",
        description="What the master's GCP provider calls to run its agent pool",
        permissions=list(iam.MASTER_COMPUTE_PERMISSIONS),
    )
    gcp.projects.IAMMember(
        "master-role-binding",
        project=project,
        role=role.name,
        member=master_sa.member,
    )
    gcp.serviceaccount.IAMMember(
        "master-acts-as-agent",
        service_account_id=agent_sa.name,
        role=iam.ACT_AS_ROLE,
        member=master_sa.member,
    )

    bucket = gcp.storage.Bucket(
        "checkpoints",
        name=settings.bucket,
        project=project,
        location=region.upper(),
        storage_class="STANDARD",
        uniform_bucket_level_access=True,
        public_access_prevention="enforced",
        force_destroy=False,
        labels=labels(settings, "checkpoints"),
        opts=pulumi.ResourceOptions(retain_on_delete=True),
    )
    for who, account in (("master", master_sa), ("agent", agent_sa)):
        gcp.storage.BucketIAMMember(
            f"checkpoints-{who}", bucket=bucket.name, role=iam.BUCKET_ROLE, member=account.member
        )

    db_host: Any = LOCAL_DB_HOST
    if settings.db == "cloudsql":
        peering_range = gcp.compute.GlobalAddress(
            "db-range",
            name=settings.name("db-range"),
            project=project,
            purpose="VPC_PEERING",
            address_type="INTERNAL",
            prefix_length=PEERING_PREFIX_LENGTH,
            network=network,
        )
        peering = gcp.servicenetworking.Connection(
            "db-peering",
            network=network,
            service="servicenetworking.googleapis.com",
            reserved_peering_ranges=[peering_range.name],
        )
        database = gcp.sql.DatabaseInstance(
            "db",
            name=settings.name("db"),
            project=project,
            region=region,
            database_version=CLOUD_SQL_VERSION,
            deletion_protection=True,
            settings={
                "tier": settings.db_tier,
                "disk_size": settings.db_disk_gb,
                "disk_type": "PD_SSD",
                "disk_autoresize": True,
                "availability_type": "ZONAL",
                "user_labels": labels(settings, "db"),
                "ip_configuration": {
                    "ipv4_enabled": False,
                    "private_network": network,
                    "ssl_mode": "ENCRYPTED_ONLY",
                },
                "backup_configuration": {
                    "enabled": True,
                    "point_in_time_recovery_enabled": True,
                    "backup_retention_settings": {"retained_backups": 7},
                },
            },
            opts=pulumi.ResourceOptions(depends_on=[peering]),
        )
        gcp.sql.Database("db-database", name=DB_NAME, instance=database.name, project=project)
        gcp.sql.User(
            "db-user", name=DB_USER, instance=database.name, password=db_password, project=project
        )
        db_host = database.private_ip_address

    script: Any = pulumi.Output.all(
        network, subnetwork, agent_sa.email, db_host, db_password, join_token
    ).apply(
        lambda v: startup_script(
            settings,
            MasterWiring(
                image=image,
                network=v[0],
                subnetwork=v[1],
                agent_service_account=v[2],
                db_host=v[3],
                db_password=v[4],
                join_token=v[5],
            ),
        )
    )
    address = gcp.compute.Address(
        "master-ip",
        name=settings.name("master-ip"),
        project=project,
        region=region,
        address_type="EXTERNAL",
        network_tier="PREMIUM",
        labels=labels(settings, "master"),
    )
    master = gcp.compute.Instance(
        "master",
        name=settings.name("master"),
        project=project,
        zone=zone,
        machine_type=settings.master_machine_type,
        tags=[settings.master_tag],
        labels=labels(settings, "master"),
        boot_disk={
            "initialize_params": {
                "image": image,
                "size": settings.master_disk_gb,
                "type": BOOT_DISK_TYPE,
                "labels": labels(settings, "master"),
            },
            "auto_delete": True,
        },
        network_interfaces=[
            {"subnetwork": subnetwork, "access_configs": [{"nat_ip": address.address}]}
        ],
        service_account={"email": master_sa.email, "scopes": [CLOUD_PLATFORM_SCOPE]},
        shielded_instance_config={
            "enable_secure_boot": True,
            "enable_vtpm": True,
            "enable_integrity_monitoring": True,
        },
        metadata={
            "startup-script": pulumi.Output.secret(script),
            "enable-oslogin": "TRUE",
            "block-project-ssh-keys": "TRUE",
        },
        allow_stopping_for_update=True,
    )
    return {
        "master_url": address.address.apply(lambda ip: f"http://{ip}:{settings.master_port}"),
        "master_instance": master.name,
        "project": project,
        "region": region,
        "zone": zone,
        "bucket": bucket.name,
        "db": settings.db,
        "image": image,
        "agent_machine_type": settings.agent_machine_type,
        "max_dynamic_agents": settings.max_dynamic_agents,
    }


def program(settings: GcpDeploySettings) -> Program:
    """The inline program for ``settings`` (what the Automation API and the dry run run)."""
    return lambda: build(settings)
