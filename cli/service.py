"""What ``det shell``, ``det notebook`` and ``det tensorboard`` share: launch, wait, list, kill.

An interactive task is useless until its server answers, so ``start`` waits for the master to
report it ready (``allocations[-1].isReady`` of ``GET /api/v1/tasks/{id}``) and shows, one line
on stderr each time it changes, what it is waiting for: the scheduler's reason while queued
(often an instance being launched), the agent while starting, the server while running. A task
that ends instead fails the command with its exit reason and the last lines of its log, since
that is where the cause is. Ctrl-C stops waiting, not the task, and says how to kill it.

Configs are validated here with the master's own models (``harness.task_config``) before
anything is sent, so a typo fails at once with the field's path, not after a login and a POST.
The REST contract is ``docs/design/interactive-tasks.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from cli import render
from cli import task as cli_task
from cli.cmd import CONFIG_HELP, TASK_ID_RE, add_workspace_names, parse_config_overrides
from cli.config_file import read_yaml
from cli.context import pack_context
from cli.errors import CliError
from cli.parser import add_output_args, add_verb
from cli.session import Session, setup_session
from harness.client import APIError, ClientError
from harness.determined_fields import ineffective_fields
from harness.task_config import ServiceConfig

if TYPE_CHECKING:
    from cli.parser import Handler, SubParsers

COMMON_HEADERS = (
    "id",
    "username",
    "description",
    "state",
    "exitStatus",
    "resourcePool",
    "workspaceName",
)
# Seconds between polls of the task while waiting for it to become ready.
POLL_SECONDS = 0.5
# Once placed, a task that is still not ready after this long is reported (not killed).
STARTING_TIMEOUT_SECONDS = 600.0
# How long a ready task's server may take to answer through the proxy.
PROXY_PROBE_SECONDS = 30.0
LOG_TAIL_LINES = 10
# Fields never printed by `describe`: the shell's private key belongs in its key file only.
SECRET_FIELDS = ("privateKey",)


@dataclass(frozen=True)
class Kind:
    """One kind of interactive task: its CLI noun, REST names and config model."""

    noun: str  # "shell": the CLI noun and the key of one object in REST answers
    plural: str  # "shells": the REST collection and the key of a list
    title: str  # "Shell": how messages name it
    model: type[ServiceConfig]
    headers: tuple[str, ...] = COMMON_HEADERS

    @property
    def collection(self) -> str:
        return f"/api/v1/{self.plural}"


# ---- launching ------------------------------------------------------------------------------


def validate_config(kind: Kind, config: dict[str, Any]) -> None:
    """Check ``config`` with the master's model; the error names every bad field's path."""
    try:
        parsed = kind.model.model_validate(config)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: "
            + str(e["msg"]).removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise CliError(f"invalid {kind.noun} config: {problems}") from None
    for warning in ineffective_fields(parsed):
        print(f"Warning: {kind.noun} config: {warning}", file=sys.stderr)


def build_config(kind: Kind, args: argparse.Namespace) -> dict[str, Any]:
    """``--config-file`` with ``--config k=v`` overrides applied, validated."""
    config: dict[str, Any] = {}
    if args.config_file:
        _, loaded = read_yaml(args.config_file)
        loaded = loaded or {}
        if not isinstance(loaded, dict):
            name = args.config_file.name
            raise CliError(f"{name}: a {kind.noun} config must be a YAML mapping")
        config = loaded
    config = parse_config_overrides(config, args.config)
    validate_config(kind, config)
    return config


def launch_body(kind: Kind, args: argparse.Namespace) -> dict[str, Any]:
    """The POST body's ``config`` and ``files``, built before talking to the master."""
    body: dict[str, Any] = {"config": build_config(kind, args)}
    if getattr(args, "context", None):
        # Beside the other status lines: stdout carries only the id (--detach) or the URL.
        body["files"] = pack_context(args.context, out=sys.stderr)
    return body


