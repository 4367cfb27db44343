"""The AWS EC2 provider: launches, lists and terminates a pool's agent instances with boto3.

How EC2 really behaves, and what this module does about it:

- Eventual consistency. For seconds after RunInstances returns, DescribeInstances may not list
  the new instances and TerminateInstances may answer InvalidInstanceID.NotFound for them.
  Terminate treats NotFound as "already gone"; if the instance was in fact too new to be seen,
  the next list (by tags, our only source of truth) finds it again and it is terminated then.
- Partial launches. RunInstances with MinCount=1, MaxCount=n starts as many as capacity allows
  (at least one) or fails with InsufficientInstanceCapacity; fewer than asked is normal.
- Client tokens. EC2 answers a repeated RunInstances with the same ClientToken (and the same
  parameters) with the first call's instances, so a launch retried after a timeout does not
  double-launch. Some AWS-compatible endpoints (moto among them) ignore the token, so we also
  tag instances with it and look for them before launching.
- Spot. A one-time spot request that terminates on interruption, made through RunInstances'
  InstanceMarketOptions: nothing persists to relaunch behind our back. The price moves per
  zone; without MaxPrice EC2 caps it at on-demand, and with one it refuses to launch while
  the market is above it (SpotMaxPriceTooLow). EC2 posts a 2-minute interruption notice in
  the metadata service (which we make IMDSv2-only); agents do not watch it yet, so a
  reclaimed instance shows up as an agent that disconnected.
- Throttling. EC2 rate-limits API calls per account and action (RequestLimitExceeded).
  botocore's adaptive retry mode retries with client-side rate limiting; what still fails is
  reported as THROTTLE. One filtered, paginated DescribeInstances per list keeps us cheap.
- The root volume's device name depends on the AMI (/dev/sda1 on Ubuntu, /dev/xvda on Amazon
  Linux); mapping another name adds a second volume instead of sizing the root one, so it is
  read from DescribeImages.
- Terminated instances stay visible for about an hour; lists filter on live states.
  InstanceInitiatedShutdownBehavior=terminate makes an agent's ``shutdown -h now`` (its
  connection_lost_hook) terminate the instance instead of leaving a stopped one.

This module makes the calls; what goes into them (RunInstances parameters, tags) and what EC2's
error codes mean are pure functions in ``provisioner.aws_requests``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from provisioner.aws_requests import (
    TAG_CLIENT_TOKEN,
    TAG_CLUSTER,
    TAG_MARKET,
    TAG_POOL,
    TAG_PRICE,
    as_provider_error,
    config_error,
    instance_tags,
    run_instances_params,
)
from provisioner.config import AWSProviderConfig
from provisioner.prices import PriceBook, SpotPriceCache, UnknownInstanceType, latest_spot_price
from provisioner.types import (
    ErrorClass,
    Instance,
    InstanceState,
    LaunchedInstance,
    Market,
    Offer,
    OfferKey,
    ProviderError,
    TerminateResult,
)

log = logging.getLogger(__name__)

# botocore retries (adaptive mode): attempts per call, the first included.
API_MAX_ATTEMPTS = 8
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
# DescribeInstances MaxResults: "You cannot specify this parameter and the instance IDs
# parameter in the same request" and it must be 5 to 1000.
DESCRIBE_PAGE_SIZE = 1000
# TerminateInstances: "Up to 1000 instance IDs. We recommend breaking up this request into
# smaller batches."
TERMINATE_MAX_IDS = 1000
TERMINATE_BATCH = 100
assert TERMINATE_BATCH <= TERMINATE_MAX_IDS
# RunInstances ClientToken: "Maximum 64 ASCII characters."
CLIENT_TOKEN_MAX_CHARS = 64
# Spot prices change gradually; re-read the history at most this often per zone.
SPOT_PRICE_CACHE_S = 300.0
SPOT_PRODUCT_DESCRIPTIONS = ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"]

# Live states, and what they mean for the decider. stopping/stopped only happen when someone
# stops an instance by hand (our shutdowns terminate): it is listed as running so its silent
# agent gets it terminated by the disconnected/never-joined rules instead of it being forgotten.
_STATES = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "stopping": InstanceState.RUNNING,
    "stopped": InstanceState.RUNNING,
    "shutting-down": InstanceState.TERMINATING,
}

# What TerminateInstances answers for ids it does not know (too new, long gone, or not ids);
# every other EC2 error code is classified in provisioner.aws_requests.
_NOT_FOUND = "InvalidInstanceID.NotFound"
_MALFORMED = "InvalidInstanceID.Malformed"
_INSTANCE_ID = re.compile(r"\bi-[0-9a-zA-Z]+\b")


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class AWSProvider:
    """A pool's instances on EC2 (see the module docstring for how EC2 behaves).

    Assumes ``config`` is a validated ``type: aws`` section and ``user_data`` was rendered by
    ``provisioner.user_data``. Lists only instances carrying all of this pool's tags, so it
    never sees (or terminates) anyone else's. ``client`` is the boto3 EC2 client, exposed so
    tests can hook its events."""

    def __init__(
        self,
        config: AWSProviderConfig,
        pool: str,
        cluster_id: str,
        user_data: str,
        prices: PriceBook,
    ):
        self.config = config
        self.pool = pool
        self.cluster_id = cluster_id
        self.user_data = user_data
        self.prices = prices
        self.tag_value = config.tag_value or f"{cluster_id}/{pool}"
        botocore_config = Config(
            retries={"mode": "adaptive", "max_attempts": API_MAX_ATTEMPTS},
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
        )
        try:
            self.client: Any = boto3.session.Session().client(
                "ec2",
                region_name=config.region,
                endpoint_url=config.endpoint_url,
                config=botocore_config,
            )
        except NoRegionError:
            raise ValueError(
                "provider.region: not set, and the AWS SDK has no default region "
                "(AWS_DEFAULT_REGION or ~/.aws/config)"
            ) from None
        self._root_device: str | None = None
        self._zone_known = False
        self._zone: str | None = None
        self._spot_cache = SpotPriceCache(prices, SPOT_PRICE_CACHE_S)

    # -- calls ---------------------------------------------------------------------------

    def _call(self, where: str, offer: OfferKey | None, fn: Callable[..., Any], **kw: Any) -> Any:
        try:
            return fn(**kw)
        except (ClientError, BotoCoreError) as e:
            raise as_provider_error(e, where, offer) from e

    def _describe(
        self, filters: list[dict[str, Any]], where: str, offer: OfferKey | None = None
    ) -> list[dict[str, Any]]:
        paginator = self.client.get_paginator("describe_instances")
        pages = paginator.paginate(
            Filters=filters, PaginationConfig={"PageSize": DESCRIBE_PAGE_SIZE}
        )

        def collect() -> list[dict[str, Any]]:
            return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

        result: list[dict[str, Any]] = self._call(where, offer, collect)
        return result

    def _pool_filters(self) -> list[dict[str, Any]]:
        return [
            {"Name": f"tag:{self.config.tag_key}", "Values": [self.tag_value]},
            {"Name": f"tag:{TAG_CLUSTER}", "Values": [self.cluster_id]},
            {"Name": f"tag:{TAG_POOL}", "Values": [self.pool]},
        ]

    # -- offers ----------------------------------------------------------------------------

    def offers(self) -> list[Offer]:
        """The pool's instance types in its subnet's zone (None without a subnet): spot at the
        current market price when ``spot`` is on, and on-demand at the price-book price.

        A spot offer dearer than ``spot_max_price`` (default: on-demand) is still listed at
        its market price: refusing it is the decider's call, and it says why in the pool's
        status. Should the price rise between offer and launch, EC2 answers
        SpotMaxPriceTooLow, a capacity error."""
        zone = self._subnet_zone()
        offers = []
        for instance_type in self.config.types:  # several with instance_types (a mixed pool)
            try:
                on_demand = self.prices.on_demand(instance_type)
                slots = self._slots(instance_type)
            except UnknownInstanceType as e:
                raise ProviderError(ErrorClass.CONFIG, str(e)) from None
            if self.config.spot:
                latest = functools.partial(self._latest_spot_price, instance_type, zone)
                spot = self._spot_cache.price(instance_type, zone, latest)
                offers.append(Offer(instance_type, zone, Market.SPOT, spot, slots))
            offers.append(Offer(instance_type, zone, Market.ON_DEMAND, on_demand, slots))
        return offers

    def _slots(self, instance_type: str) -> int:
        if self.config.instance_slots and instance_type == self.config.instance_type:
            return self.config.instance_slots
        return self.prices.slots(instance_type)

    def _subnet_zone(self) -> str | None:
        subnet_id = self.config.network_interface.subnet_id
        if subnet_id is None or self._zone_known:
            return self._zone
        where = f"subnet {subnet_id}"
        response = self._call(where, None, self.client.describe_subnets, SubnetIds=[subnet_id])
        self._zone = response["Subnets"][0]["AvailabilityZone"]
        self._zone_known = True
        return self._zone

    def _latest_spot_price(self, instance_type: str, zone: str | None) -> float | None:
        now = datetime.now(UTC)
        kw: dict[str, Any] = {
            "InstanceTypes": [instance_type],
            "ProductDescriptions": SPOT_PRODUCT_DESCRIPTIONS,
            "StartTime": now,
            "EndTime": now,
        }
        if zone is not None:
            kw["AvailabilityZone"] = zone
        key = OfferKey(instance_type, zone, Market.SPOT)
        where = f"{key}: spot price history"
        response = self._call(where, key, self.client.describe_spot_price_history, **kw)
        return latest_spot_price(response.get("SpotPriceHistory", []), instance_type, zone)

    # -- launch ----------------------------------------------------------------------------

    def launch(self, offer: Offer, count: int, client_token: str) -> list[LaunchedInstance]:
        """RunInstances for up to ``count`` instances (at least one, or an error). Instances
        already launched with ``client_token`` are returned instead of launching again."""
        if count < 1:
            raise ValueError(f"count must be at least 1; got {count}")
        if not client_token or len(client_token) > CLIENT_TOKEN_MAX_CHARS:
            raise ValueError(f"client_token must be 1 to {CLIENT_TOKEN_MAX_CHARS} characters")
        if not client_token.isascii():
            raise ValueError("client_token must be ASCII")
        tags = instance_tags(
            self.config,
            cluster_id=self.cluster_id,
            pool=self.pool,
            tag_value=self.tag_value,
            offer=offer,
            client_token=client_token,
        )
        filters = [
            *self._pool_filters(),
            {"Name": f"tag:{TAG_CLIENT_TOKEN}", "Values": [client_token]},
        ]
        found = self._describe(filters, f"{offer.key}: looking up launch {client_token}", offer.key)
        if found:
            log.info("pool %s: launch %s already done", self.pool, client_token)
            return [LaunchedInstance(i["InstanceId"], offer, _utc(i["LaunchTime"])) for i in found]
        params = run_instances_params(
            self.config,
            offer=offer,
            count=count,
            client_token=client_token,
            user_data=self.user_data,
            root_device=self._root_device_name(offer),
            tags=tags,
        )
        response = self._call(str(offer.key), offer.key, self.client.run_instances, **params)
        return [
            LaunchedInstance(i["InstanceId"], offer, _utc(i["LaunchTime"]))
            for i in response["Instances"]
        ]

    def _root_device_name(self, offer: Offer) -> str:
        if self._root_device is None:
            image_id = self.config.image_id
            response = self._call(
                f"{offer.key}: image {image_id}",
                offer.key,
                self.client.describe_images,
                ImageIds=[image_id],
            )
            if not response["Images"]:
                raise config_error(offer, f"image {image_id} not found (InvalidAMIID)")
            self._root_device = response["Images"][0].get("RootDeviceName") or "/dev/sda1"
        return self._root_device

    # -- list ------------------------------------------------------------------------------

    def list_instances(self) -> list[Instance]:
        """One paginated DescribeInstances filtered by all of the pool's tags and live
        states. Market and price come from the tags written at launch."""
        filters = [
            *self._pool_filters(),
            {"Name": "instance-state-name", "Values": list(_STATES)},
        ]
        raw = self._describe(filters, f"pool {self.pool}: listing instances")
        return [self._to_instance(i) for i in raw]

    def _to_instance(self, raw: dict[str, Any]) -> Instance:
        tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
        instance_type = raw["InstanceType"]
        spot = tags.get(TAG_MARKET, raw.get("InstanceLifecycle")) == "spot"
        try:
            slots = self._slots(instance_type)
            price = float(tags.get(TAG_PRICE) or self.prices.on_demand(instance_type))
        except (UnknownInstanceType, ValueError) as e:  # not ours to fix here: offers() says
            log.warning("pool %s: instance %s: %s", self.pool, raw["InstanceId"], e)
            slots, price = self.config.instance_slots or 1, 0.0
        return Instance(
            id=raw["InstanceId"],
            instance_type=instance_type,
            zone=raw.get("Placement", {}).get("AvailabilityZone"),
            market=Market.SPOT if spot else Market.ON_DEMAND,
            price_per_hour=price,
            slots=slots,
            state=_STATES[raw["State"]["Name"]],
            launched_at=_utc(raw["LaunchTime"]),
            agent_id=raw["InstanceId"],
        )

    # -- terminate -------------------------------------------------------------------------

    def terminate(self, instance_ids: list[str]) -> list[TerminateResult]:
        """TerminateInstances in batches. An instance already terminated, or unknown to EC2
        (long gone, or too new to be seen yet: see the module docstring), is done. One
        result per id, in order; never raises."""
        unique = list(dict.fromkeys(instance_ids))
        results: dict[str, TerminateResult] = {}
        for start in range(0, len(unique), TERMINATE_BATCH):
            self._terminate_batch(unique[start : start + TERMINATE_BATCH], results)
        return [results[i] for i in instance_ids]

    def _terminate_batch(self, ids: list[str], results: dict[str, TerminateResult]) -> None:
        pending = list(ids)
        while pending:
            try:
                response = self.client.terminate_instances(InstanceIds=pending)
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                message = e.response.get("Error", {}).get("Message", str(e))
                if code not in (_NOT_FOUND, _MALFORMED):
                    self._fail(pending, f"{message} ({code})", results)
                    return
                # One bad id fails the whole call and the message names the bad ids.
                named = set(_INSTANCE_ID.findall(message)) & set(pending)
                if not named and len(pending) > 1:
                    for one in pending:
                        self._terminate_batch([one], results)
                    return
                for instance_id in named or set(pending):
                    gone = code == _NOT_FOUND
                    text = f"already gone ({code})" if gone else f"{message} ({code})"
                    results[instance_id] = TerminateResult(instance_id, gone, text)
                pending = [i for i in pending if i not in results]
                continue
            except BotoCoreError as e:
                self._fail(pending, str(e), results)
                return
            for item in response.get("TerminatingInstances", []):
                before = item.get("PreviousState", {}).get("Name", "?")
                after = item.get("CurrentState", {}).get("Name", "?")
                results[item["InstanceId"]] = TerminateResult(
                    item["InstanceId"], True, f"{before} → {after}"
                )
            self._fail([i for i in pending if i not in results], "not in EC2's answer", results)
            return

    @staticmethod
    def _fail(ids: Iterable[str], message: str, results: dict[str, TerminateResult]) -> None:
        for instance_id in ids:
            results[instance_id] = TerminateResult(instance_id, False, message)
