"""``det cluster cost``: what the fleet cost, and who it was for."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from cli import render
from cli.errors import CliError
from cli.parser import add_group, add_verb
from cli.session import setup_session

if TYPE_CHECKING:
    from cli.parser import SubParsers

_AGO = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str, now: datetime | None = None) -> str:
    """``24h``, ``7d``, ``30m`` ago, or an ISO time (UTC if no zone), as an RFC 3339 string."""
    match = _AGO.match(value.strip())
    if match:
        moment = (now or datetime.now(UTC)) - timedelta(
            **{_UNITS[match.group(2)]: int(match.group(1))}
        )
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise CliError(
                f"--since {value!r}: expected a duration like 30m, 24h, 7d or an ISO time"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def show_cost(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    params = {"since": parse_since(args.since), "groupBy": args.by}
    if args.until:
        params["until"] = parse_since(args.until)
    report = sess.client.get("/api/v1/cost", params)
    if args.json:
        render.print_json(report)
        return
    rows = [
        [
            "(idle: no task on it)" if g.get("idle") else g["key"],
            render.format_usd(g["usd"]),
            f"{g['slotHours']:.2f}",
        ]
        for g in report["groups"]
    ]
    render.print_table([args.by.title(), "Cost", "Slot Hours"], rows)
    if not any(g.get("idle") for g in report["groups"]):
        # Not an admin: the report holds this user's tasks only (the master says nothing
        # fleet-wide to them), so no idle money or efficiency to print.
        print(
            f"\nYour tasks' share: {render.format_usd(report['totalUsd'])} from "
            f"{report['since']} to {report['until']}. The fleet's total, its idle money and "
            "efficiency are for admins."
        )
        return
    efficiency = report.get("efficiency")
    used = "" if efficiency is None else f"; {efficiency:.0%} of the paid slot-time ran tasks"
    print(
        f"\nTotal {render.format_usd(report['totalUsd'])} for "
        f"{report['instanceHours']:.2f} instance-hours from {report['since']} to "
        f"{report['until']}; idle (no task on it) {render.format_usd(report['idleUsd'])}{used}"
    )


def register(nouns: SubParsers) -> None:
    _, verbs = add_group(nouns, "cluster", "the cluster as a whole")
    p = add_verb(
        verbs,
        "cost",
        show_cost,
        "what provisioned instances cost, by pool/user/experiment/label/task/instance",
    )
    p.add_argument("--since", default="24h", help="start: 30m, 24h, 7d ago or an ISO time")
    p.add_argument("--until", help="end (default now): 30m, 24h, 7d ago or an ISO time")
    p.add_argument(
        "--by",
        choices=["pool", "user", "experiment", "label", "task", "instance"],
        default="pool",
        help="group by",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
