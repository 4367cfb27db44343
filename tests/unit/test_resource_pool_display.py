"""``det resource-pool list`` tells elastic pools apart, and an empty elastic pool still has
the slot type its instances will bring."""

from __future__ import annotations

from typing import Any

import pytest

from cli.resource_pool import pool_row
from master.api.resource_pools import slot_type
from master.config import ResourcePoolConfig


def pool(provider: dict[str, Any] | None) -> ResourcePoolConfig:
    return ResourcePoolConfig.model_validate({"pool_name": "p", "provider": provider})


def gcp(instance_type: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "gcp",
        "project": "p",
        "zone": "us-central1-a",
        "instance_type": instance_type,
        "boot_disk_source_image": "projects/p/global/images/agent",
    }


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        (None, "TYPE_UNSPECIFIED"),
        ({"type": "local"}, "TYPE_CPU"),
        ({"type": "aws", "instance_type": "g4dn.xlarge", "image_id": "ami-1"}, "TYPE_CUDA"),
        ({"type": "aws", "instance_type": "m5.large", "image_id": "ami-1"}, "TYPE_CPU"),
        (
            gcp({"machine_type": "n1-standard-8", "gpu_type": "nvidia-l4", "gpu_num": 1}),
            "TYPE_CUDA",
        ),
        (gcp({"machine_type": "g2-standard-8"}), "TYPE_CUDA"),  # its L4 comes with the type
        (gcp({"machine_type": "e2-standard-4"}), "TYPE_CPU"),
    ],
)
def test_an_empty_pool_has_the_slot_type_of_its_instances(
    provider: dict[str, Any] | None, expected: str
) -> None:
    assert slot_type(pool(provider), set()) == expected


def test_agents_decide_the_slot_type_when_there_are_any() -> None:
    assert slot_type(pool({"type": "local"}), {"TYPE_CUDA"}) == "TYPE_CUDA"
    assert slot_type(pool(None), {"TYPE_CUDA", "TYPE_CPU"}) == "TYPE_UNSPECIFIED"


def test_the_type_column_says_elastic_for_a_provisioned_pool() -> None:
    static = {"name": "s", "type": "RESOURCE_POOL_TYPE_STATIC", "provisioning": None}
    elastic = {
        "name": "e",
        "type": "RESOURCE_POOL_TYPE_STATIC",
        "slotType": "TYPE_CPU",
        "provisioning": {"provider": "local", "status": "idle"},
    }
    assert pool_row(static)[2] == "STATIC"
    assert pool_row(elastic)[2] == "ELASTIC (local)"
    assert pool_row(elastic)[6] == "CPU"
