"""``det resource-pool list`` (alias ``rp``): the pools and their slot usage."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cli import render
from cli.parser import add_group, add_output_args, add_verb
from cli.session import setup_session

if TYPE_CHECKING:
    from cli.parser import SubParsers

POOL_HEADERS = [
    "Name",
    "Description",
    "Type",
    "Agents",
    "Slots Available",
    "Slots Used",
    "Slot Type",
    "Min",
    "Max",
    "Pending Slots",
    "Spend $/h",
    "Status",
]


def pool_row(pool: dict[str, Any]) -> list[Any]:
    return [
        pool.get("name"),
        pool.get("description"),
        pool_type(pool),
        pool.get("numAgents"),
        pool.get("slotsAvailable"),
        pool.get("slotsUsed"),
        render.strip_prefix(pool.get("slotType"), "TYPE_"),
        pool.get("minAgents"),
        pool.get("maxAgents"),
        (pool.get("provisioning") or {}).get("pendingSlots", ""),
        _spend(pool.get("provisioning")),
        _status(pool.get("provisioning")),
    ]


def _spend(provisioning: dict[str, Any] | None) -> str:
    """``2.01 of 8`` against the budget cap, ``2.01`` without one; empty for a static pool."""
    if not provisioning or provisioning.get("spendPerHour") is None:
        return ""
    spend = f"{provisioning['spendPerHour']:.2f}"
    cap = provisioning.get("maxCostPerHour")
    return f"{spend} of {cap:g}" if cap else spend


def pool_type(pool: dict[str, Any]) -> str | None:
    """``STATIC``, or ``ELASTIC (local)`` / ``ELASTIC (aws)`` for a pool the master provisions
    (Determined's wire enum has no elastic type, so the ``provisioning`` part tells)."""
    provisioning = pool.get("provisioning")
    if provisioning:
        return f"ELASTIC ({provisioning.get('provider', '?')})"
    return render.strip_prefix(pool.get("type"), "RESOURCE_POOL_TYPE_")


def _status(provisioning: dict[str, Any] | None) -> str:
    if not provisioning:
        return "static"
    if provisioning.get("degraded"):
        return f"DEGRADED: {provisioning['degraded']}"
    return str(provisioning.get("status", ""))


def list_pools(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    pools = sess.client.get("/api/v1/resource-pools").get("resourcePools") or []
    if args.json:
        render.print_json(pools)
        return
    render.print_table(POOL_HEADERS, [pool_row(p) for p in pools], as_csv=args.csv)


def list_events(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    events = (
        sess.client.get(f"/api/v1/resource-pools/{args.pool}/events", {"limit": args.limit}).get(
            "events"
        )
        or []
    )
    if args.json:
        render.print_json(events)
        return
    rows = [
        [render.format_time(e["time"]), e.get("instanceId") or "", e["kind"], e["reason"]]
        for e in reversed(events)
    ]
    render.print_table(["Time", "Instance", "Event", "Reason"], rows, as_csv=args.csv)


def register(nouns: SubParsers) -> None:
    noun, verbs = add_group(nouns, "resource-pool rp", "manage resource pools")
    p = add_verb(verbs, "list ls", list_pools, "list resource pools", default_for=noun)
    add_output_args(p)
    p = add_verb(verbs, "events", list_events, "show the pool's instance events")
    p.add_argument("pool", help="resource pool name")
    p.add_argument("--limit", type=int, default=50, help="how many recent events")
    add_output_args(p)
