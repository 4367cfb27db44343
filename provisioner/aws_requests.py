"""What the AWS provider says to EC2 and how it reads EC2's refusals, as pure functions.

Holds the RunInstances parameters, the tags Flotilla puts on its instances (and the EC2 tag
limits they must fit), and the classification of EC2 error codes into what the provisioning
loop does about them. Nothing here does I/O or holds a boto3 client: every input is passed in
(the AMI's root device name included), so it is table-testable. ``provisioner.aws`` makes the
calls, and its docstring explains the EC2 behaviour these parameters answer to.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import (
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from provisioner.config import AWSProviderConfig
from provisioner.types import ErrorClass, Market, Offer, OfferKey, ProviderError

# Tag restrictions: 50 tags per resource, keys up to 128 characters, values up to 256, and the
# "aws:" prefix is reserved.
MAX_TAGS_PER_RESOURCE = 50
TAG_KEY_MAX_CHARS = 128
TAG_VALUE_MAX_CHARS = 256

TAG_CLUSTER = "flotilla:cluster"
TAG_POOL = "flotilla:pool"
TAG_MANAGED_BY = "flotilla:managed-by"
TAG_MARKET = "flotilla:market"  # we tag it: moto has no instance-lifecycle filter
TAG_PRICE = "flotilla:price-per-hour"  # $/hour at launch, so cost survives price changes
TAG_CLIENT_TOKEN = "flotilla:client-token"
MANAGED_BY = "flotilla"

# EC2 error codes by what the loop does about them; anything else is TRANSIENT.
# fmt: off
_CAPACITY = {
    "InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
    "InsufficientFreeAddressesInSubnet", "SpotMaxPriceTooLow",
    "Unsupported",  # the instance type is not offered in this zone
}
_QUOTA = {"InstanceLimitExceeded", "MaxSpotInstanceCountExceeded", "VcpuLimitExceeded"}
_THROTTLE = {"RequestLimitExceeded", "Throttling", "ThrottlingException"}
_CONFIG = {
    "InvalidParameterValue", "InvalidParameter", "InvalidParameterCombination",
    "MissingParameter", "InvalidBlockDeviceMapping", "UnauthorizedOperation", "AuthFailure",
    "OptInRequired", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
}
_CONFIG_PREFIXES = (
    "InvalidAMIID.", "InvalidSubnetID.", "InvalidSubnet.", "InvalidGroup.",
    "InvalidSecurityGroupID.", "InvalidKeyPair.",
)
# fmt: on


# -- errors ------------------------------------------------------------------------------------


def classify(code: str) -> ErrorClass:
    """What the provisioning loop should do about an EC2 error code."""
    if code in _CAPACITY:
        return ErrorClass.CAPACITY
    if code in _QUOTA:
        return ErrorClass.QUOTA
    if code in _THROTTLE:
        return ErrorClass.THROTTLE
    if code in _CONFIG or code.startswith(_CONFIG_PREFIXES):
        return ErrorClass.CONFIG
    return ErrorClass.TRANSIENT


def as_provider_error(error: Exception, where: str, offer: OfferKey | None) -> ProviderError:
    """A boto3 failure as the loop's ProviderError: EC2's own code and message when EC2
    answered, CONFIG for missing credentials or region, TRANSIENT for anything else."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "Unknown")
        message = error.response.get("Error", {}).get("Message", str(error))
        return ProviderError(classify(code), f"{where}: {message} ({code})", offer)
    if isinstance(error, NoCredentialsError | PartialCredentialsError | NoRegionError):
        return ProviderError(ErrorClass.CONFIG, f"{where}: {error}", offer)
    return ProviderError(ErrorClass.TRANSIENT, f"{where}: {error}", offer)


def config_error(offer: Offer, message: str) -> ProviderError:
    """A CONFIG error about launching ``offer``."""
    return ProviderError(ErrorClass.CONFIG, f"{offer.key}: {message}", offer.key)


# -- tags --------------------------------------------------------------------------------------


def tag_problem(tags: dict[str, str]) -> str | None:
    """Why EC2 would refuse these tags, or None."""
    if len(tags) > MAX_TAGS_PER_RESOURCE:
        return f"{len(tags)} tags with Flotilla's own, over EC2's {MAX_TAGS_PER_RESOURCE}"
    for key, value in tags.items():
        if len(key) > TAG_KEY_MAX_CHARS or len(value) > TAG_VALUE_MAX_CHARS:
            limits = f"{TAG_KEY_MAX_CHARS} characters for keys, {TAG_VALUE_MAX_CHARS} for values"
            return f"tag {key!r} is too long: EC2 allows {limits}"
        if key.lower().startswith("aws:"):
            return f"tag {key!r}: the aws: prefix is reserved"
    return None


