"""``det master info``: what the master says about itself (YAML by default, like Determined)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cli import render
from cli.parser import add_group, add_verb
from cli.session import setup_session

if TYPE_CHECKING:
    from cli.parser import SubParsers


def master_info(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    info = sess.client.get("/api/v1/master")
    if args.json:
        render.print_json(info)
    else:
        render.print_yaml(info)


def register(nouns: SubParsers) -> None:
    _, verbs = add_group(nouns, "master", "manage master")
    p = add_verb(verbs, "info", master_info, "fetch master info")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print as JSON")
    group.add_argument("--yaml", action="store_true", help="print as YAML (the default)")
