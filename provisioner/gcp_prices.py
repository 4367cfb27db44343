"""GCP on-demand and Spot prices per machine type and GPU type, from a dated table shipped with
the code (``data/gcp_prices.json``), overridable per pool.

How GCP prices really behave, and what that means here:

- A VM costs its machine type plus each attached GPU; a2 and g2 machine types bundle theirs
  (the table says how many). Billing is per second after a one-minute minimum.
- Spot prices are not a market with bids as on AWS: Google sets them per region, changes them
  up to once a day, and publishes them on its pricing page; there is no API call for them short
  of the Cloud Billing Catalog. So both columns come from the table, and a pool overrides them
  with ``provider.prices`` (on-demand) and ``provider.spot_prices`` (Spot), each keyed by
  machine type or GPU type. A wrong figure only skews reported cost: Google bills what it bills.
- The table is for one region (``region``); others differ by a few percent to a third.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from importlib import resources
from typing import Any

from provisioner.config import GCPInstanceType
from provisioner.prices import UnknownInstanceType
from provisioner.types import Market

TABLE_RESOURCE = "data/gcp_prices.json"


@dataclass(frozen=True)
class Rate:
    on_demand: float  # $/hour
    spot: float  # $/hour
    gpus: int = 0  # GPUs bundled with a machine type


@dataclass(frozen=True)
class GCPPriceTable:
    as_of: date
    region: str
    source: str
    machine_types: Mapping[str, Rate]
    gpus: Mapping[str, Rate]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GCPPriceTable:
        def rates(section: str) -> dict[str, Rate]:
            out = {}
            for name, entry in data[section].items():
                rate = Rate(
                    float(entry["on_demand"]), float(entry["spot"]), int(entry.get("gpus", 0))
                )
                if rate.on_demand <= 0 or rate.spot <= 0 or rate.gpus < 0:
                    raise ValueError(f"GCP price table {section}.{name}: prices must be positive")
                out[name] = rate
            return out

        return cls(
            as_of=date.fromisoformat(data["as_of"]),
            region=str(data["region"]),
            source=str(data["source"]),
            machine_types=rates("machine_types"),
            gpus=rates("gpus"),
        )


def load_gcp_table() -> GCPPriceTable:
    text = resources.files("provisioner").joinpath(TABLE_RESOURCE).read_text(encoding="utf-8")
    return GCPPriceTable.from_json(json.loads(text))


class GCPPriceBook:
    """$/hour and slots of a GCP instance type: the pool's overrides first, then the table.

    Assumes overrides were validated as positive (``GCPProviderConfig`` does)."""

    def __init__(
        self,
        on_demand: Mapping[str, float] | None = None,
        spot: Mapping[str, float] | None = None,
        table: GCPPriceTable | None = None,
    ) -> None:
        self.table = table if table is not None else load_gcp_table()
        self.overrides = {Market.ON_DEMAND: dict(on_demand or {}), Market.SPOT: dict(spot or {})}

    def _rate(self, name: str, market: Market, table: Mapping[str, Rate], what: str) -> float:
        if name in self.overrides[market]:
            return float(self.overrides[market][name])
        rate = table.get(name)
        if rate is None:
            setting = "prices" if market == Market.ON_DEMAND else "spot_prices"
            raise UnknownInstanceType(
                f"no {market.value} price for {what} {name!r}: it is not in the shipped GCP "
                f"price table ({self.table.region}, as of {self.table.as_of.isoformat()}); set "
                f"provider.{setting}: {{{name}: <$ per hour>}}"
            )
        return rate.on_demand if market == Market.ON_DEMAND else rate.spot

    def price(self, instance_type: GCPInstanceType, market: Market) -> float:
        """$/hour of one VM: its machine type plus its attached GPUs. Raises
        :class:`UnknownInstanceType` naming the missing type and the setting that fixes it."""
        total = self._rate(
            instance_type.machine_type, market, self.table.machine_types, "machine type"
        )
        if instance_type.gpu_type is not None:
            gpu = self._rate(instance_type.gpu_type, market, self.table.gpus, "GPU type")
            total += gpu * instance_type.gpu_num
        return round(total, 6)

    def gpus(self, instance_type: GCPInstanceType) -> int:
        """GPUs of one VM: attached (``gpu_num``) plus those its machine type bundles."""
        rate = self.table.machine_types.get(instance_type.machine_type)
        bundled = rate.gpus if rate is not None else 0
        return instance_type.gpu_num + bundled

    def slots(self, instance_type: GCPInstanceType) -> int:
        """GPUs of one VM, or 1 for a CPU-only VM."""
        return max(1, self.gpus(instance_type))
