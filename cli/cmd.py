"""``det command`` (alias ``cmd``): run a command on the cluster, list, describe, follow, kill.

``det cmd run ENTRYPOINT...`` creates the command, streams its logs until the master ends the
stream (the task ended and every line was sent), then exits with the command's own exit code,
read from the last allocation of ``GET /api/v1/tasks/{id}``. Determined's CLI always exits 0
here; scripts are better served by the real code. Our own notices ("Launched command ...",
"Task log stream ended ...") go to stderr so that stdout carries only the command's output.

The entrypoint is sent as Determined sends it, a list of arguments, except that a single
argument (``det cmd run 'echo hi && ls'``) is sent as a shell string.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from cli import progress, render
from cli import task as cli_task
from cli.config_file import read_yaml
from cli.context import pack_context
from cli.errors import CliError
from cli.parser import add_group, add_output_args, add_verb
from cli.session import Session, setup_session
from harness.client import APIError
from harness.determined_fields import ineffective_fields
from harness.task_config import CommandConfig

if TYPE_CHECKING:
    from cli.parser import SubParsers

COMMAND_HEADERS = [
    "id",
    "username",
    "description",
    "state",
    "exitStatus",
    "resourcePool",
    "workspaceName",
]
SORT_KEYS = [*COMMAND_HEADERS, "registeredTime", "startTime"]
TERMINAL_STATES = {"STATE_TERMINATED", "STATE_TERMINATING_DONE"}
# After the log stream ends the task has ended; allow the master this long to publish the exit.
EXIT_STATUS_WAIT_SECONDS = 30.0
EXIT_STATUS_POLL_SECONDS = 0.25
TASK_ID_RE = re.compile(
    r"^(?:[0-9]+\.)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE
)
CONFIG_HELP = (
    "config override as key=value; nested keys with dots (resources.slots=2); "
    "comma-separated values become lists; JSON/YAML values are parsed"
)


def _set_path(config: dict[str, Any], dotted: str, value: Any) -> None:
    node = config
    keys = dotted.split(".")
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def parse_config_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--config key.path=value`` overrides the way Determined's ``ntsc`` does."""
    for override in overrides:
        if "=" not in override:
            raise CliError(f"could not read config option {override!r}: expected key=value")
        key, raw = override.split("=", maxsplit=1)
        value: Any
        try:
            if raw.startswith(("[", "{")):
                value = yaml.safe_load(raw)
            elif "," in raw:
                value = [yaml.safe_load(part) for part in raw.split(",")]
            else:
                value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise CliError(f"could not parse the value of config option {key!r}: {e}") from None
        if key == "bind_mounts" and not isinstance(value, list):
            value = [value]
        _set_path(config, key, value)
    return config


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if args.config_file:
        _, loaded = read_yaml(args.config_file)
        loaded = loaded or {}
        if not isinstance(loaded, dict):
            raise CliError(f"{args.config_file.name}: a command config must be a YAML mapping")
        config = loaded
    config = parse_config_overrides(config, args.config)
    entrypoint = [part for part in args.entrypoint if part != "--"] if args.entrypoint else []
    if not config.get("entrypoint") and entrypoint:
        config["entrypoint"] = entrypoint[0] if len(entrypoint) == 1 else entrypoint
    if not config.get("entrypoint"):
        raise CliError("no entrypoint given: det cmd run [options] COMMAND [ARGS...]")
    # Determined-only fields (environment.image, …) are accepted; say once that they do nothing.
    # A config the model refuses is left for the master to refuse, naming the field.
    with contextlib.suppress(ValidationError):
        for warning in ineffective_fields(CommandConfig.model_validate(config)):
            print(f"Warning: command config: {warning}", file=sys.stderr)
    return config


def expand_id(sess: Session, prefix: str) -> str:
    """A full command id from a unique prefix of one (full ids are used as given)."""
    if TASK_ID_RE.match(prefix):
        return prefix
    ids = [c["id"] for c in sess.client.get("/api/v1/commands").get("commands") or []]
    if prefix in ids:
        return prefix
    matches = [i for i in ids if i.startswith(prefix)]
    if len(matches) > 1:
        raise CliError(f"partial UUID '{prefix}' not unique")
    if not matches:
        raise CliError(f"partial UUID '{prefix}' not found")
    return matches[0]


def _exit_code(code: int) -> int:
    """A process exit status from a task's: signals (negative) become 128+N, like a shell."""
    if code < 0:
        return min(128 - code, 255)
    return code if code <= 255 else 1


def wait_for_exit(sess: Session, task_id: str) -> int:
    """The command's exit code once its task has ended; reasons without a code go to stderr."""
    deadline = time.monotonic() + EXIT_STATUS_WAIT_SECONDS
    while True:
        task = sess.client.get(f"/api/v1/tasks/{task_id}").get("task") or {}
        allocations = task.get("allocations") or []
        last = allocations[-1] if allocations else {}
        ended = bool(
            task.get("endTime") or last.get("endTime") or last.get("state") in TERMINAL_STATES
        )
        code, reason = last.get("exitCode"), last.get("exitReason")
        if ended and (isinstance(code, int) or reason or not allocations):
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(EXIT_STATUS_POLL_SECONDS)
    if isinstance(code, int) and ended:
        return _exit_code(code)
    if not ended:
        raise CliError(
            f"the log stream ended but command {task_id} is still running; "
            f"follow it with: det task logs -f {task_id}"
        )
    if not reason:
        reason = (
            "it ended before it started" if not allocations else "it ended without an exit code"
        )
    print(f"Command {task_id} failed: {reason}", file=sys.stderr)
    return 1


