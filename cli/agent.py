"""``det agent`` (alias ``a``) and ``det slot`` (alias ``s``), with Determined's columns."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cli import render
from cli import task as cli_task
from cli.errors import CliError
from cli.parser import add_group, add_output_args, add_verb
from cli.session import setup_session

if TYPE_CHECKING:
    from cli.parser import SubParsers

AGENT_HEADERS = [
    "Agent ID",
    "Version",
    "Registered Time",
    "Slots",
    "Containers",
    "Resource Pool",
    "Enabled",
    "Draining",
    "Addresses",
    "Isolation",
    "Instance Type",
    "Market",
    "$/h",
    "State",
    "Idle For",
]
SLOT_HEADERS = [
    "Agent ID",
    "Resource Pool",
    "Slot ID",
    "Enabled",
    "Draining",
    "Allocation ID",
    "Task Name",
    "Type",
    "Device",
]
DEVICE_TYPES = {"TYPE_CUDA": "cuda", "TYPE_ROCM": "rocm", "TYPE_CPU": "cpu"}


def local_id(address: str) -> str:
    """``/agents/a1/slots/0`` → ``0``; plain ids pass through."""
    return os.path.basename(address)


def _join(values: list[str] | None) -> str:
    return ", ".join(values) if values is not None else ""


def _num_containers(agent: dict[str, Any]) -> int | str:
    if isinstance(agent.get("containers"), dict):
        return len(agent["containers"])
    slots = agent.get("slots")
    if slots is None:
        return ""
    return len({s["container"]["id"] for s in slots.values() if s.get("container")})


def _state(agent: dict[str, Any]) -> str:
    if agent.get("draining"):
        return "draining"
    if agent.get("enabled") is False:
        return "disabled"
    return "idle" if agent.get("idleSince") else "busy"


def agent_records(agents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per agent, keyed like Determined's ``det agent list --json``."""
    return [
        {
            "id": local_id(a.get("id", "")),
            "version": a.get("version"),
            "registered_time": render.format_time(a.get("registeredTime")),
            "num_slots": len(a["slots"]) if a.get("slots") is not None else "",
            "num_containers": _num_containers(a),
            "resource_pools": _join(a.get("resourcePools")),
            "enabled": a.get("enabled"),
            "draining": a.get("draining"),
            "addresses": _join(a.get("addresses")),
            "isolation": a.get("isolation", ""),
            "instance_type": (a.get("instance") or {}).get("instanceType", ""),
            "market": (a.get("instance") or {}).get("market", ""),
            "price_per_hour": render.format_usd((a.get("instance") or {}).get("pricePerHour")),
            "state": _state(a),
            "idle_for": render.format_age(a.get("idleSince")),
        }
        for a in sorted(agents, key=lambda a: a.get("id", ""))
    ]


def _fetch_agents(args: argparse.Namespace) -> list[dict[str, Any]]:
    sess = setup_session(args)
    agents: list[dict[str, Any]] = sess.client.get("/api/v1/agents").get("agents") or []
    return agents


def list_agents(args: argparse.Namespace) -> None:
    records = agent_records(_fetch_agents(args))
    if args.json:
        render.print_json(records)
        return
    render.print_table(AGENT_HEADERS, [list(r.values()) for r in records], as_csv=args.csv)


