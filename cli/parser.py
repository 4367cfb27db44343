"""Small helpers that give argparse Determined's command-line grammar.

Determined spells a command with its aliases as ``"u|ser"`` (every prefix joined at ``|`` is an
alias: ``u``, ``user``) or ``"list ls"`` (space-separated alternatives); the last full spelling of
the first word is the canonical name. A noun has one *default* verb (``det agent`` runs
``det agent list``) and a ``help`` verb. Each verb records a short action phrase ("list agents")
in ``args.action``, which the top-level error handler uses for "Failed to list agents: ...".
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

# What a verb runs: the parsed arguments in, an exit code (None meaning 0) out.
Handler = Callable[[argparse.Namespace], int | None]


def make_prefixes(word: str) -> list[str]:
    parts = word.split("|")
    prefixes = [parts[0]]
    for part in parts[1:]:
        prefixes.append(prefixes[-1] + part)
    return prefixes


def generate_aliases(spec: str) -> tuple[str, list[str]]:
    """``"c|heck|out co"`` → ``("checkout", ["c", "check", "co"])``, as Determined's CLI does."""
    prefixes = [make_prefixes(word) for word in spec.split()]
    main = prefixes[0].pop()
    return main, list(itertools.chain.from_iterable(prefixes))


def _help_handler(parser: argparse.ArgumentParser) -> Handler:
    def show_help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 0

    return show_help


class _DefaultVerb:
    """Run a noun's default verb: fill in that verb's own defaults first, then call it."""

    def __init__(self, parser: argparse.ArgumentParser, func: Handler) -> None:
        self.parser = parser
        self.func = func

    def __call__(self, args: argparse.Namespace) -> int | None:
        args = self.parser.parse_args([], args)
        return self.func(args)


def add_group(
    subparsers: SubParsers,
    spec: str,
    help_text: str,
) -> tuple[argparse.ArgumentParser, SubParsers]:
    """Add a noun (``"a|gent"``); without a verb it prints its help."""
    name, aliases = generate_aliases(spec)
    parser = subparsers.add_parser(name, aliases=aliases, help=help_text, description=help_text)
    verbs = parser.add_subparsers(metavar="subcommand")
    help_parser = verbs.add_parser("help", help="show help for this command")
    help_parser.set_defaults(func=_help_handler(parser), action="show help")
    parser.set_defaults(func=_help_handler(parser), action="show help")
    return parser, verbs


def add_verb(
    verbs: SubParsers,
    spec: str,
    func: Handler,
    help_text: str,
    *,
    default_for: argparse.ArgumentParser | None = None,
) -> argparse.ArgumentParser:
    """Add a verb (``"list ls"``); ``default_for`` makes it what its bare noun runs."""
    name, aliases = generate_aliases(spec)
    parser = verbs.add_parser(name, aliases=aliases, help=help_text, description=help_text)
    parser.set_defaults(func=func, action=help_text)
    if default_for is not None:
        default_for.set_defaults(func=_DefaultVerb(parser, func), action=help_text)
    return parser


def add_output_args(parser: argparse.ArgumentParser, *, csv: bool = True) -> None:
    """``--json`` (and ``--csv``) as mutually exclusive alternatives to the table."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print as JSON")
    if csv:
        group.add_argument("--csv", action="store_true", help="print as CSV")
    else:
        parser.set_defaults(csv=False)


def string_to_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "t", "yes", "y", "1", "on"):
        return True
    if lowered in ("false", "f", "no", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
