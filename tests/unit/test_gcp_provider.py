"""The GCP provider: its config, the requests it builds, how it reads Compute's errors, and its
calls against the loopback fake of the Compute REST API (``tests/fake_gcp_compute.py``: GCP has
no emulator for Compute Engine, so the fake is the check of our requests)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from master.config import ResourcePoolConfig
from provisioner.config import GCPProviderConfig
from provisioner.gcp import PREEMPTED, GCPProvider
from provisioner.gcp_prices import GCPPriceBook
from provisioner.gcp_requests import (
    as_dict,
    classify,
    insert_body,
    instance_name,
    label_value,
    request_id,
)
from provisioner.loop import PoolLoop
from provisioner.types import Demand, ErrorClass, InstanceState, Market, Offer, ProviderError
from tests.fake_gcp_compute import (
    QUOTA,
    STOCKOUT,
    FakeComputeState,
    Fault,
    fake_compute,
)
from tests.fake_gcp_compute_rules import NAME_RE
from tests.unit.test_provisioning_loop import FakeWorld

PROJECT = "flotilla-test"
ZONES = ["us-central1-a", "us-central1-b"]
IMAGE = "projects/flotilla-test/global/images/flotilla-agent"
SCRIPT = "#!/bin/bash\necho agent\n"
T4 = {"machine_type": "n1-standard-8", "gpu_type": "nvidia-tesla-t4", "gpu_num": 1}


def settings(**fields: Any) -> dict[str, Any]:
    return {
        "type": "gcp",
        "project": PROJECT,
        "zones": ZONES,
        "instance_type": T4,
        "boot_disk_source_image": IMAGE,
        **fields,
    }


def gcp_config(**fields: Any) -> GCPProviderConfig:
    return GCPProviderConfig.model_validate(settings(**fields))


@pytest.fixture
def compute() -> Iterator[tuple[str, FakeComputeState]]:
    with fake_compute(FakeComputeState(project=PROJECT, zones=set(ZONES))) as running:
        yield running


def make(endpoint: str, pool: str = "gpu", clock: Any = None, **fields: Any) -> GCPProvider:
    config = gcp_config(endpoint_url=endpoint, **fields)
    book = GCPPriceBook(config.prices, config.spot_prices)
    extra = {"clock": clock} if clock is not None else {}
    return GCPProvider(config, pool, "c1", SCRIPT, book, **extra)


def offer(provider: GCPProvider, zone: str, market: Market) -> Offer:
    return next(o for o in provider.offers() if o.zone == zone and o.market == market)


# ---- config ----------------------------------------------------------------------------------


def test_a_gcp_pool_is_read_with_determineds_names() -> None:
    pool = ResourcePoolConfig.model_validate(
        {"pool_name": "gpu", "provider": settings(preemptible=True, zones=[], zone="us-east1-c")}
    )
    provider = pool.provider
    assert isinstance(provider, GCPProviderConfig)
    assert provider.spot is True
    assert provider.all_zones == ["us-east1-c"]
    assert provider.instance_type.name == "n1-standard-8+1xnvidia-tesla-t4"
    assert provider.instance_type_name == "n1-standard-8+1xnvidia-tesla-t4"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"preemptible": True, "spot": False}, "preemptible"),
        ({"zone": "us-central1-a"}, "zones"),
        ({"zones": []}, "zone"),
        ({"zones": ["us-central1-a", "us-central1-a"]}, "zones"),
        (
            {"instance_type": {"machine_type": "n1-standard-8", "gpu_type": "nvidia-tesla-t4"}},
            "gpu_num",
        ),
        ({"instance_type": {"machine_type": "n1-standard-8", "gpu_num": 2}}, "gpu_type"),
        ({"name_prefix": "Agent-"}, "name_prefix"),
        ({"name_prefix": "a" * 60}, "name_prefix"),
        ({"label_key": "9pool"}, "label_key"),
        ({"label_value": "Has Spaces"}, "label_value"),
        ({"network_tags": ["ok", "Not_OK"]}, "network_tags"),
        ({"spot_prices": {"n1-standard-8": 0}}, "spot_prices"),
        ({"image_id": "ami-1"}, "image_id"),
        ({"project": None}, "project"),
        ({"boot_disk_size": 5}, "boot_disk_size"),
    ],
)
def test_bad_gcp_settings_name_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        ResourcePoolConfig.model_validate({"pool_name": "gpu", "provider": settings(**fields)})
    assert field in str(raised.value)


def test_an_unknown_provider_type_lists_the_allowed_ones() -> None:
    with pytest.raises(ValidationError) as raised:
        ResourcePoolConfig.model_validate({"pool_name": "gpu", "provider": {"type": "azure"}})
    assert "'local', 'aws', 'gcp'" in str(raised.value)


# ---- requests --------------------------------------------------------------------------------


def body(config: GCPProviderConfig, market: Market, zone: str = "us-central1-a") -> dict[str, Any]:
    built = insert_body(
        config,
        offer=Offer("x", zone, market, 0.5, 1),
        name="flotilla-agent-0123456789ab",
        startup_script=SCRIPT,
        labels={"flotilla-pool": "c1-gpu"},
    )
    return as_dict(built)


def test_a_spot_gpu_vm_is_spot_deleted_on_preemption_and_terminated_on_maintenance() -> None:
    config = gcp_config(
        network_tags=["flotilla-agent"],
        service_account={"email": "agents@p.iam.gserviceaccount.com"},
        network_interface={"subnetwork": "regions/us-central1/subnetworks/a", "external_ip": True},
    )
    sent = body(config, Market.SPOT)
    assert sent["scheduling"] == {
        "provisioningModel": "SPOT",
        "instanceTerminationAction": "DELETE",
        "automaticRestart": False,
        "onHostMaintenance": "TERMINATE",
    }
    assert sent["guestAccelerators"] == [
        {
            "acceleratorType": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4",
            "acceleratorCount": 1,
        }
    ]
    assert sent["machineType"] == "zones/us-central1-a/machineTypes/n1-standard-8"
    assert sent["metadata"]["items"] == [{"key": "startup-script", "value": SCRIPT}]
    (disk,) = sent["disks"]
    assert disk["boot"] and disk["autoDelete"]
    assert disk["initializeParams"]["sourceImage"] == IMAGE
    assert disk["initializeParams"]["diskSizeGb"] == "200"
    assert sent["tags"] == {"items": ["flotilla-agent"]}
    assert sent["serviceAccounts"][0]["scopes"] == [
        "https://www.googleapis.com/auth/cloud-platform"
    ]
    (interface,) = sent["networkInterfaces"]
    assert interface["subnetwork"] == "regions/us-central1/subnetworks/a"
    assert interface["accessConfigs"] == [{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}]


def test_an_on_demand_cpu_vm_migrates_and_restarts() -> None:
    config = gcp_config(instance_type={"machine_type": "e2-standard-4"})
    sent = body(config, Market.ON_DEMAND)
    assert sent["scheduling"] == {
        "provisioningModel": "STANDARD",
        "automaticRestart": True,
        "onHostMaintenance": "MIGRATE",
    }
    assert "guestAccelerators" not in sent
    assert "accessConfigs" not in sent["networkInterfaces"][0]
    assert "serviceAccounts" not in sent


def test_names_and_request_ids_are_the_same_on_a_retry_and_differ_per_vm() -> None:
    first = instance_name("flotilla-agent-", "gpu-token", 0)
    assert first == instance_name("flotilla-agent-", "gpu-token", 0)
    assert first != instance_name("flotilla-agent-", "gpu-token", 1)
    assert NAME_RE.match(first) and len(first) <= 63
    rid = request_id("gpu-token", 0)
    assert rid == request_id("gpu-token", 0) != request_id("gpu-token", 1)
    assert uuid.UUID(rid).version == 5


def test_label_values_keep_only_what_gcp_allows() -> None:
    assert label_value("3F2A-Cluster/GPU pool") == "3f2a-cluster-gpu-pool"
    assert len(label_value("x" * 100)) == 63


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ZONE_RESOURCE_POOL_EXHAUSTED", None, ErrorClass.CAPACITY),
        ("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", None, ErrorClass.CAPACITY),
        ("GCE_STOCKOUT", None, ErrorClass.CAPACITY),
        ("QUOTA_EXCEEDED", None, ErrorClass.QUOTA),
        ("quotaExceeded", 403, ErrorClass.QUOTA),
        ("rateLimitExceeded", 403, ErrorClass.THROTTLE),
        ("", 429, ErrorClass.THROTTLE),
        ("notFound", 404, ErrorClass.CONFIG),
        ("invalid", 400, ErrorClass.CONFIG),
        ("forbidden", 403, ErrorClass.CONFIG),
        ("SERVICE_ACCOUNT_NOT_FOUND", None, ErrorClass.CONFIG),
        ("backendError", 503, ErrorClass.TRANSIENT),
        ("INTERNAL_ERROR", None, ErrorClass.TRANSIENT),
    ],
)
def test_compute_errors_are_classified_like_ec2s(
    code: str, status: int | None, expected: ErrorClass
) -> None:
    assert classify(code, status) == expected


# ---- prices ----------------------------------------------------------------------------------


def test_a_vm_costs_its_machine_type_plus_its_gpus_overridable_per_pool() -> None:
    book = GCPPriceBook()
    shape = gcp_config().instance_type
    machine = book.table.machine_types["n1-standard-8"]
    gpu = book.table.gpus["nvidia-tesla-t4"]
    assert book.price(shape, Market.ON_DEMAND) == round(machine.on_demand + gpu.on_demand, 6)
    assert book.price(shape, Market.SPOT) == round(machine.spot + gpu.spot, 6)
    assert book.slots(shape) == 1
    cheaper = GCPPriceBook(spot={"nvidia-tesla-t4": 0.01})
    assert cheaper.price(shape, Market.SPOT) == round(machine.spot + 0.01, 6)
    unknown = gcp_config(instance_type={"machine_type": "n9-mystery-8"}).instance_type
    with pytest.raises(LookupError, match=r"provider.prices: \{n9-mystery-8"):
        book.price(unknown, Market.ON_DEMAND)


# ---- against the fake Compute API ------------------------------------------------------------


def test_offers_one_per_zone_and_market(compute: tuple[str, FakeComputeState]) -> None:
    provider = make(compute[0], spot=True)
    offers = provider.offers()
    assert [(o.zone, o.market) for o in offers] == [
        ("us-central1-a", Market.SPOT),
        ("us-central1-a", Market.ON_DEMAND),
        ("us-central1-b", Market.SPOT),
        ("us-central1-b", Market.ON_DEMAND),
    ]
    assert {o.instance_type for o in offers} == {"n1-standard-8+1xnvidia-tesla-t4"}
    assert offers[0].price_per_hour < offers[1].price_per_hour


def test_launch_list_and_a_retried_launch_never_doubles(
    compute: tuple[str, FakeComputeState],
) -> None:
    endpoint, state = compute
    provider = make(endpoint, spot=True)
    spot = offer(provider, "us-central1-b", Market.SPOT)
    launched = provider.launch(spot, 2, "gpu-1")
    again = provider.launch(spot, 2, "gpu-1")
    assert [i.id for i in again] == [i.id for i in launched]
    assert len(state.live()) == 2
    inserts = [
        r for r in state.requests if r[0] == "POST" and r[1].split("?")[0].endswith("/instances")
    ]
    assert all(re.search(r"requestId=[0-9a-f-]{36}", path) for _, path, _ in inserts)
    listed = provider.list_instances()
    assert sorted(i.id for i in listed) == sorted(i.id for i in launched)
    one = listed[0]
    assert (one.zone, one.market, one.state) == (
        "us-central1-b",
        Market.SPOT,
        InstanceState.RUNNING,
    )
    assert one.price_per_hour == spot.price_per_hour
    assert one.instance_type == spot.instance_type
    assert one.agent_id == one.id
    assert one.launched_at <= datetime.now(UTC)
    labels = state.live()[0]["labels"]
    assert labels["flotilla-market"] == "spot"
    assert labels["flotilla-pool"] == "c1-gpu"


def test_another_pools_vms_are_never_listed(compute: tuple[str, FakeComputeState]) -> None:
    endpoint, _ = compute
    ours, theirs = make(endpoint, pool="gpu"), make(endpoint, pool="cpu")
    theirs.launch(offer(theirs, "us-central1-a", Market.ON_DEMAND), 1, "cpu-1")
    assert ours.list_instances() == []
    assert len(theirs.list_instances()) == 1


@pytest.mark.parametrize(
    ("fault", "expected", "text"),
    [
        (STOCKOUT, ErrorClass.CAPACITY, "ZONE_RESOURCE_POOL_EXHAUSTED"),
        (QUOTA, ErrorClass.QUOTA, "quota NVIDIA_T4_GPUS exceeded"),
        (
            Fault("", "Rate Limit Exceeded", 403, sync=True, reason="rateLimitExceeded"),
            ErrorClass.THROTTLE,
            "rateLimitExceeded",
        ),
    ],
)
def test_refused_launches_raise_classified_errors(
    compute: tuple[str, FakeComputeState], fault: Fault, expected: ErrorClass, text: str
) -> None:
    endpoint, state = compute
    provider = make(endpoint, spot=True)
    state.inject("us-central1-a", "spot", fault)
    spot = offer(provider, "us-central1-a", Market.SPOT)
    with pytest.raises(ProviderError) as raised:
        provider.launch(spot, 1, "gpu-1")
    assert raised.value.error_class == expected
    assert text in raised.value.message
    assert raised.value.offer == spot.key
    assert state.live() == []
    provider.launch(offer(provider, "us-central1-a", Market.ON_DEMAND), 1, "gpu-2")  # unaffected


def test_a_missing_image_is_a_config_error(compute: tuple[str, FakeComputeState]) -> None:
    endpoint, state = compute
    state.images = {"projects/flotilla-test/global/images/other"}
    provider = make(endpoint)
    with pytest.raises(ProviderError) as raised:
        provider.launch(offer(provider, "us-central1-a", Market.ON_DEMAND), 1, "gpu-1")
    assert raised.value.error_class == ErrorClass.CONFIG
    assert "flotilla-agent' was not found" in raised.value.message


def test_a_refusal_after_acceptance_comes_back_from_failed_launches(
    compute: tuple[str, FakeComputeState],
) -> None:
    endpoint, state = compute
    state.operation_delay_s = 0.3
    state.inject("us-central1-a", "spot", STOCKOUT)
    provider = make(endpoint, spot=True)
    spot = offer(provider, "us-central1-a", Market.SPOT)
    (launched,) = provider.launch(spot, 1, "gpu-1")  # accepted: the operation still runs
    assert provider.failed_launches() == []
    deadline = time.monotonic() + 10
    failed = []
    while not failed:
        failed = provider.failed_launches()
        assert time.monotonic() < deadline, "the refusal never came back"
    (failure,) = failed
    assert failure.instance_id == launched.id
    assert failure.error.error_class == ErrorClass.CAPACITY
    assert failure.error.offer == spot.key
    assert provider.failed_launches() == []  # returned once
    assert state.live() == []


def test_an_operation_past_its_timeout_is_written_off_and_its_vm_deleted(
    compute: tuple[str, FakeComputeState],
) -> None:
    endpoint, state = compute
    state.operation_delay_s = 60
    now = [0.0]
    provider = make(endpoint, clock=lambda: now[0], operation_timeout_period="30s")
    provider.launch(offer(provider, "us-central1-a", Market.ON_DEMAND), 1, "t")
    now[0] = 29
    assert provider.failed_launches() == []
    now[0] = 31
    (failure,) = provider.failed_launches()
    assert failure.error.error_class == ErrorClass.TRANSIENT
    assert "not done within 0:00:30" in failure.error.message
    assert state.live() == []


def test_terminate_is_idempotent(compute: tuple[str, FakeComputeState]) -> None:
    endpoint, state = compute
    provider = make(endpoint)
    (vm,) = provider.launch(offer(provider, "us-central1-b", Market.ON_DEMAND), 1, "gpu-1")
    (first,) = provider.terminate([vm.id])
    assert first.ok and "deleting" in first.message
    assert state.live() == []
    # A repeat is answered from its request id (or NotFound): done either way, never an error.
    again, never = provider.terminate([vm.id, "flotilla-agent-never"])
    assert again.ok and (again.instance_id, never.instance_id) == (vm.id, "flotilla-agent-never")
    assert (never.ok, never.message) == (True, "already gone")


def test_a_preempted_spot_vm_is_listed_as_interrupted(
    compute: tuple[str, FakeComputeState],
) -> None:
    endpoint, state = compute
    provider = make(endpoint, spot=True)
    (vm,) = provider.launch(offer(provider, "us-central1-a", Market.SPOT), 1, "gpu-1")
    state.preempt("us-central1-a", vm.id)
    (listed,) = provider.list_instances()
    assert listed.interruption == PREEMPTED == "preempted by GCP"
    assert listed.state == InstanceState.TERMINATING


# ---- in the provisioning loop ----------------------------------------------------------------


def loop_for(provider: GCPProvider, world: FakeWorld) -> PoolLoop:
    return PoolLoop("gpu", provider.config, provider, world, lambda: datetime.now(UTC))


def test_a_stockout_moves_the_launch_to_the_next_zone_in_the_same_pass(
    compute: tuple[str, FakeComputeState],
) -> None:
    endpoint, state = compute
    state.inject("us-central1-a", "spot", STOCKOUT)
    provider = make(endpoint, spot=True, boot_hedge=0)  # one launch: no boot racing
    world = FakeWorld([Demand("job", 1)])
    asyncio.run(loop_for(provider, world).run_pass())
    (vm,) = state.live()
    assert vm["zone"].endswith("/zones/us-central1-b")
    assert vm["scheduling"]["provisioningModel"] == "SPOT"
    kinds = [kind for _, kind, _ in world.events]
    assert kinds.index("launch_failed:capacity") < kinds.index("launched")


def test_a_refusal_seen_later_backs_the_zone_off_and_closes_the_instance(
    compute: tuple[str, FakeComputeState],
) -> None:
    endpoint, state = compute
    state.operation_delay_s = 0.2
    state.inject("us-central1-a", "spot", STOCKOUT)
    provider = make(endpoint, spot=True, boot_hedge=0)  # one launch: no boot racing
    world = FakeWorld([Demand("job", 1)])
    loop = loop_for(provider, world)
    asyncio.run(loop.run_pass())  # accepted in zone a, PROVISIONING until refused
    deadline = time.monotonic() + 10
    while not any(kind == "launch_failed:capacity" for _, kind, _ in world.events):
        assert time.monotonic() < deadline, world.events
        time.sleep(0.05)
        asyncio.run(loop.run_pass())
    terminated = [reason for _, kind, reason in world.events if kind == "terminated"]
    assert terminated and "launch refused" in terminated[0]
    assert any(b.key.zone == "us-central1-a" for b in loop.backoffs.values())
    launched = [i for i, kind, _ in world.events if kind == "launched"]
    assert len(launched) == 2  # one refused in zone a, then one in zone b: never two at once
    (vm,) = state.live()
    assert vm["zone"].endswith("/zones/us-central1-b")


def test_a_preempted_vm_has_its_work_requeued_and_is_deleted(
    compute: tuple[str, FakeComputeState],
) -> None:
    endpoint, state = compute
    provider = make(endpoint, spot=True)
    (vm,) = provider.launch(offer(provider, "us-central1-a", Market.SPOT), 1, "gpu-1")
    state.preempt("us-central1-a", vm.id)
    world = FakeWorld([])
    asyncio.run(loop_for(provider, world).run_pass())
    assert (vm.id, "interrupted", "preempted by GCP") in world.events
    assert (vm.id, "terminated", "preempted by GCP") in world.events
    assert world.interruptions == [(vm.id, "preempted by GCP")]
    assert state.live() == []


def test_a_quota_refusal_backs_off_the_market_in_every_zone_naming_the_quota(
    compute: tuple[str, FakeComputeState],
) -> None:
    endpoint, state = compute
    for zone in ZONES:
        state.inject(zone, "spot", QUOTA)
    provider = make(endpoint, spot=True, spot_fallback={"policy": "spot_only"})
    loop = loop_for(provider, FakeWorld([Demand("job", 1)]))
    asyncio.run(loop.run_pass())
    spot = {k: b for k, b in loop.backoffs.items() if k.market == Market.SPOT}
    assert {k.zone for k in spot} == set(ZONES)
    assert all("quota NVIDIA_T4_GPUS exceeded" in b.reason for b in spot.values())
    assert state.live() == []


def test_without_google_credentials_the_provider_says_how_to_give_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    config = gcp_config()
    with pytest.raises(ValueError, match="no Google credentials found"):
        GCPProvider(config, "gpu", "c1", SCRIPT, GCPPriceBook())


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("STAGING", InstanceState.PENDING),
        ("TERMINATED", InstanceState.RUNNING),  # stopped by hand: left to the agent rules
        ("DEPROVISIONING", InstanceState.TERMINATING),
        ("SOME_NEW_STATUS", InstanceState.RUNNING),  # never dropped from the list
    ],
)
def test_an_on_demand_vm_is_listed_whatever_its_status(
    compute: tuple[str, FakeComputeState], status: str, expected: InstanceState
) -> None:
    endpoint, state = compute
    provider = make(endpoint)
    (vm,) = provider.launch(offer(provider, "us-central1-a", Market.ON_DEMAND), 1, "gpu-1")
    with state.lock:
        state.instances[("us-central1-a", vm.id)].update(
            status=status, lastStopTimestamp="2026-12-07T04:30:24.123-08:00"
        )
    (listed,) = provider.list_instances()
    assert (listed.state, listed.interruption) == (expected, None)