def price_string(price: float) -> str:
    """A $/hour price as EC2 takes it (MaxPrice) and as we tag it: no trailing zeros."""
    return f"{price:.6f}".rstrip("0").rstrip(".")


def instance_tags(
    config: AWSProviderConfig,
    *,
    cluster_id: str,
    pool: str,
    tag_value: str,
    offer: Offer,
    client_token: str,
) -> list[dict[str, str]]:
    """The tags for one launch: Flotilla's own (which identify the pool's instances and record
    market, price and client token) plus the config's ``custom_tags``, which may override only
    ``Name``. Raises a CONFIG ProviderError for tags EC2 would refuse."""
    ours = {
        "Name": f"flotilla-{cluster_id[:8]}-{pool}",
        config.tag_key: tag_value,
        TAG_CLUSTER: cluster_id,
        TAG_POOL: pool,
        TAG_MANAGED_BY: MANAGED_BY,
        TAG_MARKET: offer.market.value,
        TAG_PRICE: price_string(offer.price_per_hour),
        TAG_CLIENT_TOKEN: client_token,
    }
    tags = dict(ours)
    for tag in config.custom_tags:
        if tag.key in ours and tag.key != "Name":
            raise config_error(offer, f"custom_tags: {tag.key!r} is set by Flotilla")
        tags[tag.key] = tag.value
    problem = tag_problem(tags)
    if problem:
        raise config_error(offer, f"custom_tags: {problem}")
    return [{"Key": key, "Value": value} for key, value in tags.items()]


# -- RunInstances ------------------------------------------------------------------------------


def run_instances_params(
    config: AWSProviderConfig,
    *,
    offer: Offer,
    count: int,
    client_token: str,
    user_data: str,
    root_device: str,
    tags: list[dict[str, str]],
) -> dict[str, Any]:
    """RunInstances keyword arguments for up to ``count`` instances of ``offer``: IMDSv2 only,
    terminate on shutdown, a gp3 root volume of ``config.root_volume_size`` GiB mapped to the
    AMI's ``root_device``, ``tags`` on every resource launched, and a one-time spot request
    (capped at ``spot_max_price`` when set) for a spot offer."""
    tag_types = ["instance", "volume", "network-interface"]
    if offer.market == Market.SPOT:
        tag_types.append("spot-instances-request")
    params: dict[str, Any] = {
        "ImageId": config.image_id,
        "InstanceType": offer.instance_type,
        "MinCount": 1,
        "MaxCount": count,
        "ClientToken": client_token,
        "UserData": user_data,
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "BlockDeviceMappings": [
            {
                "DeviceName": root_device,
                "Ebs": {
                    "VolumeSize": config.root_volume_size,
                    "VolumeType": "gp3",
                    "DeleteOnTermination": True,
                },
            }
        ],
        "TagSpecifications": [{"ResourceType": t, "Tags": tags} for t in tag_types],
    }
    if config.ssh_key_name:
        params["KeyName"] = config.ssh_key_name
    if config.iam_instance_profile_arn:
        params["IamInstanceProfile"] = {"Arn": config.iam_instance_profile_arn}
    network = config.network_interface
    if network.subnet_id:
        interface: dict[str, Any] = {
            "DeviceIndex": 0,
            "SubnetId": network.subnet_id,
            "AssociatePublicIpAddress": network.public_ip,
            "DeleteOnTermination": True,
        }
        if network.security_group_id:
            interface["Groups"] = [network.security_group_id]
        params["NetworkInterfaces"] = [interface]
    else:  # the default VPC; its default subnets decide the public address
        if network.security_group_id:
            params["SecurityGroupIds"] = [network.security_group_id]
        if offer.zone:
            params["Placement"] = {"AvailabilityZone": offer.zone}
    if offer.market == Market.SPOT:
        spot_options: dict[str, Any] = {
            "SpotInstanceType": "one-time",
            "InstanceInterruptionBehavior": "terminate",
        }
        if config.spot_max_price is not None:
            spot_options["MaxPrice"] = price_string(config.spot_max_price)
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot_options}
    return params
