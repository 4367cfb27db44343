"""The Pulumi program of an AWS deployment: everything ``det deploy aws up`` creates.

Resources (names are Pulumi's logical names; AWS names carry the cluster id):

- the network and security groups (``infra.aws.network``);
- ``checkpoints``: the S3 bucket, its public access block and default encryption. Kept when the
  stack is destroyed (``retain_on_delete``): it holds the users' checkpoints;
- ``logs``: the CloudWatch log group, with retention;
- ``agent-role``/``agent-policy``/``agent-profile`` and ``master-role``/``master-policy``/
  ``master-profile``: IAM (``infra.aws.iam`` has the documents);
- ``db-subnets``/``db``: PostgreSQL on RDS, encrypted, private, backed up (not with ``--db
  local``: PostgreSQL then runs on the master);
- ``master``: the instance (IMDSv2 only, encrypted root volume, user-data from
  ``infra.aws.master_config``), and ``master-ip``, its Elastic IP, so the URL survives updates.

Every taggable resource carries ``Name``, ``flotilla:deployment = <cluster id>`` and
``flotilla:managed-by = flotilla``. Stable names and inputs make a re-run an in-place update: a
new ``--max-dynamic-agents`` changes only the master's user-data, which EC2 applies by stopping
and starting it (same volume, same database, same bucket).

Two values must survive re-runs and stay secret: the agents' join token and the database
password. They are stack secrets (``flotilla:joinToken``, ``flotilla:dbPassword``) generated
once by ``infra.common.automation.deploy_up``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infra.aws import iam
from infra.aws.master_config import DB_NAME, DB_USER, LOCAL_DB_HOST, MasterWiring, user_data
from infra.aws.network import network
from infra.aws.settings import AwsDeploySettings
from infra.common.automation import Program

PROJECT = "flotilla-aws"
CONFIG_NAMESPACE = "flotilla"
JOIN_TOKEN_KEY = "flotilla:joinToken"
DB_PASSWORD_KEY = "flotilla:dbPassword"
TAG_MANAGED_BY = "flotilla:managed-by"
TAG_ROLE = "flotilla:role"
MANAGED_BY = "flotilla"
# What agent_image/agent.pkr.hcl tags its AMIs with; the image holds det-master and det-agent.
IMAGE_TAGS = {"flotilla:image": "agent", "flotilla:master": "yes"}
RDS_ENGINE = "postgres"
RDS_ENGINE_VERSION = "16"


def resource_tags(cluster_id: str) -> Any:
    def tags(name: str) -> dict[str, str]:
        return {
            "Name": f"flotilla-{cluster_id}-{name}",
            iam.TAG_DEPLOYMENT: cluster_id,
            TAG_MANAGED_BY: MANAGED_BY,
        }

    return tags


def bucket_name(cluster_id: str, account: str, region: str) -> str:
    """Globally unique per account, region and cluster; at most 63 characters (the cluster id
    is at most 20, see ``infra.aws.settings``)."""
    return f"flotilla-{cluster_id}-{account}-{region}"


def log_group_arn(region: str, account: str, group: str) -> str:
    return f"arn:aws:logs:{region}:{account}:log-group:{group}"


def find_image(region: str) -> str:
    """The newest image of this account tagged by agent_image/ (a Pulumi data-source call)."""
    import pulumi_aws as aws

    filters: list[Any] = [{"name": f"tag:{k}", "values": [v]} for k, v in IMAGE_TAGS.items()]
    return str(aws.ec2.get_ami(most_recent=True, owners=["self"], filters=filters).id)


def _role(name: str, settings: AwsDeploySettings, tags: Any, document: Any) -> tuple[Any, Any]:
    import pulumi_aws as aws

    role = aws.iam.Role(
        f"{name}-role",
        name=f"flotilla-{settings.cluster_id}-{name}",
        assume_role_policy=iam.assume_role_document(),
        tags=tags(f"{name}-role"),
    )
    aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=document(role))
    profile = aws.iam.InstanceProfile(
        f"{name}-profile",
        name=f"flotilla-{settings.cluster_id}-{name}",
        role=role.name,
        tags=tags(f"{name}-profile"),
    )
    return role, profile


def build(settings: AwsDeploySettings) -> Mapping[str, Any]:
    """Register every resource of the deployment; the stack's outputs."""
    import pulumi
    import pulumi_aws as aws

    config = pulumi.Config(CONFIG_NAMESPACE)
    join_token = config.require_secret("joinToken")
    db_password = config.require_secret("dbPassword")
    tags = resource_tags(settings.cluster_id)
    region = settings.region
    account = str(aws.get_caller_identity().account_id)
    image_id = settings.image_id or find_image(region)
    net = network(settings, tags)

    bucket = bucket_name(settings.cluster_id, account, region)
    checkpoints = aws.s3.Bucket(
        "checkpoints",
        bucket=bucket,
        tags=tags("checkpoints"),
        opts=pulumi.ResourceOptions(retain_on_delete=True),
    )
    after_bucket = pulumi.ResourceOptions(depends_on=[checkpoints])
    aws.s3.BucketPublicAccessBlock(
        "checkpoints",
        bucket=bucket,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=after_bucket,
    )
    aws.s3.BucketServerSideEncryptionConfiguration(
        "checkpoints",
        bucket=bucket,
        rules=[
            {
                "apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"},
                "bucket_key_enabled": True,
            }
        ],
        opts=after_bucket,
    )
    aws.cloudwatch.LogGroup(
        "logs",
        name=settings.log_group,
        retention_in_days=settings.log_retention_days,
        tags=tags("logs"),
    )
    logs_arn = log_group_arn(region, account, settings.log_group)

    agent_role, agent_profile = _role(
        "agent",
        settings,
        tags,
        lambda role: iam.agent_document(bucket=bucket, log_group_arn=logs_arn),
    )

    def master_document(role: Any) -> Any:
        return pulumi.Output.all(agent_role.arn, net.instance_subnet_id, net.agent_sg.id).apply(
            lambda v: iam.master_document(
                region=region,
                account=account,
                cluster_id=settings.cluster_id,
                image_id=image_id,
                subnet_id=v[1],
                agent_security_group_id=v[2],
                keypair=settings.keypair,
                agent_role_arn=v[0],
                bucket=bucket,
                log_group_arn=logs_arn,
            )
        )

    _, master_profile = _role("master", settings, tags, master_document)

    db_host: Any = LOCAL_DB_HOST
    if net.db_sg is not None:
        subnets = aws.rds.SubnetGroup(
            "db-subnets",
            name=f"flotilla-{settings.cluster_id}",
            subnet_ids=net.db_subnet_ids,
            tags=tags("db-subnets"),
        )
        database = aws.rds.Instance(
            "db",
            identifier=f"flotilla-{settings.cluster_id}",
            engine=RDS_ENGINE,
            engine_version=RDS_ENGINE_VERSION,
            instance_class=settings.db_instance_type,
            allocated_storage=settings.db_storage_gb,
            storage_type="gp3",
            storage_encrypted=True,
            publicly_accessible=False,
            db_subnet_group_name=subnets.name,
            vpc_security_group_ids=[net.db_sg.id],
            username=DB_USER,
            password=db_password,
            db_name=DB_NAME,
            backup_retention_period=settings.db_backup_days,
            copy_tags_to_snapshot=True,
            skip_final_snapshot=False,
            final_snapshot_identifier=f"flotilla-{settings.cluster_id}-final",
            apply_immediately=True,
            tags=tags("db"),
        )
        db_host = database.address

    rendered: Any = pulumi.Output.all(
        net.instance_subnet_id,
        net.agent_sg.id,
        agent_profile.arn,
        db_host,
        db_password,
        join_token,
    ).apply(
        lambda v: user_data(
            settings,
            MasterWiring(
                image_id=image_id,
                subnet_id=v[0],
                agent_security_group_id=v[1],
                agent_instance_profile_arn=v[2],
                bucket=bucket,
                db_host=v[3],
                db_password=v[4],
                join_token=v[5],
            ),
        )
    )
    master = aws.ec2.Instance(
        "master",
        ami=image_id,
        instance_type=settings.master_instance_type,
        subnet_id=net.instance_subnet_id,
        vpc_security_group_ids=[net.master_sg.id],
        iam_instance_profile=master_profile.name,
        key_name=settings.keypair,
        associate_public_ip_address=True,
        metadata_options={
            "http_endpoint": "enabled",
            "http_tokens": "required",
            "http_put_response_hop_limit": 1,
        },
        root_block_device={
            "encrypted": True,
            "volume_type": "gp3",
            "volume_size": settings.master_root_gb,
            "delete_on_termination": True,
            "tags": tags("master-root"),
        },
        user_data=pulumi.Output.secret(rendered),
        tags={**tags("master"), TAG_ROLE: "master"},
    )
    address = aws.ec2.Eip("master-ip", domain="vpc", instance=master.id, tags=tags("master-ip"))
    return {
        "master_url": address.public_ip.apply(lambda ip: f"http://{ip}:{settings.master_port}"),
        "master_instance_id": master.id,
        "region": region,
        "bucket": bucket,
        "log_group": settings.log_group,
        "vpc_id": net.vpc_id,
        "db": settings.db,
        "image_id": image_id,
        "agent_instance_type": settings.agent_instance_type,
        "max_dynamic_agents": settings.max_dynamic_agents,
    }


def program(settings: AwsDeploySettings) -> Program:
    """The inline program for ``settings`` (what the Automation API and the dry run run)."""
    return lambda: build(settings)