def launch(sess: Session, kind: Kind, body: dict[str, Any], *, detach: bool) -> str:
    """Create the task; with ``detach`` print only its id (for scripts), else a notice."""
    created: dict[str, Any] = sess.client.post(kind.collection, body)[kind.noun]
    task_id = str(created["id"])
    if detach:
        print(task_id)
    else:
        name = created.get("description") or ""
        print(f"Launched {kind.noun} (id: {task_id}, name: {name}).", file=sys.stderr)
    return task_id


# ---- waiting until ready ----------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Where a task stands: ready, ended (``line`` is why), or waiting (``line`` says for what)."""

    line: str
    ready: bool = False
    ended: bool = False
    queued: bool = False


def _state(value: Any) -> str:
    return str(render.strip_prefix(value, "STATE_") or "QUEUED")


def progress(task: dict[str, Any]) -> Progress:
    """Read a ``GET /api/v1/tasks/{id}`` task: what it is doing, in the words ``start`` shows."""
    allocations = task.get("allocations") or []
    alloc: dict[str, Any] = allocations[-1] if allocations else {}
    state = _state(alloc.get("state") or task.get("state"))
    if task.get("endTime") or alloc.get("endTime"):
        reason = alloc.get("exitReason")
        if not reason and isinstance(alloc.get("exitCode"), int):
            reason = f"exited with code {alloc['exitCode']}"
        return Progress(reason or f"it ended ({state})", ended=True)
    if alloc.get("isReady"):
        return Progress("ready", ready=True)
    if state == "QUEUED":
        reason = alloc.get("waitingReason")
        line = f"waiting to be scheduled: {reason}" if reason else "waiting to be scheduled"
        return Progress(line, queued=True)
    if state in ("STARTING", "PULLING", "ASSIGNED"):
        agents = [str(a) for a in alloc.get("agents") or []]
        where = f" on agent{'s' if len(agents) > 1 else ''} {', '.join(agents)}" if agents else ""
        return Progress(f"starting{where}")
    if state == "RUNNING":
        return Progress("starting the server")
    if state == "TERMINATING":
        return Progress("stopping")
    return Progress(state.lower())


def fail_ended(sess: Session, kind: Kind, task_id: str, reason: str) -> None:
    """Show the end of the task's log (where the cause is), then fail with its exit reason."""
    tail: list[dict[str, Any]] = []
    with contextlib.suppress(ClientError):
        tail = list(cli_task.task_logs(sess, task_id, tail=LOG_TAIL_LINES))
    if tail:
        print(f"The last {len(tail)} log lines of {kind.noun} {task_id}:", file=sys.stderr)
        for entry in tail:
            sys.stderr.write(cli_task.log_text(entry))
    raise CliError(f"{kind.title} {task_id} has ended: {reason}")


def wait_until_ready(sess: Session, kind: Kind, task_id: str) -> None:
    """Poll until the task is ready, printing each new status line to stderr."""
    shown = ""
    placed_at: float | None = None
    try:
        while True:
            task = sess.client.get(f"/api/v1/tasks/{task_id}").get("task") or {}
            now = progress(task)
            if now.ready:
                return
            if now.ended:
                fail_ended(sess, kind, task_id, now.line)
            if now.line != shown:
                print(now.line, file=sys.stderr, flush=True)
                shown = now.line
            if not now.queued:
                placed_at = placed_at if placed_at is not None else time.monotonic()
                if time.monotonic() - placed_at > STARTING_TIMEOUT_SECONDS:
                    raise CliError(
                        f"{kind.title} {task_id} was placed {STARTING_TIMEOUT_SECONDS:.0f} s ago "
                        f"and is still not ready ({now.line}); see det {kind.noun} logs {task_id}"
                    )
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        print(
            f"Stopped waiting; {kind.noun} {task_id} goes on. Kill it with: "
            f"det {kind.noun} kill {task_id}",
            file=sys.stderr,
        )
        raise


# ---- the proxy and browsers -------------------------------------------------------------------


