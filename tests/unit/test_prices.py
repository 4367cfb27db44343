"""The shipped price table, the PriceBook's overrides and errors, and spot price selection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from provisioner.prices import (
    PriceBook,
    PriceTable,
    SpotPriceCache,
    UnknownInstanceType,
    latest_spot_price,
    load_shipped_table,
)
from provisioner.types import ErrorClass, ProviderError


def test_shipped_table_is_dated_and_covers_the_common_types():
    table = load_shipped_table()
    assert table.as_of.year >= 2024 and table.region == "us-east-1"
    families = {name.split(".")[0] for name in table.types}
    assert {"g4dn", "g5", "g6", "p3", "p4d", "m5", "c5", "t3"} <= families
    assert all(info.on_demand > 0 and info.slots >= 1 for info in table.types.values())


@pytest.mark.parametrize(
    ("instance_type", "slots"),
    [("g5.xlarge", 1), ("g5.12xlarge", 4), ("g5.48xlarge", 8), ("p4d.24xlarge", 8),
     ("p3.8xlarge", 4), ("g4dn.12xlarge", 4), ("m5.large", 1), ("t3.micro", 1)],
)  # fmt: skip
def test_slots_are_gpus_and_one_for_cpu_types(instance_type, slots):
    assert PriceBook().slots(instance_type) == slots


def test_gpu_types_cost_more_than_cpu_types_of_the_same_size():
    book = PriceBook()
    assert book.on_demand("g5.xlarge") > book.on_demand("m5.xlarge")
    assert book.on_demand("g5.xlarge") < book.on_demand("g5.2xlarge") < book.on_demand("p3.2xlarge")


def test_override_wins_and_adds_types():
    book = PriceBook({"g5.xlarge": 0.9, "x9.huge": 3.0})
    assert book.on_demand("g5.xlarge") == 0.9
    assert book.on_demand("x9.huge") == 3.0
    assert "x9.huge" in book.known_types()


def test_unknown_type_error_names_the_type_and_the_fix():
    book = PriceBook()
    with pytest.raises(UnknownInstanceType) as price:
        book.on_demand("x9.huge")
    assert "x9.huge" in str(price.value) and "provider.prices" in str(price.value)
    assert book.as_of.isoformat() in str(price.value)
    with pytest.raises(UnknownInstanceType) as slots:
        PriceBook({"x9.huge": 3.0}).slots("x9.huge")
    assert "x9.huge" in str(slots.value) and "instance_slots" in str(slots.value)


def test_spot_estimate_is_a_fraction_of_on_demand():
    table = PriceTable.from_json(
        {
            "as_of": "2024-01-01",
            "region": "r",
            "source": "s",
            "spot_estimate_fraction": 0.5,
            "types": {"a.large": {"on_demand": 2.0, "slots": 1}},
        }
    )
    assert PriceBook(table=table).spot_estimate("a.large") == 1.0


def test_table_rejects_nonsense():
    data = {"as_of": "2024-01-01", "region": "r", "source": "s", "spot_estimate_fraction": 0.5}
    with pytest.raises(ValueError, match=r"a\.large"):
        PriceTable.from_json({**data, "types": {"a.large": {"on_demand": 0, "slots": 1}}})
    with pytest.raises(ValueError, match="spot_estimate_fraction"):
        PriceTable.from_json({**data, "spot_estimate_fraction": 2, "types": {}})


def entry(zone: str, price: float, minutes_ago: int, instance_type: str = "g5.xlarge") -> dict:
    stamp = datetime(2025, 1, 1, tzinfo=UTC) - timedelta(minutes=minutes_ago)
    return {"AvailabilityZone": zone, "InstanceType": instance_type, "SpotPrice": str(price),
            "Timestamp": stamp}  # fmt: skip


def test_latest_spot_price_per_zone_and_dearest_without_zone():
    history = [entry("a", 0.9, 60), entry("a", 0.3, 1), entry("b", 0.4, 5), entry("b", 7, 1, "x")]
    assert latest_spot_price(history, "g5.xlarge", "a") == 0.3
    assert latest_spot_price(history, "g5.xlarge", "b") == 0.4
    assert latest_spot_price(history, "g5.xlarge", None) == 0.4
    assert latest_spot_price(history, "g5.xlarge", "c") is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_spot_cache_reads_at_most_once_per_ttl_and_keeps_the_last_price_on_errors():
    clock, reads = FakeClock(), []
    cache = SpotPriceCache(PriceBook(), ttl_s=300, clock=clock)

    def fetch() -> float:
        reads.append(clock.now)
        if len(reads) == 2:
            raise ProviderError(ErrorClass.THROTTLE, "slow down")
        return 0.25

    assert cache.price("g5.xlarge", "a", fetch) == 0.25
    clock.now = 299
    assert cache.price("g5.xlarge", "a", fetch) == 0.25 and reads == [0]
    clock.now = 301
    assert cache.price("g5.xlarge", "a", fetch) == 0.25  # the failed read kept the last price
    assert reads == [0, 301]


def test_spot_cache_raises_without_a_last_price_and_estimates_an_empty_history():
    cache = SpotPriceCache(PriceBook(), ttl_s=300, clock=FakeClock())

    def failing() -> float:
        raise ProviderError(ErrorClass.CONFIG, "denied")

    with pytest.raises(ProviderError):
        cache.price("g5.xlarge", None, failing)
    assert cache.price("g5.xlarge", None, lambda: None) == PriceBook().spot_estimate("g5.xlarge")
