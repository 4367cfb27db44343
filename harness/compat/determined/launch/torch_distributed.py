"""``python3 -m determined.launch.torch_distributed [TORCHRUN_ARGS... --] SCRIPT...``.

In Determined this starts one worker per slot with ``torchrun``. In Flotilla,
``python -m harness.launch`` already starts one worker per slot for every entrypoint, with
torchrun's variables set, so here each worker only runs ``SCRIPT``. A one-slot trial (no
``RANK`` set) gets the variables of a world of one, so ``dist.init_process_group()`` works as
it does under ``torchrun``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from harness.service import free_port


def script_argv(argv: Sequence[str]) -> list[str]:
    """The command after the launcher's own arguments (torchrun options end at ``--``)."""
    args = list(argv)
    if "--" in args:
        args = args[args.index("--") + 1 :]
    if args and args[0] == "--trial":
        raise SystemExit(
            "determined.launch.torch_distributed --trial is not implemented by Flotilla's "
            "determined layer: use `entrypoint: module:TrialClass` for a PyTorchTrial"
        )
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


def main(argv: Sequence[str]) -> None:
    """Become ``SCRIPT`` (exec: signals and the exit code are the script's own)."""
    command = script_argv(argv)
    os.execvpe(command[0], command, worker_environ(dict(os.environ)))


if __name__ == "__main__":
    main(sys.argv[1:])
