"""``python -m harness.tensorboard NAME=PATH...``: a TensorBoard task's main program.

Each argument names a run group and a directory of event files, e.g.
``experiment-3=/data/tensorboard/experiment/3``. TensorBoard gets them as ``--logdir_spec
name:path,...`` and names every run ``<name>/<subdirectory>`` (``experiment-3/trial/7``), so
runs of different experiments never collide.

TensorBoard has no authentication of its own: it binds to the address facing the master (see
``harness.service``) and is reached only through the master's proxy, which checks who may pass.
It serves under ``--path_prefix=/proxy/<task-id>`` (TensorBoard wants no trailing slash) because
the proxy keeps the prefix when forwarding.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from harness.service import TaskEnv, bind_host, free_port
from harness.service_process import ServiceSpec, local_url, run_service

# Seconds between TensorBoard's rescans: a running trial's new points show up this quickly.
RELOAD_INTERVAL_SECONDS = 5


@dataclass(frozen=True)
class LogDir:
    """One ``NAME=PATH`` argument; ``path`` is absolute."""

    name: str
    path: str


def parse_logdir(text: str) -> LogDir:
    """Parse ``NAME=PATH``; refuse what ``--logdir_spec`` cannot express (commas anywhere,
    a colon in the name)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATH")
    if ":" in name or "," in name:
        raise argparse.ArgumentTypeError(f"run name {name!r} must not contain ':' or ','")
    if "," in path:
        raise argparse.ArgumentTypeError(f"directory {path!r} must not contain ','")
    return LogDir(name=name, path=os.path.abspath(path))


def logdir_spec(logdirs: Sequence[LogDir]) -> str:
    """TensorBoard's ``--logdir_spec`` value for ``logdirs``."""
    return ",".join(f"{d.name}:{d.path}" for d in logdirs)


def tensorboard_argv(logdirs: Sequence[LogDir], host: str, port: int, prefix: str) -> list[str]:
    """The TensorBoard command line, run by this interpreter (the agent's, which has it)."""
    return [
        sys.executable,
        "-m",
        "tensorboard.main",
        f"--logdir_spec={logdir_spec(logdirs)}",
        f"--host={host}",
        f"--port={port}",
        f"--path_prefix={prefix}",
        f"--reload_interval={RELOAD_INTERVAL_SECONDS}",
        # The fast Rust loader does not support --logdir_spec; say so instead of letting
        # TensorBoard print a warning about it on every start.
        "--load_fast=false",
    ]


def tensorboard_spec(task: TaskEnv, logdirs: Sequence[LogDir], host: str, port: int) -> ServiceSpec:
    """Everything needed to run and probe TensorBoard for ``task``."""
    prefix = task.base_url.rstrip("/")
    return ServiceSpec(
        name="TensorBoard",
        argv=tensorboard_argv(logdirs, host, port, prefix),
        ready_url=local_url(host, port, f"{prefix}/data/logdir"),
        ready_message=f"TensorBoard ready at {prefix}/",
    )


def check_logdirs(logdirs: Sequence[LogDir]) -> str | None:
    """A one-line complaint about missing or repeated entries, or ``None`` when all is well."""
    names = [d.name for d in logdirs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        return f"run names given more than once: {', '.join(repeated)}"
    missing = [f"{d.name}={d.path}" for d in logdirs if not os.path.isdir(d.path)]
    if missing:
        return f"TensorBoard log directories not found: {', '.join(missing)}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.tensorboard",
        description="Serve TensorBoard for a Flotilla TensorBoard task.",
    )
    parser.add_argument(
        "logdirs",
        metavar="NAME=PATH",
        nargs="+",
        type=parse_logdir,
        help="a run name and a directory of event files, e.g. experiment-3=/data/tb/experiment/3",
    )
    args = parser.parse_args(argv)
    logdirs: list[LogDir] = args.logdirs
    problem = check_logdirs(logdirs)
    if problem:
        print(f"harness.tensorboard: {problem}", file=sys.stderr)
        return 1
    try:
        task = TaskEnv.from_environ()
    except RuntimeError as e:
        print(f"harness.tensorboard: {e}", file=sys.stderr)
        return 1
    try:
        host = bind_host(task.master_url)
        port = free_port(host)
    except OSError as e:
        print(f"harness.tensorboard: no address faces the master: {e}", file=sys.stderr)
        return 1
    return run_service(task, host, port, tensorboard_spec(task, logdirs, host, port))


if __name__ == "__main__":
    sys.exit(main())