def slot_records(
    agents: list[dict[str, Any]], tasks: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One record per slot, naming the task in it (found by container or allocation id)."""
    by_container: dict[str, dict[str, Any]] = {}
    for allocation_id, t in tasks.items():
        summary = {"name": t.get("name"), "allocation_id": t.get("allocationId", allocation_id)}
        by_container[summary["allocation_id"]] = summary
        for res in t.get("resources") or []:
            if res.get("containerId"):
                by_container[res["containerId"]] = summary

    records = []
    for agent in sorted(agents, key=lambda a: a.get("id", "")):
        for key, slot in (agent.get("slots") or {}).items():
            container = slot.get("container")
            owner = by_container.get(container["id"]) if container else None
            if not container:
                allocation, task_name = "FREE", "FREE"
            elif owner:
                allocation, task_name = owner["allocation_id"], str(owner["name"])
            else:
                allocation, task_name = "OCCUPIED", f"Non-Determined Task: {container['id']}"
            device = slot.get("device") or {}
            records.append(
                {
                    "agent_id": local_id(agent.get("id", "")),
                    "resource_pools": _join(agent.get("resourcePools")),
                    "slot_id": local_id(slot.get("id") or key),
                    "enabled": slot.get("enabled"),
                    "draining": slot.get("draining"),
                    "allocation_id": allocation,
                    "task_name": task_name,
                    "type": DEVICE_TYPES.get(device.get("type", ""), "unknown"),
                    "device": device.get("brand"),
                }
            )
    return records


def list_slots(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    tasks = sess.client.get("/api/v1/tasks").get("allocationIdToSummary") or {}
    agents = sess.client.get("/api/v1/agents").get("agents") or []
    records = slot_records(agents, tasks)
    if args.json:
        render.print_json(records)
        return
    render.print_table(SLOT_HEADERS, [list(r.values()) for r in records], as_csv=args.csv)


def _patch_agents(args: argparse.Namespace, enable: bool) -> None:
    action = "enable" if enable else "disable"
    if bool(args.all) == bool(args.agent_id):
        raise CliError(
            f"Please pass agent id or --all option. See `det agent {action} --help` for details."
        )
    sess = setup_session(args)
    if args.agent_id:
        agent_ids = [args.agent_id]
    else:
        agents = sess.client.get("/api/v1/agents").get("agents") or []
        agent_ids = sorted(local_id(a["id"]) for a in agents)

    drain = bool(getattr(args, "drain", False)) and not enable
    for agent_id in agent_ids:
        body = None if enable else {"drain": drain}
        sess.client.post(f"/api/v1/agents/{agent_id}/{action}", body)
        print(f"{'Enabled' if enable else 'Disabled'} agent {agent_id}.", file=sys.stderr)

    if drain:
        tasks = sess.client.get("/api/v1/tasks").get("allocationIdToSummary") or {}
        draining = {}
        for allocation_id, t in tasks.items():
            on = cli_task.task_agents(t)
            on_agents = [on] if isinstance(on, str) else on
            if any(a in agent_ids for a in on_agents):
                draining[allocation_id] = t
        if not (args.json or args.csv):
            if draining:
                print("Tasks still in progress on draining nodes.")
            else:
                print("No tasks in progress on draining nodes.")
        cli_task.render_tasks(args, draining)


def enable_agent(args: argparse.Namespace) -> None:
    _patch_agents(args, enable=True)


def disable_agent(args: argparse.Namespace) -> None:
    _patch_agents(args, enable=False)


def _patch_slot(enable: bool) -> Callable[[argparse.Namespace], None]:
    """``det slot enable|disable AGENT_ID SLOT_ID``: Determined's paths and message."""

    def patch(args: argparse.Namespace) -> None:
        sess = setup_session(args)
        action = "enable" if enable else "disable"
        body = None if enable else {"agentId": args.agent_id, "slotId": args.slot_id}
        sess.client.post(f"/api/v1/agents/{args.agent_id}/slots/{args.slot_id}/{action}", body)
        print(f"{'Enabled' if enable else 'Disabled'} slot {args.slot_id} of agent {args.agent_id}")

    return patch


def register(nouns: SubParsers) -> None:
    noun, verbs = add_group(nouns, "a|gent", "manage agents")
    p = add_verb(verbs, "list ls", list_agents, "list agents", default_for=noun)
    add_output_args(p)
    p = add_verb(verbs, "enable", enable_agent, "enable agent")
    p.add_argument("agent_id", nargs="?", help="agent ID")
    p.add_argument("--all", action="store_true", help="enable all agents")
    p = add_verb(verbs, "disable", disable_agent, "disable agent")
    p.add_argument("agent_id", nargs="?", help="agent ID")
    p.add_argument("--all", action="store_true", help="disable all agents")
    p.add_argument(
        "--drain",
        action="store_true",
        help="enter drain mode, allowing the tasks currently running on the disabled agents "
        "to finish; also prints these tasks, if any",
    )
    add_output_args(p)

    noun, verbs = add_group(nouns, "s|lot", "manage slots")
    p = add_verb(verbs, "list ls", list_slots, "list slots in cluster", default_for=noun)
    add_output_args(p)
    for action, enable in (("enable", True), ("disable", False)):
        p = add_verb(verbs, action, _patch_slot(enable), f"{action} slot on agent")
        p.add_argument("agent_id", help="agent ID")
        p.add_argument("slot_id", type=int, help="slot ID")
