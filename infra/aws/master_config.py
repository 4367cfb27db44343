"""The master's ``master.yaml`` and boot script for an AWS deployment, as pure functions.

``master.yaml`` is built as a dict of the master's own config fields (``master/config.py``) and
wired to what the stack made: the ``aws`` pool's subnet, security group, instance profile and
image, the checkpoint bucket, the log group and the database. At boot the script appends
``external_url`` (the instance's private address, known only then); tests validate the result
with ``MasterConfig``.

How cloud-init treats user-data, and what that means here: a shell script in user-data runs once
per instance, but the master's config must follow re-runs of ``up`` (a new
``--max-dynamic-agents``). EC2 applies new user-data by stopping and starting the instance, and a
MIME multi-part user-data whose cloud-config sets ``scripts-user`` to ``always`` makes cloud-init
run the script on every boot. The boundary is fixed so that the same inputs render the same bytes
(otherwise every ``up`` would see a change). EC2 limits user-data to 16 KB.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import yaml

from infra.aws.iam import TAG_DEPLOYMENT
from infra.aws.settings import DB_PORT, POOL_NAME, AwsDeploySettings
from infra.common.master_boot import MASTER_YAML_MARKER, master_boot_script

TEMPLATE_NAME = "master-user-data.sh.tmpl"
# "User data is limited to 16 KB, in raw form, before it is base64-encoded." (EC2 User Guide)
USER_DATA_MAX_BYTES = 16 * 1024
MIME_BOUNDARY = "==FLOTILLA-MASTER-USER-DATA=="
DATA_DIR = "/var/lib/flotilla"
DB_USER = "flotilla"
DB_NAME = "flotilla"
LOCAL_DB_HOST = "127.0.0.1"
# Run user scripts on every boot, not only the first (cloud-init's per-module frequency).
CLOUD_CONFIG = "#cloud-config\ncloud_final_modules:\n  - [scripts-user, always]\n"


@dataclass(frozen=True)
class MasterWiring:
    """What the stack made that the master's config names."""

    image_id: str
    subnet_id: str
    agent_security_group_id: str
    agent_instance_profile_arn: str
    bucket: str
    db_host: str
    db_password: str
    join_token: str


def master_config(settings: AwsDeploySettings, wiring: MasterWiring) -> dict[str, Any]:
    """``master.yaml`` as a dict (without ``external_url``, which the boot script appends)."""
    provider: dict[str, Any] = {
        "type": "aws",
        "instance_type": settings.agent_instance_type,
        "min_instances": 0,
        "max_instances": settings.max_dynamic_agents,
        "spot": settings.spot,
        "image_id": wiring.image_id,
        "region": settings.region,
        "iam_instance_profile_arn": wiring.agent_instance_profile_arn,
        "network_interface": {
            "subnet_id": wiring.subnet_id,
            "security_group_id": wiring.agent_security_group_id,
            "public_ip": True,
        },
        # The deployment's tag: the master's IAM policy lets it launch and terminate only
        # instances carrying it, and `det deploy aws down` finds the agents by it.
        "custom_tags": [{"key": TAG_DEPLOYMENT, "value": settings.cluster_id}],
    }
    if settings.spot_max_price is not None:
        provider["spot_max_price"] = settings.spot_max_price
    if settings.keypair:
        provider["ssh_key_name"] = settings.keypair
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
            "ssl_mode": "require" if settings.db == "rds" else "disable",
        },
        "agent_join_token": wiring.join_token,
        "resource_pools": [
            {
                "pool_name": POOL_NAME,
                "description": f"{settings.agent_instance_type} agents of {settings.cluster_id}",
                "provider": provider,
            }
        ],
        "default_resource_pool": POOL_NAME,
        "checkpoint_storage": {"type": "s3", "bucket": wiring.bucket},
        "logging": {
            "type": "cloudwatch",
            "log_group": settings.log_group,
            "region": settings.region,
            "retention_days": settings.log_retention_days,
        },
    }


def master_yaml(settings: AwsDeploySettings, wiring: MasterWiring) -> str:
    return yaml.safe_dump(master_config(settings, wiring), sort_keys=False, width=1_000_000)


def boot_script(settings: AwsDeploySettings, wiring: MasterWiring) -> str:
    """The shell script part of the user-data (also what tests run in a scratch root)."""
    return master_boot_script(
        TEMPLATE_NAME,
        master_yaml=master_yaml(settings, wiring),
        db_password=wiring.db_password,
        local_db=settings.db == "local",
        port=settings.master_port,
    )


def user_data(settings: AwsDeploySettings, wiring: MasterWiring) -> str:
    """The master instance's user-data: cloud-config (scripts on every boot) + the boot script.
    ``ValueError`` if it is over EC2's limit."""
    message = MIMEMultipart(boundary=MIME_BOUNDARY)
    message.attach(MIMEText(CLOUD_CONFIG, "cloud-config"))
    message.attach(MIMEText(boot_script(settings, wiring), "x-shellscript"))
    rendered = message.as_string()
    size = len(rendered.encode("utf-8"))
    if size > USER_DATA_MAX_BYTES:
        raise ValueError(f"master user-data is {size} bytes, over EC2's {USER_DATA_MAX_BYTES}")
    return rendered


def master_yaml_from_user_data(rendered: str, external_url: str) -> str:
    """The ``master.yaml`` the boot script writes, with ``external_url`` as it appends it (for
    tests and for reading a deployed instance's user-data back)."""
    import email

    message = email.message_from_string(rendered)
    for part in message.walk():
        if part.get_content_type() == "text/x-shellscript":
            script = part.get_payload(decode=True)
            text = script.decode("utf-8") if isinstance(script, bytes) else str(script)
            start = text.index(f"<<'{MASTER_YAML_MARKER}'\n") + len(MASTER_YAML_MARKER) + 4
            end = text.index(f"\n{MASTER_YAML_MARKER}\n", start)
            return text[start:end] + f"\nexternal_url: {external_url}\n"
    raise ValueError("no shell script part in this user-data")
