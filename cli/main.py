"""``det``: the entry point, global flags, and the one place errors become messages.

Every failure ends as one line on stderr and a non-zero exit, never a traceback:

- an unreachable master names the URL ("cannot reach the master at http://...: ...");
- an API error says what was being done and what the master said
  ("Failed to list agents: Forbidden: ...");
- ``KeyboardInterrupt`` prints "Interrupting..." and exits 3, as Determined does;
- anything unexpected prints its type and message; ``DET_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from cli import (
    agent,
    checkpoint,
    cluster,
    cmd,
    deploy,
    experiment,
    master,
    model,
    notebook,
    resource_pool,
    shell,
    task,
    tensorboard,
    trial,
    user,
    version,
)
from cli.errors import CliError
from cli.session import NOT_LOGGED_IN, default_master
from harness.client import (
    APIError,
    ClientError,
    ForbiddenError,
    MasterUnreachableError,
    UnauthenticatedError,
    canonicalize_master_url,
)


def master_url(value: str) -> str:
    """argparse ``type`` for ``-m``: canonicalise, or report why the address is unusable."""
    try:
        return canonicalize_master_url(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="det",
        description="Flotilla command-line client",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "-u", "--user", metavar="username", default=None, help="run as the given user"
    )
    parser.add_argument(
        "-m",
        "--master",
        metavar="address",
        type=master_url,
        default=default_master(),
        help="master address (env DET_MASTER)",
    )
    parser.add_argument(
        "-v", "--version", action="version", version=f"%(prog)s {version.client_version()}"
    )
    nouns = parser.add_subparsers(metavar="command")
    help_parser = nouns.add_parser("help", help="show help for this command")
    help_parser.set_defaults(func=lambda args: parser.print_help(), action="show help")
    for module in (
        agent,
        checkpoint,
        cluster,
        cmd,
        deploy,
        experiment,
        master,
        model,
        notebook,
        resource_pool,
        shell,
        task,
        tensorboard,
        trial,
        user,
        version,
    ):
        module.register(nouns)
    return parser


def describe_error(action: str, error: Exception) -> str:
    """The one line printed for ``error`` raised while doing ``action``."""
    if isinstance(error, CliError):
        return error.message
    if isinstance(error, MasterUnreachableError):
        return error.message
    if isinstance(error, UnauthenticatedError):
        return f"Failed to {action}: {NOT_LOGGED_IN}"
    if isinstance(error, ForbiddenError):
        return f"Failed to {action}: Forbidden: {error.message}"
    if isinstance(error, APIError | ClientError):
        return f"Failed to {action}: {error.message}"
    return f"Failed to {action}: {type(error).__name__}: {error}"


def _debug() -> bool:
    return os.environ.get("DET_DEBUG", "").lower() in ("1", "true", "yes")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: no subcommand specified", file=sys.stderr)
        return 2
    action = getattr(args, "action", "run the command")
    try:
        code = args.func(args)
        sys.stdout.flush()
        return int(code or 0)
    except KeyboardInterrupt:
        print("Interrupting...", file=sys.stderr)
        return 3
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, and keep Python from complaining
        # about the closed stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as e:
        if _debug():
            traceback.print_exc(file=sys.stderr)
        exit_code = e.exit_code if isinstance(e, CliError) else 1
        print(describe_error(action, e), file=sys.stderr)
        return exit_code


if __name__ == "__main__":
    sys.exit(main())
