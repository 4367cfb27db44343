"""``python -m harness.launch``: a trial's main program on its agent.

It runs the experiment's ``entrypoint`` (from ``DET_EXPERIMENT_CONFIG``):

- ``module:Class`` (``model_def:DigitsTrial``): the class is imported from the working directory
  (the uploaded model definition) and run by the PyTorch trainer;
- anything else (``python3 train.py --epochs 3``): a shell command (``sh -c``), typically a
  script using the Core API; its exit code is the trial's.

With ``resources.slots_per_trial`` > 1 it starts one worker per slot of this agent, each running
the entrypoint with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` set the way ``torchrun`` sets them, prefixes their output with
``[rank=N]`` (the global rank), forwards SIGTERM and SIGINT to them, and if one fails stops the
others (a worker whose peer died would otherwise wait in a collective for half an hour) and exits
with the failed worker's code.

When the trial's slots span several agents (``DET_SLOT_IDS`` holds fewer than
``slots_per_trial``), the master started this launcher on each of them. Before starting workers
the launchers meet through the master (``harness.rendezvous``): each learns the total number of
workers, the global rank of its first slot (agents ordered by id, so the first agent's local
rank 0 is the chief) and the chief's address and port. The trial's run ends once every agent's
launcher has exited; when one fails, the master stops the others.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import IO, Any

from harness import compat
from harness.core.env import slot_ids_from_environ
from harness.rendezvous import Layout, RendezvousError, join, single_agent_layout

log = logging.getLogger("harness.launch")

_CLASS_ENTRYPOINT = re.compile(r"^\s*(?P<module>[A-Za-z_][\w.]*):(?P<cls>[A-Za-z_]\w*)\s*$")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Seconds workers get to exit after SIGTERM before they are killed, once one of them failed.
STOP_GRACE_SECONDS = 10.0


class LaunchError(RuntimeError):
    """The trial cannot be started as configured; the message says why."""


def parse_entrypoint(entrypoint: str) -> tuple[str, str] | None:
    """``(module, class)`` for a ``module:Class`` entrypoint, None for a shell command."""
    match = _CLASS_ENTRYPOINT.match(entrypoint)
    return (match["module"], match["cls"]) if match else None


def load_trial_class(module_name: str, class_name: str, directory: str | None = None) -> Any:
    """Import ``module_name`` from ``directory`` (default: the working directory, where the
    agent unpacked the model definition) and return its ``class_name``."""
    path = os.path.abspath(directory or os.getcwd())
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise LaunchError(
                f"entrypoint {module_name}:{class_name}: no module {module_name!r} in {path} "
                "(is the file part of the model definition directory?)"
            ) from exc
        raise
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise LaunchError(
            f"entrypoint {module_name}:{class_name}: {module.__file__} has no {class_name!r}"
        ) from None


def read_launch_config(environ: Mapping[str, str]) -> tuple[str, int]:
    """``(entrypoint, slots_per_trial)`` from ``DET_EXPERIMENT_CONFIG``."""
    text = environ.get("DET_EXPERIMENT_CONFIG", "")
    if not text.strip():
        raise LaunchError(
            "DET_EXPERIMENT_CONFIG is unset: harness.launch runs trials the master starts"
        )
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise LaunchError(f"DET_EXPERIMENT_CONFIG is not valid JSON: {exc}") from None
    entrypoint = config.get("entrypoint") if isinstance(config, dict) else None
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise LaunchError("DET_EXPERIMENT_CONFIG has no entrypoint")
    resources = config.get("resources") or {}
    slots = resources.get("slots_per_trial", 1) if isinstance(resources, dict) else 1
    if not isinstance(slots, int) or slots < 1:
        raise LaunchError(f"resources.slots_per_trial must be an integer >= 1, got {slots!r}")
    return entrypoint, slots


# ---- one worker ------------------------------------------------------------------------------


def run_worker(entrypoint: str) -> int:
    """Run the entrypoint in this process (a trainer class) or as a child (a command)."""
    target = parse_entrypoint(entrypoint)
    if target is None:
        return run_command(entrypoint)
    from harness.pytorch import run_trial

    trial_class = load_trial_class(*target)
    outcome = run_trial(trial_class)
    log.info("trial finished: %s", outcome.value)
    return 0


def run_command(command: str, env: Mapping[str, str] | None = None) -> int:
    """``sh -c command`` with our environment; SIGTERM/SIGINT are passed on; its exit code
    (128 + N for a signal N, like a shell)."""
    process = subprocess.Popen(["sh", "-c", command], env=dict(env or os.environ))
    with _ForwardedSignals(lambda sig: _send(process, sig)):
        code = process.wait()
    return 128 - code if code < 0 else code


# ---- several workers -------------------------------------------------------------------------


def worker_layout(slots: int, environ: Mapping[str, str]) -> Layout:
    """All ``slots`` here, or this agent's share of them after meeting the other agents."""
    slot_ids = slot_ids_from_environ(environ)
    if not slot_ids or len(slot_ids) >= slots:
        return single_agent_layout(slots)
    return join(environ, len(slot_ids), slots)