def proxy_url(master: str, task_id: str) -> str:
    """Where the master proxies a task: ``<master>/proxy/<id>/``."""
    return f"{master.rstrip('/')}/proxy/{task_id}/"


def wait_for_proxy(sess: Session, kind: Kind, task_id: str, path: str) -> None:
    """Wait (briefly) until ``GET /proxy/<id>/<path>`` answers below 400.

    Ready means the server answered on its agent; this checks the path users take, so a
    proxy that cannot reach the agent is reported here rather than as a blank browser tab.
    """
    deadline = time.monotonic() + PROXY_PROBE_SECONDS
    while True:
        try:
            sess.client.get(f"/proxy/{task_id}/{path}")
            return
        except APIError as e:
            if e.status < 400:  # it answered, with something other than JSON: fine
                return
            if time.monotonic() >= deadline:
                raise CliError(
                    f"{kind.title} {task_id} is ready but {proxy_url(sess.client.master, task_id)}"
                    f"{path} answers HTTP {e.status}: {e.message}"
                ) from None
        time.sleep(POLL_SECONDS)


def can_open_browser() -> bool:
    """Whether ``webbrowser`` has a browser to start: not on a Linux box without a display."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def login_url(sess: Session, task_id: str) -> str:
    """A one-use browser login to the task, from ``POST /api/v1/tasks/{id}/proxy-ticket``.

    The ticket's path and query are joined to the master URL the user gave, as the master's own
    idea of its address (``localhost`` behind a tunnel, say) may not be reachable from here.
    """
    ticket = sess.client.post(f"/api/v1/tasks/{task_id}/proxy-ticket")
    parts = urlsplit(str(ticket["url"]))
    path = parts.path if parts.path.startswith("/") else "/" + parts.path
    return sess.client.master.rstrip("/") + path + (f"?{parts.query}" if parts.query else "")


def offer_browser(sess: Session, task_id: str) -> None:
    """Open the task in a browser, logged in; without one, print the link to open elsewhere."""
    try:
        url = login_url(sess, task_id)
    except ClientError as e:
        print(f"Cannot make a browser login link: {e.message}", file=sys.stderr)
        return
    if can_open_browser() and webbrowser.open(url):
        return
    print(
        f"No browser to open here; open this one-use login link within 60 s: {url}",
        file=sys.stderr,
    )


# ---- the verbs every kind has -----------------------------------------------------------------


def expand_id(sess: Session, kind: Kind, prefix: str) -> str:
    """A full task id from a unique prefix (as ``det cmd`` does); full ids are used as given."""
    if TASK_ID_RE.match(prefix):
        return prefix
    ids = [str(t["id"]) for t in sess.client.get(kind.collection).get(kind.plural) or []]
    if prefix in ids:
        return prefix
    matches = [i for i in ids if i.startswith(prefix)]
    if len(matches) > 1:
        raise CliError(f"partial UUID '{prefix}' not unique")
    if not matches:
        raise CliError(f"partial UUID '{prefix}' not found")
    return matches[0]


def fetch(sess: Session, kind: Kind, task_id: str) -> dict[str, Any]:
    """``GET /api/v1/<plural>/<id>``'s task object."""
    item: dict[str, Any] = sess.client.get(f"{kind.collection}/{task_id}")[kind.noun]
    return item


def _row(kind: Kind, item: dict[str, Any]) -> list[Any]:
    return [item.get(h, "N/A") for h in kind.headers]


def _public(item: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in item.items() if k not in SECRET_FIELDS}
    shown["state"] = render.strip_prefix(shown.get("state"), "STATE_")
    return shown


def list_tasks(kind: Kind, args: argparse.Namespace) -> None:
    sess = setup_session(args)
    items = [_public(t) for t in sess.client.get(kind.collection).get(kind.plural) or []]
    if not args.all:
        items = [t for t in items if t.get("username") in (None, sess.username)]
    items.sort(key=lambda t: str(t.get("registeredTime") or ""))
    if args.quiet:
        for t in items:
            print(t["id"])
        return
    add_workspace_names(sess, items)
    if args.json:
        render.print_json(items)
        return
    render.print_table(list(kind.headers), [_row(kind, t) for t in items], as_csv=args.csv)


