"""The monthly estimate of a deployment's base infrastructure, from a dated price table shipped
with the code.

Clouds' list prices change a few times a year and differ per region; their pricing APIs need
credentials (which ``--dry-run`` must not need) and answer with large product documents. So each
cloud ships a JSON table that says where its prices come from and when they were read::

    {"source": "…", "as_of": "YYYY-MM-DD", "currency": "USD", "hours_per_month": 730,
     "regions": {"us-east-1": {"<category>": {"<item>": price, …}, …}, …}}

A category holds prices per unit (``instance_hour`` per type, ``gb_month`` per storage kind…);
which categories exist is the cloud's business. The estimate names the table's date, so a stale
figure is visible as stale. It covers what the stack itself creates; agents are billed by the
provisioner per instance-hour and are not in it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

# AWS and GCP bill a month as 730 hours (365 * 24 / 12).
HOURS_PER_MONTH = 730.0


class PriceLookupError(LookupError):
    """A price the table does not have; the message names the region, category, item and table."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class PriceTable:
    """A dated price table (see the module docstring for its file format)."""

    source: str
    as_of: date
    currency: str
    hours_per_month: float
    regions: Mapping[str, Mapping[str, Mapping[str, float]]]
    path: str = ""

    @classmethod
    def load(cls, path: Path) -> PriceTable:
        data: dict[str, Any] = json.loads(path.read_text())
        try:
            return cls(
                source=str(data["source"]),
                as_of=date.fromisoformat(data["as_of"]),
                currency=str(data.get("currency", "USD")),
                hours_per_month=float(data.get("hours_per_month", HOURS_PER_MONTH)),
                regions=data["regions"],
                path=str(path),
            )
        except (KeyError, ValueError) as e:
            raise ValueError(f"{path}: not a price table ({e}); see infra/common/cost.py") from e

    def price(self, region: str, category: str, item: str) -> float:
        """The price of ``item`` in ``category`` for ``region``; :class:`PriceLookupError` says
        what is missing and what the table has."""
        prices = self.regions.get(region)
        if prices is None:
            raise PriceLookupError(
                f"no prices for region {region} in {self.path or 'the price table'} (as of "
                f"{self.as_of}); it has {', '.join(sorted(self.regions))}"
            )
        items = prices.get(category, {})
        if item not in items:
            raise PriceLookupError(
                f"no {category} price for {item} in {region} in {self.path or 'the price table'}"
                f"; it has {', '.join(sorted(items)) or 'none'}"
            )
        return float(items[item])


@dataclass(frozen=True)
class CostLine:
    """One billed item: ``quantity`` of ``unit`` at ``unit_price`` each per month."""

    item: str
    quantity: float
    unit: str
    unit_price: float

    @property
    def monthly(self) -> float:
        return self.quantity * self.unit_price


@dataclass
class Estimate:
    """The base infrastructure's monthly cost; ``notes`` say what is left out or assumed."""

    table: PriceTable
    region: str
    lines: list[CostLine] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(line.monthly for line in self.lines)

    def hourly(self, item: str, category: str, key: str, hours: float | None = None) -> None:
        """Add ``item`` billed per hour at ``category``/``key``'s price, all month long."""
        hours = self.table.hours_per_month if hours is None else hours
        price = self.table.price(self.region, category, key)
        self.lines.append(CostLine(item, hours, "hours", price))

    def monthly(self, item: str, quantity: float, unit: str, category: str, key: str) -> None:
        """Add ``quantity`` ``unit`` of ``item`` at ``category``/``key``'s monthly price."""
        price = self.table.price(self.region, category, key)
        self.lines.append(CostLine(item, quantity, unit, price))

    def render(self) -> str:
        currency = self.table.currency
        lines = [
            f"Estimated monthly cost of the base infrastructure ({self.region}, {currency}; "
            f"list prices as of {self.table.as_of}, {self.table.source}):"
        ]
        width = max((len(line.item) for line in self.lines), default=10)
        for line in self.lines:
            lines.append(
                f"  {line.item:<{width}}  {line.quantity:>8g} {line.unit:<10} x "
                f"{line.unit_price:<9g} = {line.monthly:>9.2f}"
            )
        lines.append(f"  {'total':<{width}}  {'':>8} {'':<10}   {'':<9}   {self.total:>9.2f}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)
