"""On-demand prices and slot counts per EC2 instance type, from a dated table shipped with the
code, overridable per pool.

How AWS prices really behave, and what that means here:

- On-demand list prices are per region and change rarely (a few times a year, usually down).
  The Price List API that has them is served from a few regions only, needs its own IAM
  permission and answers with large, deeply nested product documents, so we ship a table with
  the date it was read (``as_of``) and let a pool override any type with ``provider.prices``.
  The table is for us-east-1; other regions differ. A wrong figure only skews the reported cost
  and the spot-vs-on-demand comparison: the cloud bills what it bills.
- Spot prices move with supply and differ per availability zone. They come from
  ``DescribeSpotPriceHistory`` at run time (see ``provisioner.aws``); the table only supplies
  ``spot_estimate_fraction`` of on-demand as an estimate when the history has nothing.
- A slot is a GPU; CPU-only types offer one slot (one task per instance).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from typing import Any

from provisioner.types import ProviderError

log = logging.getLogger(__name__)

TABLE_RESOURCE = "data/aws_on_demand_prices.json"


class UnknownInstanceType(LookupError):
    """An instance type the table does not list and the pool did not override; the message says
    which type and which setting fixes it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class TypeInfo:
    on_demand: float  # $/hour, Linux, shared tenancy
    slots: int  # GPUs, or 1 for a CPU-only type
    gpu: str | None = None  # GPU model, for people reading the table


@dataclass(frozen=True)
class PriceTable:
    as_of: date
    region: str
    source: str
    spot_estimate_fraction: float
    types: Mapping[str, TypeInfo]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PriceTable:
        fraction = float(data["spot_estimate_fraction"])
        if not 0 < fraction <= 1:
            raise ValueError(f"spot_estimate_fraction must be in (0, 1]; got {fraction}")
        types = {}
        for name, entry in data["types"].items():
            info = TypeInfo(float(entry["on_demand"]), int(entry["slots"]), entry.get("gpu"))
            if info.on_demand <= 0 or info.slots < 1:
                raise ValueError(f"price table entry {name}: price and slots must be positive")
            types[name] = info
        return cls(
            as_of=date.fromisoformat(data["as_of"]),
            region=str(data["region"]),
            source=str(data["source"]),
            spot_estimate_fraction=fraction,
            types=types,
        )


def load_shipped_table() -> PriceTable:
    """The table in ``provisioner/data/``; read on every call (callers keep the PriceBook)."""
    text = resources.files("provisioner").joinpath(TABLE_RESOURCE).read_text(encoding="utf-8")
    return PriceTable.from_json(json.loads(text))


class PriceBook:
    """On-demand $/hour and slots per instance type: ``overrides`` first, then the table.

    Assumes overrides were validated as positive numbers (``ProviderConfig.prices`` is)."""

    def __init__(
        self,
        overrides: Mapping[str, float] | None = None,
        table: PriceTable | None = None,
    ):
        self.table = table if table is not None else load_shipped_table()
        self.overrides = dict(overrides or {})

    @property
    def as_of(self) -> date:
        return self.table.as_of

    def on_demand(self, instance_type: str) -> float:
        """$/hour on-demand. Raises :class:`UnknownInstanceType` naming the type and the fix."""
        if instance_type in self.overrides:
            return float(self.overrides[instance_type])
        info = self.table.types.get(instance_type)
        if info is None:
            raise UnknownInstanceType(
                f"no on-demand price for instance type {instance_type!r}: it is not in the "
                f"shipped price table ({self.table.region}, as of {self.as_of.isoformat()}); "
                f"set provider.prices: {{{instance_type}: <$ per hour>}}"
            )
        return info.on_demand

    def slots(self, instance_type: str) -> int:
        """GPUs per instance (1 for CPU types). Raises :class:`UnknownInstanceType` for a type
        the table does not list: an override of the price cannot say how many GPUs it has."""
        info = self.table.types.get(instance_type)
        if info is None:
            raise UnknownInstanceType(
                f"slot count of instance type {instance_type!r} is unknown: it is not in the "
                "shipped price table; set provider.instance_slots to its number of GPUs "
                "(1 for a CPU-only type)"
            )
        return info.slots

    def spot_estimate(self, instance_type: str) -> float:
        """A stand-in spot price when the cloud's history has none: a fixed fraction of
        on-demand (``spot_estimate_fraction`` in the table)."""
        return round(self.on_demand(instance_type) * self.table.spot_estimate_fraction, 6)

    def known_types(self) -> list[str]:
        return sorted(set(self.table.types) | set(self.overrides))


def latest_spot_price(
    history: Iterable[Mapping[str, Any]], instance_type: str, zone: str | None
) -> float | None:
    """The latest price of ``instance_type`` in ``zone`` from DescribeSpotPriceHistory entries;
    without a zone, the dearest zone's latest price (EC2 picks the zone, so assume the worst).
    None when there is no entry."""
    latest: dict[str, tuple[datetime, float]] = {}  # zone → (as of, $/hour)
    for entry in history:
        entry_zone = str(entry.get("AvailabilityZone", ""))
        if entry.get("InstanceType") != instance_type or zone not in (None, entry_zone):
            continue
        stamp, price = entry["Timestamp"], float(entry["SpotPrice"])
        if entry_zone not in latest or stamp > latest[entry_zone][0]:
            latest[entry_zone] = (stamp, price)
    return max((price for _, price in latest.values()), default=None)


class SpotPriceCache:
    """Spot prices per (instance type, zone), read through ``fetch`` at most every ``ttl_s``
    seconds: the history changes gradually and each read is an API call.

    A read that fails with a ``ProviderError`` is answered with the last price if there is one
    (and re-raised if not); an empty history is answered with the book's estimate."""

    def __init__(self, book: PriceBook, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.book = book
        self.ttl_s = ttl_s
        self.clock = clock
        self._prices: dict[tuple[str, str | None], tuple[float, float]] = {}  # → (read at, $)

    def price(
        self, instance_type: str, zone: str | None, fetch: Callable[[], float | None]
    ) -> float:
        now = self.clock()
        cached = self._prices.get((instance_type, zone))
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        try:
            price = fetch()
        except ProviderError as e:
            if cached is None:
                raise
            log.warning("%s; using the spot price read %.0f s ago", e.message, now - cached[0])
            return cached[1]
        if price is None:
            price = self.book.spot_estimate(instance_type)
            where = f" in {zone}" if zone else ""
            log.info(
                "no spot price history for %s%s; estimating $%s/h", instance_type, where, price
            )
        self._prices[(instance_type, zone)] = (now, price)
        return price
