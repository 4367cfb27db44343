"""``det master info|config|logs``: what the master says about itself, its configuration and
its recent log (YAML by default, like Determined)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cli import render
from cli.parser import add_group, add_verb
from cli.session import setup_session

if TYPE_CHECKING:
    from cli.parser import SubParsers


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        render.print_json(data)
    else:
        render.print_yaml(data)


def master_info(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    _print(sess.client.get("/api/v1/master"), args.json)


def master_config(args: argparse.Namespace) -> None:
    """The configuration the master runs with, secrets shown as ``********`` (admins only)."""
    sess = setup_session(args)
    _print(sess.client.get("/api/v1/master/config").get("config"), args.json)


def format_log_entry(entry: dict[str, Any]) -> str:
    """Determined's ``{timestamp} [{level}]: {message}``."""
    level = render.strip_prefix(entry.get("level"), "LOG_LEVEL_") or ""
    return f"{entry.get('timestamp')} [{level}]: {entry.get('message', '')}"


def master_logs(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    params: dict[str, Any] = {"follow": args.follow}
    if args.tail:
        params["offset"] = -args.tail
    for line in sess.client.stream_lines("/api/v1/master/logs", params):
        print(format_log_entry(line.get("logEntry") or {}), flush=True)


def _output_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print as JSON")
    group.add_argument("--yaml", action="store_true", help="print as YAML (the default)")


def register(nouns: SubParsers) -> None:
    _, verbs = add_group(nouns, "master", "manage master")
    p = add_verb(verbs, "info", master_info, "fetch master info")
    _output_args(p)
    p = add_verb(verbs, "config", master_config, "fetch master config")
    _output_args(p)
    p = add_verb(verbs, "logs", master_logs, "fetch master logs")
    p.add_argument(
        "-f", "--follow", action="store_true", help="follow the logs of master, like tail -f"
    )
    p.add_argument("--tail", type=int, help="number of lines to show, counting from the end")
