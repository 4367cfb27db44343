"""``det version``: the client's version, the master's ``/info`` and where it was asked, as YAML.

Like Determined's, it needs no login, and a master that cannot be reached is not an error: the
master part is left blank and a hint on stderr says how to point ``det`` at one.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Any

from cli import render
from cli.parser import add_verb
from cli.session import new_client
from harness.client import MasterUnreachableError

if TYPE_CHECKING:
    from cli.parser import SubParsers


def client_version() -> str:
    try:
        return metadata.version("flotilla")
    except metadata.PackageNotFoundError:
        return "unknown"


def describe_version(args: argparse.Namespace) -> None:
    master_info: dict[str, Any] = {"cluster_id": "", "master_id": "", "version": ""}
    with new_client(args.master) as client:
        try:
            master_info = client.get("/info")
        except MasterUnreachableError:
            print(
                f"Master not found at {args.master}. Hint: Remember to set the DET_MASTER "
                "environment variable to the correct Determined master IP and port or use the "
                "'-m' flag.",
                file=sys.stderr,
            )
        info = {
            "client": {"version": client_version()},
            "master": master_info,
            "master_address": client.master,
        }
    render.print_yaml(info)


def register(nouns: SubParsers) -> None:
    add_verb(nouns, "version", describe_version, "show version information")
