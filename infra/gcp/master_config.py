"""The master's ``master.yaml`` and startup script for a GCP deployment, as pure functions.

``master.yaml`` is built as a dict of the master's own config fields (``master/config.py``) and
wired to what the stack made: the ``gcp`` pool's project, zone, image, subnetwork, network tag
and service account, the checkpoint bucket and the database. At boot the script appends
``external_url`` (the VM's internal address, known only then); tests validate the result with
``MasterConfig``.

How GCE treats the script: the ``startup-script`` metadata value runs as root on every boot, so
unlike EC2 user-data it needs no cloud-init settings to follow re-runs of ``up``. A metadata
value may hold 256 KB. Instance metadata is readable by whoever may ``compute.instances.get`` in
the project and by every process on the VM, which is why the master VM runs no user code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from infra.common.master_boot import MASTER_YAML_MARKER, master_boot_script
from infra.gcp.settings import DB_PORT, POOL_NAME, GcpDeploySettings

TEMPLATE_NAME = "master-startup-gcp.sh.tmpl"
# "The maximum size of a single metadata value is 256 KB." (Compute Engine: About VM metadata)
METADATA_VALUE_MAX_BYTES = 256 * 1024
DATA_DIR = "/var/lib/flotilla"
DB_USER = "flotilla"
DB_NAME = "flotilla"
LOCAL_DB_HOST = "127.0.0.1"
# The pool's label: every agent VM carries `flotilla-deployment: <cluster id>`, which is how
# `det deploy gcp down` finds the agents the master launched (they are not in the stack).
DEPLOYMENT_LABEL = "flotilla-deployment"
# Agents reach GCS, the master and each other; the master's service account is what the
# master uses, the agents' is what their tasks use (checkpoints only).
AGENT_SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]


@dataclass(frozen=True)
class MasterWiring:
    """What the stack made that the master's config names."""

    image: str
    network: str
    subnetwork: str
    agent_service_account: str
    db_host: str
    db_password: str
    join_token: str


def master_config(settings: GcpDeploySettings, wiring: MasterWiring) -> dict[str, Any]:
    """``master.yaml`` as a dict (without ``external_url``, which the startup script appends)."""
    instance_type: dict[str, Any] = {"machine_type": settings.agent_machine_type}
    if settings.agent_gpu_type:
        instance_type |= {"gpu_type": settings.agent_gpu_type, "gpu_num": settings.gpu_num}
    provider: dict[str, Any] = {
        "type": "gcp",
        "project": settings.project,
        "zone": settings.agent_zone,
        "instance_type": instance_type,
        "min_instances": 0,
        "max_instances": settings.max_dynamic_agents,
        "spot": settings.spot,
        "boot_disk_source_image": wiring.image,
        "network_interface": {
            "network": wiring.network,
            "subnetwork": wiring.subnetwork,
            "external_ip": False,
        },
        "network_tags": [settings.agent_tag],
        "service_account": {"email": wiring.agent_service_account, "scopes": AGENT_SCOPES},
        "label_key": DEPLOYMENT_LABEL,
        "label_value": settings.cluster_id,
        "name_prefix": settings.name("agent-"),
    }
    return {
        "host": "0.0.0.0",
        "port": settings.master_port,
        "cluster_name": settings.cluster_id,
        "data_dir": DATA_DIR,
        "db": {
            "host": wiring.db_host,
            "port": DB_PORT,
            "user": DB_USER,
            "password": wiring.db_password,
            "name": DB_NAME,
            # Cloud SQL's private IP is reached over the VPC peering; the instance only
            # accepts encrypted connections (ssl_mode ENCRYPTED_ONLY in the program).
            "ssl_mode": "require" if settings.db == "cloudsql" else "disable",
        },
        "agent_join_token": wiring.join_token,
        "resource_pools": [
            {
                "pool_name": POOL_NAME,
                "description": f"{settings.agent_machine_type} agents of {settings.cluster_id}",
                "provider": provider,
            }
        ],
        "default_resource_pool": POOL_NAME,
        "checkpoint_storage": {"type": "gcs", "bucket": settings.bucket},
    }


def master_yaml(settings: GcpDeploySettings, wiring: MasterWiring) -> str:
    return yaml.safe_dump(master_config(settings, wiring), sort_keys=False, width=1_000_000)


def startup_script(settings: GcpDeploySettings, wiring: MasterWiring) -> str:
    """The master VM's ``startup-script``; ``ValueError`` if over GCE's metadata value limit."""
    script = master_boot_script(
        TEMPLATE_NAME,
        master_yaml=master_yaml(settings, wiring),
        db_password=wiring.db_password,
        local_db=settings.db == "local",
        port=settings.master_port,
    )
    size = len(script.encode("utf-8"))
    if size > METADATA_VALUE_MAX_BYTES:
        raise ValueError(f"startup-script is {size} bytes, over GCE's {METADATA_VALUE_MAX_BYTES}")
    return script


def master_yaml_from_script(script: str, external_url: str) -> str:
    """The ``master.yaml`` the script writes, with ``external_url`` as it appends it."""
    opening = f"<<'{MASTER_YAML_MARKER}'\n"
    start = script.index(opening) + len(opening)
    end = script.index(f"\n{MASTER_YAML_MARKER}\n", start)
    return script[start:end] + f"\nexternal_url: {external_url}\n"
