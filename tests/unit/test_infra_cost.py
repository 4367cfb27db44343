"""The monthly estimate of the base infrastructure, from the shipped, dated price table."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from infra.aws.dry_run import PRICE_TABLE, estimate
from infra.common.cost import PriceLookupError, PriceTable
from tests.infra_plans import planned, settings

HOURS = 730


def test_the_shipped_table_is_dated_and_sourced() -> None:
    table = PriceTable.load(PRICE_TABLE)
    assert table.as_of == date(2024, 6, 1)
    assert "aws.amazon.com" in table.source
    assert table.hours_per_month == HOURS
    assert table.price("us-east-1", "ec2_instance_hour", "t3.medium") == 0.0416


def test_default_estimate_is_master_database_storage_and_address() -> None:
    result = estimate(settings("default"), planned("default").resources)
    lines = {line.item: line for line in result.lines}
    assert set(lines) == {
        "db RDS PostgreSQL db.t3.micro",
        "db RDS storage gp3",
        "master instance t3.medium",
        "master root volume gp3",
        "master-ip public IPv4 address",
    }
    expected = HOURS * (0.018 + 0.0416 + 0.005) + 20 * 0.115 + 30 * 0.08
    assert result.total == pytest.approx(expected)
    text = result.render()
    assert "list prices as of 2024-06-01" in text
    assert f"{expected:.2f}" in text
    assert any("agents are extra" in note and "g4dn.xlarge" in note for note in result.notes)


def test_local_db_has_no_database_lines() -> None:
    result = estimate(settings("local-db"), planned("local-db").resources)
    assert not [line for line in result.lines if "RDS" in line.item]


def test_a_region_without_prices_is_named(tmp_path: Path) -> None:
    table = PriceTable.load(PRICE_TABLE)
    with pytest.raises(
        PriceLookupError, match=r"no prices for region ap-south-2 .*as of 2024-06-01"
    ):
        table.price("ap-south-2", "ec2_instance_hour", "t3.medium")
    with pytest.raises(PriceLookupError, match=r"no ec2_instance_hour price for t9\.mega"):
        table.price("us-east-1", "ec2_instance_hour", "t9.mega")
    bad = tmp_path / "prices.json"
    bad.write_text(json.dumps({"source": "x", "regions": {}}))
    with pytest.raises(ValueError, match="not a price table"):
        PriceTable.load(bad)