def run_command(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"config": build_config(args)}
    if args.context:
        # With --detach, stdout carries only the id (for scripts).
        body["files"] = pack_context(args.context, out=sys.stderr if args.detach else None)
    sess = setup_session(args)
    command = progress.post(sess.client, "/api/v1/commands", body, "Uploading context")["command"]
    command_id = command["id"]
    if args.detach:
        print(command_id)
        return 0
    print(f"Launched command (id: {command_id}, name: {command.get('description', '')}).")
    try:
        cli_task.print_logs(cli_task.task_logs(sess, command_id, follow=True))
    except KeyboardInterrupt:
        cli_task.stream_ended_notice(command_id)
        raise
    cli_task.stream_ended_notice(command_id)
    return wait_for_exit(sess, command_id)


def _fetch_commands(sess: Session) -> list[dict[str, Any]]:
    commands: list[dict[str, Any]] = sess.client.get("/api/v1/commands").get("commands") or []
    for item in commands:
        item["state"] = render.strip_prefix(item.get("state"), "STATE_")
    return commands


def add_workspace_names(sess: Session, items: list[dict[str, Any]]) -> None:
    """Determined's ``workspaceName`` column: each task's ``workspaceId`` looked up in ``GET
    /api/v1/workspaces`` (asked only when some task has one), or "missing workspace id N"."""
    if not any("workspaceId" in item for item in items):
        return
    workspaces = sess.client.get("/api/v1/workspaces").get("workspaces") or []
    names = {w.get("id"): w.get("name") for w in workspaces}
    for item in items:
        if "workspaceId" in item:
            wid = item["workspaceId"]
            item["workspaceName"] = names.get(wid) or f"missing workspace id {wid}"


def list_commands(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    commands = _fetch_commands(sess)
    if not args.all:
        commands = [c for c in commands if c.get("username") in (None, sess.username)]
    if args.quiet:
        for c in commands:
            print(c["id"])
        return
    add_workspace_names(sess, commands)
    sort_key = "registeredTime" if args.sort_by == "startTime" else args.sort_by
    commands.sort(key=lambda c: str(c.get(sort_key) or ""), reverse=args.order_by == "desc")
    if args.json:
        render.print_json(commands)
        return
    rows = [[c.get(h, "N/A") for h in COMMAND_HEADERS] for c in commands]
    render.print_table(COMMAND_HEADERS, rows, as_csv=args.csv)


def describe_command(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    command_id = expand_id(sess, args.command_id)
    item = sess.client.get(f"/api/v1/commands/{command_id}")["command"]
    item["state"] = render.strip_prefix(item.get("state"), "STATE_")
    add_workspace_names(sess, [item])
    if args.json:
        render.print_json(item)
        return
    row = [item.get(h, "N/A") for h in COMMAND_HEADERS]
    render.print_table(COMMAND_HEADERS, [row], as_csv=args.csv)


def show_config(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    command_id = expand_id(sess, args.command_id)
    render.print_yaml(sess.client.get(f"/api/v1/commands/{command_id}").get("config") or {})


def command_logs(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    cli_task.show_logs(args, sess, expand_id(sess, args.task_id))


def kill_commands(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    ids = [expand_id(sess, prefix) for prefix in args.command_id]
    for i, command_id in enumerate(ids):
        try:
            sess.client.post(f"/api/v1/commands/{command_id}/kill")
            print(f"Killed command {command_id}")
        except APIError as e:
            if not args.force:
                for ignored in ids[i + 1 :]:
                    print(f"Cowardly not killing {ignored}")
                raise
            print(f"Skipping: {e} ({type(e).__name__})")


def register(nouns: SubParsers) -> None:
    noun, verbs = add_group(nouns, "command cmd", "manage commands")

    p = add_verb(verbs, "list ls", list_commands, "list commands", default_for=noun)
    p.add_argument("--sort-by", choices=SORT_KEYS, default="startTime", help="sort by field")
    p.add_argument("--order-by", choices=["asc", "desc"], default="asc", help="sort order")
    p.add_argument("-q", "--quiet", action="store_true", help="only display the IDs")
    p.add_argument(
        "--all", "-a", action="store_true", help="show all commands (including other users')"
    )
    add_output_args(p)

    p = add_verb(verbs, "run", run_command, "create command")
    p.add_argument(
        "entrypoint", nargs=argparse.REMAINDER, help="entrypoint command and arguments to execute"
    )
    p.add_argument(
        "--config-file",
        type=argparse.FileType("r", encoding="utf-8"),
        default=None,
        help="command config (.yaml)",
    )
    p.add_argument("--config", action="append", default=[], help=CONFIG_HELP)
    p.add_argument(
        "-c",
        "--context",
        default=None,
        help="directory to upload into the command's working directory (honours .detignore)",
    )
    p.add_argument(
        "-d", "--detach", action="store_true", help="run in the background and print the ID"
    )

    p = add_verb(verbs, "describe", describe_command, "display command metadata")
    p.add_argument("command_id", help="command ID")
    add_output_args(p)

    p = add_verb(verbs, "config", show_config, "display command config")
    p.add_argument("command_id", help="command ID")

    p = add_verb(verbs, "logs", command_logs, "fetch command logs")
    p.add_argument("task_id", metavar="command_id", help="command ID")
    cli_task.add_log_args(p)

    p = add_verb(verbs, "kill", kill_commands, "forcibly terminate a command")
    p.add_argument("command_id", nargs="+", help="command ID")
    p.add_argument("-f", "--force", action="store_true", help="ignore errors")
