"""The deployment's network: a new VPC (public and private subnets in two zones) or the subnets
of an existing one, and the security groups.

Who reaches whom:

- master: its port from ``--inbound-cidr`` and from the agents (they join over the VPC);
  SSH only from ``--ssh-cidr``, when given.
- agents: everything from the master (it proxies shells, notebooks and TensorBoards to ports
  its tasks choose) and from each other (distributed training); SSH only from ``--ssh-cidr``.
- database: PostgreSQL's port from the master only.

Instances sit in a public subnet with a public address and reach the internet (pip, CloudWatch)
through the internet gateway; nothing reaches them that the groups do not allow. That saves the
NAT gateway (about $33 a month plus traffic) a private-subnet design would need. The private
subnets, with no route out, hold the database. An S3 gateway endpoint (free) keeps checkpoint
traffic off the internet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.aws.settings import DB_PORT, AwsDeploySettings

VPC_CIDR = "10.40.0.0/16"
PUBLIC_CIDRS = ("10.40.0.0/20", "10.40.16.0/20")
PRIVATE_CIDRS = ("10.40.128.0/20", "10.40.144.0/20")
ZONES = 2
ALL_TRAFFIC = "-1"
SSH_PORT = 22

Tags = Callable[[str], dict[str, str]]


@dataclass
class Network:
    """Pulumi outputs of the network: where instances go and which groups guard what."""

    vpc_id: Any
    instance_subnet_id: Any  # master and agents
    db_subnet_ids: list[Any]
    master_sg: Any
    agent_sg: Any
    db_sg: Any | None


def _new_vpc(settings: AwsDeploySettings, tags: Tags) -> tuple[Any, list[Any], list[Any]]:
    import pulumi_aws as aws

    zones = aws.get_availability_zones(state="available").names[:ZONES]
    if len(zones) < ZONES:
        raise ValueError(f"{settings.region} has fewer than {ZONES} available zones")
    vpc = aws.ec2.Vpc(
        "vpc",
        cidr_block=VPC_CIDR,
        enable_dns_hostnames=True,
        enable_dns_support=True,
        tags=tags("vpc"),
    )
    gateway = aws.ec2.InternetGateway("igw", vpc_id=vpc.id, tags=tags("igw"))
    public_routes = aws.ec2.RouteTable(
        "public-routes",
        vpc_id=vpc.id,
        routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
        tags=tags("public-routes"),
    )
    private_routes = aws.ec2.RouteTable(
        "private-routes", vpc_id=vpc.id, tags=tags("private-routes")
    )
    public, private = [], []
    for index, zone in enumerate(zones):
        subnet = aws.ec2.Subnet(
            f"public-{index}",
            vpc_id=vpc.id,
            cidr_block=PUBLIC_CIDRS[index],
            availability_zone=zone,
            map_public_ip_on_launch=False,
            tags=tags(f"public-{index}"),
        )
        aws.ec2.RouteTableAssociation(
            f"public-{index}", subnet_id=subnet.id, route_table_id=public_routes.id
        )
        public.append(subnet.id)
        subnet = aws.ec2.Subnet(
            f"private-{index}",
            vpc_id=vpc.id,
            cidr_block=PRIVATE_CIDRS[index],
            availability_zone=zone,
            map_public_ip_on_launch=False,
            tags=tags(f"private-{index}"),
        )
        aws.ec2.RouteTableAssociation(
            f"private-{index}", subnet_id=subnet.id, route_table_id=private_routes.id
        )
        private.append(subnet.id)
    aws.ec2.VpcEndpoint(
        "s3-endpoint",
        vpc_id=vpc.id,
        service_name=f"com.amazonaws.{settings.region}.s3",
        vpc_endpoint_type="Gateway",
        route_table_ids=[public_routes.id],
        tags=tags("s3-endpoint"),
    )
    return vpc.id, public, private


def _group(name: str, vpc_id: Any, description: str, tags: Tags) -> Any:
    import pulumi_aws as aws

    group = aws.ec2.SecurityGroup(name, vpc_id=vpc_id, description=description, tags=tags(name))
    aws.vpc.SecurityGroupEgressRule(
        f"{name}-egress",
        security_group_id=group.id,
        ip_protocol=ALL_TRAFFIC,
        cidr_ipv4="0.0.0.0/0",
        description="outbound: package mirrors, S3, CloudWatch, EC2 API",
        tags=tags(f"{name}-egress"),
    )
    return group


def _allow(
    name: str, group: Any, tags: Tags, description: str, port: int | None = None, **source: Any
) -> None:
    import pulumi_aws as aws

    ports: dict[str, Any] = {"from_port": port, "to_port": port} if port else {}
    aws.vpc.SecurityGroupIngressRule(
        name,
        security_group_id=group.id,
        ip_protocol="tcp" if port else ALL_TRAFFIC,
        description=description,
        tags=tags(name),
        **ports,
        **source,
    )


def _cidr(block: str) -> dict[str, str]:
    return {"cidr_ipv6": block} if ":" in block else {"cidr_ipv4": block}


def network(settings: AwsDeploySettings, tags: Tags) -> Network:
    """Create (or adopt) the network and its security groups."""
    if settings.vpc_id:
        vpc_id: Any = settings.vpc_id
        public: list[Any] = list(settings.subnet_ids)
        private: list[Any] = list(settings.subnet_ids)
    else:
        vpc_id, public, private = _new_vpc(settings, tags)
    master = _group("master-sg", vpc_id, "Flotilla master", tags)
    agent = _group("agent-sg", vpc_id, "Flotilla agents", tags)
    port = settings.master_port
    _allow("master-from-inbound", master, tags, "the master's API and console", port,
           **_cidr(settings.inbound_cidr))  # fmt: skip
    _allow("master-from-agents", master, tags, "agents and tasks reach the master", port,
           referenced_security_group_id=agent.id)  # fmt: skip
    _allow("agents-from-master", agent, tags, "the master proxies to tasks",
           referenced_security_group_id=master.id)  # fmt: skip
    _allow("agents-from-agents", agent, tags, "distributed training between agents",
           referenced_security_group_id=agent.id)  # fmt: skip
    if settings.ssh_cidr:
        _allow("master-ssh", master, tags, "SSH", SSH_PORT, **_cidr(settings.ssh_cidr))
        _allow("agents-ssh", agent, tags, "SSH", SSH_PORT, **_cidr(settings.ssh_cidr))
    db = None
    if settings.db == "rds":
        import pulumi_aws as aws

        db = aws.ec2.SecurityGroup(
            "db-sg", vpc_id=vpc_id, description="Flotilla database", tags=tags("db-sg")
        )
        _allow("db-from-master", db, tags, "PostgreSQL from the master only", DB_PORT,
               referenced_security_group_id=master.id)  # fmt: skip
    return Network(vpc_id, public[0], private, master, agent, db)
