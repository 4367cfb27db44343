"""AWSProvider against moto (in-process): what we send to EC2, how we read it back, and how we
classify what EC2 refuses. Faults moto does not simulate are raised from botocore event hooks."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto import mock_aws

from provisioner.aws import AWSProvider
from provisioner.aws_requests import classify
from provisioner.config import AWSProviderConfig
from provisioner.prices import PriceBook
from provisioner.types import ErrorClass, InstanceState, Market, Offer, ProviderError
from provisioner.user_data import render_user_data

REGION = "us-east-1"
AMI = "ami-12c6146b"  # one of moto's built-in images; root device /dev/sda1
USER_DATA = render_user_data("http://10.0.0.2:8080", "gpu", "join-secret", "echo hi", {})


@pytest.fixture
def ec2(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


def make(pool: str = "gpu", cluster: str = "c1", **fields: Any) -> AWSProvider:
    settings = {"type": "aws", "instance_type": "g5.xlarge", "image_id": AMI, "region": REGION}
    config = AWSProviderConfig.model_validate({**settings, **fields})
    return AWSProvider(config, pool, cluster, USER_DATA, PriceBook(config.prices))


def on_demand(provider: AWSProvider) -> Offer:
    return next(o for o in provider.offers() if o.market == Market.ON_DEMAND)


def spot_offer(price: float = 0.3, zone: str | None = None) -> Offer:
    return Offer("g5.xlarge", zone, Market.SPOT, price, 1)


def capture(provider: AWSProvider, operation: str) -> list[dict[str, Any]]:
    """The parameters of every ``operation`` call, as our code built them."""
    calls: list[dict[str, Any]] = []
    provider.client.meta.events.register(
        f"provide-client-params.ec2.{operation}", lambda params, **_: calls.append(dict(params))
    )
    return calls


def inject(provider: AWSProvider, operation: str, code: str, when: Any = None) -> None:
    """Make ``operation`` fail with EC2 error ``code`` from its ``before-call`` hook (for the
    calls whose API parameters satisfy ``when``), as EC2 would answer."""
    calls = capture(provider, operation)

    def fail(**_: Any) -> None:
        if when is None or when(calls[-1]):
            error = {"Error": {"Code": code, "Message": f"injected {code}"}}
            raise ClientError(error, operation)

    provider.client.meta.events.register(f"before-call.ec2.{operation}", fail)


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def describe(ec2: Any, instance_id: str) -> dict[str, Any]:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservations[0]["Instances"][0]


def test_client_retries_adaptively():
    provider = make()
    assert provider.client.meta.config.retries["mode"] == "adaptive"


def test_on_demand_launch_requires_imdsv2_terminates_on_shutdown_and_carries_user_data(ec2):
    provider = make(root_volume_size=120)
    calls = capture(provider, "RunInstances")
    launched = provider.launch(on_demand(provider), 1, "tok-od")
    [params] = calls
    assert (params["MinCount"], params["MaxCount"], params["ClientToken"]) == (1, 1, "tok-od")
    assert "InstanceMarketOptions" not in params
    assert params["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert params["MetadataOptions"]["HttpTokens"] == "required"
    assert params["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/sda1",  # the AMI's root device, so the root volume is resized
            "Ebs": {"VolumeSize": 120, "VolumeType": "gp3", "DeleteOnTermination": True},
        }
    ]
    instance_id = launched[0].id
    stored = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    assert base64.b64decode(stored["UserData"]["Value"]).decode() == USER_DATA
    raw = describe(ec2, instance_id)
    assert raw["MetadataOptions"]["HttpTokens"] == "required"
    assert "InstanceLifecycle" not in raw
    behaviour = ec2.describe_instance_attribute(
        InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    assert launched[0].launched_at.tzinfo is not None


def test_spot_launch_is_one_time_terminates_on_interruption_with_max_price(ec2):
    provider = make(spot=True, spot_max_price=0.45)
    calls = capture(provider, "RunInstances")
    [launched] = provider.launch(spot_offer(), 1, "tok-spot")
    assert calls[0]["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {
            "SpotInstanceType": "one-time",
            "InstanceInterruptionBehavior": "terminate",
            "MaxPrice": "0.45",
        },
    }
    assert describe(ec2, launched.id)["InstanceLifecycle"] == "spot"
    spec_types = {spec["ResourceType"] for spec in calls[0]["TagSpecifications"]}
    assert "spot-instances-request" in spec_types


def test_spot_without_max_price_leaves_ec2_capping_at_on_demand(ec2):
    provider = make(spot=True)
    calls = capture(provider, "RunInstances")
    provider.launch(spot_offer(), 1, "tok")
    assert "MaxPrice" not in calls[0]["InstanceMarketOptions"]["SpotOptions"]


def test_instance_and_volume_carry_every_tag(ec2):
    provider = make(custom_tags=[{"key": "team", "value": "vision"}])
    [launched] = provider.launch(spot_offer(0.31), 1, "tok-tags")
    expected = {
        "Name": "flotilla-c1-gpu",
        "flotilla-pool": "c1/gpu",
        "flotilla:cluster": "c1",
        "flotilla:pool": "gpu",
        "flotilla:managed-by": "flotilla",
        "flotilla:market": "spot",
        "flotilla:price-per-hour": "0.31",
        "flotilla:client-token": "tok-tags",
        "team": "vision",
    }
    assert tags_of(describe(ec2, launched.id)) == expected
    [volume] = ec2.describe_volumes()["Volumes"]
    assert volume["Attachments"][0]["InstanceId"] == launched.id
    assert tags_of(volume) == expected
    assert volume["Size"] == 200 and volume["VolumeType"] == "gp3"


def test_custom_tag_cannot_overwrite_ours(ec2):
    provider = make(custom_tags=[{"key": "flotilla:pool", "value": "other"}])
    with pytest.raises(ProviderError) as raised:
        provider.launch(on_demand(provider), 1, "tok")
    assert raised.value.error_class == ErrorClass.CONFIG
    assert "custom_tags" in raised.value.message and "flotilla:pool" in raised.value.message
    assert ec2.describe_instances()["Reservations"] == []


def test_subnet_security_group_key_and_profile_are_used(ec2):
    subnet = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": ["us-east-1b"]}])
    subnet_id = subnet["Subnets"][0]["SubnetId"]
    group_id = ec2.create_security_group(GroupName="agents", Description="agents")["GroupId"]
    ec2.create_key_pair(KeyName="ops")
    iam = boto3.client("iam", region_name=REGION)
    profile = iam.create_instance_profile(InstanceProfileName="agent")["InstanceProfile"]
    provider = make(
        network_interface={"subnet_id": subnet_id, "security_group_id": group_id},
        ssh_key_name="ops",
        iam_instance_profile_arn=profile["Arn"],
    )
    offer = on_demand(provider)
    assert offer.zone == "us-east-1b"  # from the subnet
    calls = capture(provider, "RunInstances")
    [launched] = provider.launch(offer, 1, "tok-net")
    assert calls[0]["NetworkInterfaces"] == [
        {
            "DeviceIndex": 0,
            "SubnetId": subnet_id,
            "AssociatePublicIpAddress": True,
            "DeleteOnTermination": True,
            "Groups": [group_id],
        }
    ]
    assert calls[0]["KeyName"] == "ops"
    assert calls[0]["IamInstanceProfile"] == {"Arn": profile["Arn"]}
    raw = describe(ec2, launched.id)
    assert (raw["SubnetId"], raw["Placement"]["AvailabilityZone"]) == (subnet_id, "us-east-1b")


def test_without_subnet_security_group_ids_and_zone_placement(ec2):
    group_id = ec2.create_security_group(GroupName="agents", Description="agents")["GroupId"]
    provider = make(network_interface={"security_group_id": group_id})
    calls = capture(provider, "RunInstances")
    provider.launch(spot_offer(zone="us-east-1c"), 1, "tok")
    assert calls[0]["SecurityGroupIds"] == [group_id]
    assert calls[0]["Placement"] == {"AvailabilityZone": "us-east-1c"}
    assert "NetworkInterfaces" not in calls[0]


def test_a_launch_returns_what_ec2_created_even_if_fewer(ec2):
    provider = make()
    calls = capture(provider, "RunInstances")
    launched = provider.launch(on_demand(provider), 3, "tok-three")
    assert (calls[0]["MinCount"], calls[0]["MaxCount"]) == (1, 3)  # partial success allowed
    assert 1 <= len(launched) <= 3  # moto starts MinCount; EC2 as many as capacity allows
    assert sorted(i.id for i in launched) == sorted(i.id for i in provider.list_instances())


def test_same_client_token_twice_returns_the_first_launch(ec2):
    provider = make()
    calls = capture(provider, "RunInstances")
    first = provider.launch(on_demand(provider), 1, "retry-me")
    again = provider.launch(on_demand(provider), 1, "retry-me")
    assert [i.id for i in again] == [i.id for i in first]
    assert len(calls) == 1
    assert len(provider.list_instances()) == 1
    other = provider.launch(on_demand(provider), 1, "another")
    assert other[0].id != first[0].id


def test_capacity_error_names_the_offer_and_the_next_offer_launches(ec2):
    provider = make(spot=True)
    inject(
        provider,
        "RunInstances",
        "InsufficientInstanceCapacity",
        lambda p: "InstanceMarketOptions" in p,
    )
    spot, fallback = provider.offers()
    assert spot.market == Market.SPOT
    with pytest.raises(ProviderError) as raised:
        provider.launch(spot, 2, "tok-spot")
    error = raised.value
    assert error.error_class == ErrorClass.CAPACITY
    assert error.offer == spot.key
    assert error.message.startswith(f"{spot.key}: injected InsufficientInstanceCapacity")
    launched = provider.launch(fallback, 1, "tok-od")
    assert [i.offer.market for i in launched] == [Market.ON_DEMAND]
    assert [i.market for i in provider.list_instances()] == [Market.ON_DEMAND]


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        ("InsufficientInstanceCapacity", ErrorClass.CAPACITY),
        ("SpotMaxPriceTooLow", ErrorClass.CAPACITY),
        ("Unsupported", ErrorClass.CAPACITY),
        ("VcpuLimitExceeded", ErrorClass.QUOTA),
        ("MaxSpotInstanceCountExceeded", ErrorClass.QUOTA),
        ("RequestLimitExceeded", ErrorClass.THROTTLE),
        ("InvalidSubnetID.NotFound", ErrorClass.CONFIG),
        ("InvalidKeyPair.NotFound", ErrorClass.CONFIG),
        ("UnauthorizedOperation", ErrorClass.CONFIG),
        ("InternalError", ErrorClass.TRANSIENT),
    ],
)
def test_launch_errors_are_classified(ec2, code, error_class):
    provider = make()
    inject(provider, "RunInstances", code)
    with pytest.raises(ProviderError) as raised:
        provider.launch(on_demand(provider), 1, "tok")
    assert raised.value.error_class == error_class
    assert classify(code) == error_class


def test_unknown_image_is_a_config_error(ec2):
    provider = make(image_id="ami-00000000000000000")
    with pytest.raises(ProviderError) as raised:
        provider.launch(on_demand(provider), 1, "tok")
    assert raised.value.error_class == ErrorClass.CONFIG
    assert "ami-00000000000000000" in raised.value.message


def test_throttled_list_is_throttle(ec2):
    provider = make()
    inject(provider, "DescribeInstances", "RequestLimitExceeded")
    with pytest.raises(ProviderError) as raised:
        provider.list_instances()
    assert raised.value.error_class == ErrorClass.THROTTLE


def test_unreachable_endpoint_is_transient(ec2):
    provider = make()

    def unreachable(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com")

    provider.client.meta.events.register("before-call.ec2.DescribeInstances", unreachable)
    with pytest.raises(ProviderError) as raised:
        provider.list_instances()
    assert raised.value.error_class == ErrorClass.TRANSIENT


def test_terminate_is_idempotent_and_per_id(ec2):
    provider = make()
    ids = [provider.launch(on_demand(provider), 1, f"tok-{n}")[0].id for n in range(2)]
    first = provider.terminate(ids)
    assert [(r.instance_id, r.ok) for r in first] == [(ids[0], True), (ids[1], True)]
    assert all(r.ok for r in provider.terminate(ids))  # twice: still fine
    assert provider.list_instances() == []


def test_terminate_unknown_id_is_done_and_does_not_block_the_others(ec2):
    provider = make()
    [live] = provider.launch(on_demand(provider), 1, "tok")
    unknown = "i-0123456789abcdef0"
    results = provider.terminate([unknown, live.id])
    assert [(r.instance_id, r.ok) for r in results] == [(unknown, True), (live.id, True)]
    assert "already gone" in results[0].message
    assert describe(ec2, live.id)["State"]["Name"] in ("shutting-down", "terminated")


def test_terminate_malformed_id_fails_alone(ec2):
    provider = make()
    [live] = provider.launch(on_demand(provider), 1, "tok")
    inject(
        provider,
        "TerminateInstances",
        "InvalidInstanceID.Malformed",
        lambda p: "bogus" in p["InstanceIds"],
    )
    results = provider.terminate(["bogus", live.id])
    assert [(r.instance_id, r.ok) for r in results] == [("bogus", False), (live.id, True)]


def test_list_shows_only_this_pools_live_instances(ec2):
    provider = make(spot=True)
    [mine] = provider.launch(spot_offer(0.42), 1, "mine")
    make(pool="cpu").launch(on_demand(provider), 1, "other-pool")
    make(cluster="c2").launch(on_demand(provider), 1, "other-cluster")
    ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="g5.xlarge")  # untagged
    [gone] = provider.launch(on_demand(provider), 1, "gone")
    provider.terminate([gone.id])
    ec2.describe_instances()  # moto moves shutting-down → terminated on the next describe
    [instance] = provider.list_instances()
    assert instance.id == instance.agent_id == mine.id
    assert (instance.instance_type, instance.market, instance.price_per_hour) == (
        "g5.xlarge",
        Market.SPOT,
        0.42,
    )
    assert instance.slots == 1 and instance.state == InstanceState.RUNNING
    assert instance.zone and instance.zone.startswith(REGION)
    assert abs(instance.launched_at - datetime.now(UTC)) < timedelta(minutes=5)


def test_orphans_from_a_previous_master_are_found_by_tags_and_terminated(ec2):
    before_restart = make()
    orphans = [before_restart.launch(on_demand(before_restart), 1, f"o{n}")[0].id for n in range(3)]
    bystander = make(cluster="other").launch(on_demand(before_restart), 1, "b")[0].id
    after_restart = make()  # knows nothing but its tags
    listed = sorted(i.id for i in after_restart.list_instances())
    assert listed == sorted(orphans)
    assert all(r.ok for r in after_restart.terminate(listed))
    ec2.describe_instances()
    assert after_restart.list_instances() == []
    assert describe(ec2, bystander)["State"]["Name"] == "running"


def test_on_demand_offer_only_without_spot(ec2):
    [offer] = make().offers()
    assert (offer.market, offer.price_per_hour, offer.slots, offer.zone) == (
        Market.ON_DEMAND,
        PriceBook().on_demand("g5.xlarge"),
        1,
        None,
    )


def test_spot_offer_uses_the_price_history(ec2):
    subnet = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": ["us-east-1a"]}])
    provider = make(spot=True, network_interface={"subnet_id": subnet["Subnets"][0]["SubnetId"]})
    calls = capture(provider, "DescribeSpotPriceHistory")
    spot, od = provider.offers()
    assert (spot.market, spot.zone, od.zone) == (Market.SPOT, "us-east-1a", "us-east-1a")
    assert spot.price_per_hour == 0.00001  # what moto's history says
    assert calls[0]["InstanceTypes"] == ["g5.xlarge"]
    assert calls[0]["AvailabilityZone"] == "us-east-1a"
    provider.offers()
    assert len(calls) == 1  # cached


def history(provider: AWSProvider, entries: list[tuple[str, float, int]]) -> None:
    """Replace the spot price history with (zone, $, minutes ago) entries."""

    def replace(parsed: dict[str, Any], **_: Any) -> None:
        now = datetime.now(UTC)
        parsed["SpotPriceHistory"] = [
            {
                "AvailabilityZone": zone,
                "InstanceType": "g5.xlarge",
                "SpotPrice": str(price),
                "Timestamp": now - timedelta(minutes=age),
            }
            for zone, price, age in entries
        ]

    provider.client.meta.events.register("after-call.ec2.DescribeSpotPriceHistory", replace)


def test_spot_offer_takes_the_latest_price_of_the_dearest_zone(ec2):
    provider = make(spot=True)
    history(provider, [("us-east-1a", 0.9, 60), ("us-east-1a", 0.3, 1), ("us-east-1b", 0.4, 5)])
    assert provider.offers()[0].price_per_hour == 0.4


def test_spot_over_the_max_price_is_offered_at_its_market_price_for_the_decider_to_refuse(ec2):
    provider = make(spot=True, spot_max_price=0.5)
    history(provider, [("us-east-1a", 0.7, 1)])
    spot, od = provider.offers()
    assert (spot.market, spot.price_per_hour, od.market) == (Market.SPOT, 0.7, Market.ON_DEMAND)


def test_spot_max_price_refused_at_launch_is_a_capacity_error(ec2):
    provider = make(spot=True, spot_max_price=0.5)
    inject(provider, "RunInstances", "SpotMaxPriceTooLow")
    with pytest.raises(ProviderError) as raised:
        provider.launch(spot_offer(0.4), 1, "tok")
    assert raised.value.error_class == ErrorClass.CAPACITY
    assert raised.value.offer == spot_offer(0.4).key


def test_spot_without_history_is_estimated_from_on_demand(ec2):
    provider = make(spot=True)
    history(provider, [])
    spot = provider.offers()[0]
    book = PriceBook()
    assert spot.price_per_hour == pytest.approx(book.on_demand("g5.xlarge") * 0.35, rel=1e-3)


def test_unknown_instance_type_is_a_config_error_naming_it(ec2):
    with pytest.raises(ProviderError) as raised:
        make(instance_type="x9.huge").offers()
    assert raised.value.error_class == ErrorClass.CONFIG
    assert "x9.huge" in raised.value.message and "provider.prices" in raised.value.message


def test_overrides_price_and_slots(ec2):
    [offer] = make(instance_type="x9.huge", prices={"x9.huge": 2.5}, instance_slots=4).offers()
    assert (offer.price_per_hour, offer.slots) == (2.5, 4)


def test_bad_client_token_is_refused_before_any_call(ec2):
    provider = make()
    with pytest.raises(ValueError, match="64"):
        provider.launch(on_demand(provider), 1, "x" * 65)
