"""``det task list|logs``, and the log printing that ``det cmd`` shares.

Task logs come from ``GET /api/v1/tasks/{id}/logs`` as ndjson. Each entry's ``message`` is what
Determined's CLI prints (``log`` is the raw line when ``message`` is missing). With
``follow=true`` the master ends the stream once the task has ended and every line was sent.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from cli import render
from cli.errors import CliError
from cli.parser import add_group, add_output_args, add_verb
from cli.session import Session, setup_session

if TYPE_CHECKING:
    from cli.parser import SubParsers

TASK_HEADERS = [
    "Task ID",
    "Allocation ID",
    "Name",
    "Slots Needed",
    "Registered Time",
    "Agent",
    "Priority",
    "Resource Pool",
    "Ports",
]


def task_agents(summary: dict[str, Any]) -> str | list[str]:
    """The agent(s) a task's resources sit on, as Determined shows them."""
    resources = summary.get("resources")
    if not resources:
        return "unassigned"
    agents: list[str] = []
    for res in resources:
        if isinstance(res.get("agentDevices"), dict):
            agents.extend(res["agentDevices"])
        elif res.get("agentId"):
            agents.append(res["agentId"])
    return agents[0] if len(agents) == 1 else agents


def task_rows(tasks: dict[str, dict[str, Any]]) -> list[list[Any]]:
    ordered = sorted(tasks.items(), key=lambda kv: kv[1].get("registeredTime") or "")
    rows = []
    for allocation_id, t in ordered:
        ports = sorted(p["port"] for p in t.get("proxyPorts") or [] if p.get("port") is not None)
        rows.append(
            [
                t.get("taskId"),
                t.get("allocationId", allocation_id),
                t.get("name"),
                t.get("slotsNeeded"),
                render.format_time(t.get("registeredTime")),
                task_agents(t),
                t.get("priority") if t.get("schedulerType") == "priority" else "N/A",
                t.get("resourcePool"),
                ",".join(str(p) for p in ports),
            ]
        )
    return rows


def render_tasks(args: argparse.Namespace, tasks: dict[str, dict[str, Any]]) -> None:
    if getattr(args, "json", False):
        render.print_json(tasks)
        return
    render.print_table(TASK_HEADERS, task_rows(tasks), as_csv=getattr(args, "csv", False))


def list_tasks(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    tasks = sess.client.get("/api/v1/tasks").get("allocationIdToSummary") or {}
    render_tasks(args, tasks)


def log_text(entry: dict[str, Any]) -> str:
    text = entry.get("message")
    if text is None:
        text = entry.get("log") or ""
    return text if text.endswith("\n") else text + "\n"


def task_logs(
    sess: Session,
    task_id: str,
    *,
    follow: bool = False,
    head: int | None = None,
    tail: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Log entries of one task, oldest first; ``tail`` keeps the last N (read client-side)."""
    return stream_logs(sess, f"/api/v1/tasks/{task_id}/logs", follow=follow, head=head, tail=tail)


def stream_logs(
    sess: Session,
    path: str,
    *,
    follow: bool = False,
    head: int | None = None,
    tail: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Entries of an ndjson log endpoint (a task's, a trial's), oldest first."""
    params: dict[str, Any] = {"follow": follow}
    if head is not None:
        params["limit"] = head
    entries: Iterable[dict[str, Any]] = sess.client.stream_lines(path, params)
    if tail is not None:
        entries = collections.deque(entries, maxlen=tail)
    yield from entries


def print_logs(entries: Iterable[dict[str, Any]], *, as_json: bool = False) -> None:
    """Print every entry to stdout, as Determined does: the task's stdout and stderr and the
    master's lifecycle lines ("queued: …", "exited with code 3") alike, so that
    ``det trial logs 1 | grep accuracy`` finds what Python's logging wrote to stderr."""
    for entry in entries:
        if as_json:
            render.print_json(entry)
            sys.stdout.flush()
            continue
        sys.stdout.write(log_text(entry))
        sys.stdout.flush()


def stream_ended_notice(task_id: str) -> None:
    print(
        "Task log stream ended. To reopen log stream, run: det task logs -f " + task_id,
        file=sys.stderr,
    )


def show_logs(args: argparse.Namespace, sess: Session, task_id: str) -> None:
    if sum((args.follow, args.head is not None, args.tail is not None)) > 1:
        raise CliError("at most one of --follow, --head and --tail may be given")
    try:
        entries = task_logs(sess, task_id, follow=args.follow, head=args.head, tail=args.tail)
        print_logs(entries, as_json=args.json)
    except KeyboardInterrupt:
        stream_ended_notice(task_id)
        raise
    stream_ended_notice(task_id)


def logs(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    show_logs(args, sess, args.task_id)


def add_log_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f", "--follow", action="store_true", help="follow the logs of a running task"
    )
    parser.add_argument("--json", action="store_true", help="print each log entry as JSON")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--head", type=int, help="number of lines to show from the start")
    group.add_argument("--tail", type=int, help="number of lines to show from the end")


def register(nouns: SubParsers) -> None:
    noun, verbs = add_group(
        nouns, "task", "manage tasks (commands, experiments, notebooks, shells, tensorboards)"
    )
    p = add_verb(verbs, "list ls", list_tasks, "list tasks in cluster", default_for=noun)
    add_output_args(p)
    p = add_verb(verbs, "logs", logs, "fetch task logs")
    p.add_argument("task_id", help="task ID")
    add_log_args(p)