def worker_environ(
    environ: Mapping[str, str], layout: Layout, local_rank: int, threads: int | None
) -> dict[str, str]:
    env = dict(environ)
    env.update(
        RANK=str(layout.rank(local_rank)),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(layout.world_size),
        LOCAL_WORLD_SIZE=str(layout.local_size),
        MASTER_ADDR=layout.master_addr,
        MASTER_PORT=str(layout.master_port),
    )
    # Like torchrun: workers sharing the CPUs should not each start a thread per core.
    if threads is not None and "OMP_NUM_THREADS" not in environ:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_workers(slots: int, environ: Mapping[str, str], worker_argv: Sequence[str]) -> int:
    """Start this agent's workers of ``worker_argv`` and wait for them all (see module doc)."""
    layout = worker_layout(slots, environ)
    threads = max(1, (os.cpu_count() or 1) // layout.local_size)
    processes: list[subprocess.Popen[bytes]] = []
    pumps: list[threading.Thread] = []
    for local_rank in range(layout.local_size):
        process = subprocess.Popen(
            list(worker_argv),
            env=worker_environ(environ, layout, local_rank, threads),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        processes.append(process)
        assert process.stdout is not None and process.stderr is not None
        pumps.append(_pump(process.stdout, sys.stdout, layout.rank(local_rank)))
        pumps.append(_pump(process.stderr, sys.stderr, layout.rank(local_rank)))

    def forward(sig: int) -> None:
        for process in processes:
            _send(process, sig)

    with _ForwardedSignals(forward):
        code = _wait_all(processes, layout.rank_offset)
    for pump in pumps:
        pump.join(timeout=5)
    return code


def _wait_all(processes: list[subprocess.Popen[bytes]], first_rank: int = 0) -> int:
    """0 once all exited 0; the first failure's code after stopping the rest."""
    while True:
        codes = [process.poll() for process in processes]
        failed = [(first_rank + i, code) for i, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            rank, code = failed[0]
            assert code is not None
            log.error("worker rank %d exited with %d; stopping the others", rank, code)
            _stop(processes)
            return 128 - code if code < 0 else code
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.1)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        _send(process, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _pump(source: IO[bytes], sink: IO[str], rank: int) -> threading.Thread:
    """Copy a worker's output line by line, each line prefixed with its rank."""

    def copy() -> None:
        prefix = f"[rank={rank}] "
        for raw in iter(source.readline, b""):
            sink.write(prefix + raw.decode(errors="replace"))
            sink.flush()
        source.close()

    thread = threading.Thread(target=copy, name=f"output-rank-{rank}", daemon=True)
    thread.start()
    return thread


def _send(process: subprocess.Popen[Any], sig: int) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


class _ForwardedSignals:
    """Within the block, SIGTERM and SIGINT go to ``forward`` instead of ending this process."""

    def __init__(self, forward: Callable[[int], None]) -> None:
        self._forward = forward
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(sig: int, _frame: FrameType | None) -> None:
            self._forward(sig)

        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, handler)

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


# ---- main --------------------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    *,
    worker_argv: Sequence[str] | None = None,
) -> int:
    """Run the trial; returns the exit code. ``worker_argv`` is how workers are started
    (default: this module again with the same interpreter)."""
    del argv  # no options: everything comes from the environment
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    compat.enable()  # `import determined` finds Flotilla's layer, here and in the workers
    env = dict(os.environ)
    try:
        entrypoint, slots = read_launch_config(env)
        if slots > 1 and "RANK" not in env:
            return run_workers(slots, env, worker_argv or [sys.executable, "-m", "harness.launch"])
        return run_worker(entrypoint)
    except (LaunchError, RendezvousError) as exc:
        print(f"harness.launch: {exc}", file=sys.stderr)
        return 2


def exit_now(code: int) -> None:
    """End a distributed worker without the interpreter's teardown. Everything the worker owes
    the master was sent when the trial returned; tearing down torch.distributed's (gloo)
    threads at interpreter exit sometimes aborts ("terminate called without an active
    exception"), which would turn a finished trial into a failed one."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    exit_code = main(sys.argv[1:])
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        exit_now(exit_code)
    sys.exit(exit_code)
