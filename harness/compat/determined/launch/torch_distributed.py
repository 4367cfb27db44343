"""``python3 -m determined.launch.torch_distributed [TORCHRUN_ARGS... --] SCRIPT...`` (or
``--trial module:Class``).

In Determined this starts one worker per slot with ``torchrun``. In Flotilla,
``python -m harness.launch`` already starts one worker per slot for every entrypoint, with
torchrun's variables set, so here each worker only runs ``SCRIPT``. A one-slot trial (no
``RANK`` set) gets the variables of a world of one, so ``dist.init_process_group()`` works as
it does under ``torchrun``. ``--trial module:Class`` runs that ``PyTorchTrial`` with the
trainer, as ``entrypoint: module:Class`` would.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from harness.launch import LOG_FORMAT, exit_now, parse_entrypoint, run_worker
from harness.service import free_port


def script_argv(argv: Sequence[str]) -> list[str]:
    """The command after the launcher's own arguments (torchrun options end at ``--``)."""
    args = list(argv)
    if "--" in args:
        args = args[args.index("--") + 1 :]
    if not args:
        raise SystemExit(
            "usage: python3 -m determined.launch.torch_distributed [TORCHRUN_ARGS... --] SCRIPT..."
        )
    return args


def worker_environ(environ: dict[str, str]) -> dict[str, str]:
    """``environ``, plus the variables of a world of one when no launcher set them."""
    env = dict(environ)
    if "RANK" not in env:
        env.update(
            RANK="0",
            LOCAL_RANK="0",
            WORLD_SIZE="1",
            LOCAL_WORLD_SIZE="1",
            GROUP_RANK="0",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(free_port("127.0.0.1")),
        )
    return env


def main(argv: Sequence[str]) -> int:
    """Become ``SCRIPT`` (exec: signals and the exit code are the script's own), or run the
    ``--trial`` class here."""
    command = script_argv(argv)
    if command[0] == "--trial":
        if len(command) != 2 or parse_entrypoint(command[1]) is None:
            raise SystemExit(f"--trial takes one module:Class, got {' '.join(command[1:])!r}")
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        return run_worker(command[1])
    os.execvpe(command[0], command, worker_environ(dict(os.environ)))


if __name__ == "__main__":
    code = main(sys.argv[1:])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        exit_now(code)  # as harness.launch's workers do (torch.distributed's teardown)
    sys.exit(code)