def describe_task(kind: Kind, args: argparse.Namespace) -> None:
    sess = setup_session(args)
    item = _public(fetch(sess, kind, expand_id(sess, kind, args.task_id)))
    add_workspace_names(sess, [item])
    if args.json:
        render.print_json(item)
        return
    render.print_table(list(kind.headers), [_row(kind, item)], as_csv=args.csv)


def show_config(kind: Kind, args: argparse.Namespace) -> None:
    sess = setup_session(args)
    task_id = expand_id(sess, kind, args.task_id)
    render.print_yaml(sess.client.get(f"{kind.collection}/{task_id}").get("config") or {})


def task_logs(kind: Kind, args: argparse.Namespace) -> None:
    sess = setup_session(args)
    cli_task.show_logs(args, sess, expand_id(sess, kind, args.task_id))


def kill_tasks(kind: Kind, args: argparse.Namespace) -> None:
    sess = setup_session(args)
    ids = [expand_id(sess, kind, prefix) for prefix in args.task_id]
    for i, task_id in enumerate(ids):
        try:
            sess.client.post(f"{kind.collection}/{task_id}/kill")
            print(f"Killed {kind.noun} {task_id}")
        except APIError as e:
            if not args.force:
                for ignored in ids[i + 1 :]:
                    print(f"Cowardly not killing {ignored}")
                raise
            print(f"Skipping: {e} ({type(e).__name__})")


def add_start_args(parser: argparse.ArgumentParser, kind: Kind) -> None:
    """The options every ``start`` takes: config, context, detach."""
    parser.add_argument(
        "--config-file",
        type=argparse.FileType("r", encoding="utf-8"),
        default=None,
        help=f"{kind.noun} config (.yaml)",
    )
    parser.add_argument("--config", action="append", default=[], help=CONFIG_HELP)
    parser.add_argument(
        "-c", "--context", default=None, help="directory to upload into the task's working dir"
    )
    parser.add_argument(
        "-d", "--detach", action="store_true", help="run in the background and print the ID"
    )


def register_common(verbs: SubParsers, noun: argparse.ArgumentParser, kind: Kind) -> None:
    """``list`` (the default), ``describe``, ``config``, ``logs`` and ``kill``."""
    title = kind.plural

    def bind(func: Callable[[Kind, argparse.Namespace], None]) -> Handler:
        return lambda args: func(kind, args)

    p = add_verb(verbs, "list ls", bind(list_tasks), f"list {title}", default_for=noun)
    p.add_argument("-q", "--quiet", action="store_true", help="only display the IDs")
    p.add_argument("--all", "-a", action="store_true", help=f"show all {title} (everyone's)")
    add_output_args(p)

    p = add_verb(verbs, "describe", bind(describe_task), f"display {kind.noun} metadata")
    p.add_argument("task_id", metavar=f"{kind.noun}_id", help=f"{kind.noun} ID")
    add_output_args(p)

    p = add_verb(verbs, "config", bind(show_config), f"display {kind.noun} config")
    p.add_argument("task_id", metavar=f"{kind.noun}_id", help=f"{kind.noun} ID")

    p = add_verb(verbs, "logs", bind(task_logs), f"fetch {kind.noun} logs")
    p.add_argument("task_id", metavar=f"{kind.noun}_id", help=f"{kind.noun} ID")
    cli_task.add_log_args(p)

    p = add_verb(verbs, "kill", bind(kill_tasks), f"kill a {kind.noun}")
    p.add_argument("task_id", metavar=f"{kind.noun}_id", nargs="+", help=f"{kind.noun} ID")
    p.add_argument("-f", "--force", action="store_true", help="ignore errors")
