"""The AWS deployment program run under Pulumi's mocks once per variant per test session
(``functools.cache``), shared by the infra tests: each run takes about a second."""

from __future__ import annotations

from functools import cache
from typing import Any

from infra.aws.dry_run import plan
from infra.aws.settings import AwsDeploySettings
from infra.common.plan import Plan

BASE: dict[str, Any] = {
    "cluster_id": "demo",
    "region": "us-east-1",
    "inbound_cidr": "203.0.113.0/24",
}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "local-db": {"db": "local"},
    "existing-vpc": {"vpc_id": "vpc-0existing", "subnet_ids": ("subnet-0aaa", "subnet-0bbb")},
    "ssh-spot": {
        "ssh_cidr": "198.51.100.7/32",
        "keypair": "ops",
        "spot": True,
        "spot_max_price": 0.4,
        "image_id": "ami-0123456789abcdef0",
    },
    "more-agents": {"max_dynamic_agents": 12},
}


def settings(variant: str) -> AwsDeploySettings:
    return AwsDeploySettings(**{**BASE, **VARIANTS[variant]})


@cache
def planned(variant: str) -> Plan:
    return plan(settings(variant))
