"""``det-agent``: load the config, find the slots, run the daemon until told to stop.

Exit status: 0 after SIGTERM/SIGINT (allocations killed with their grace period first),
1 when the master refuses the agent, 2 for a bad config, 3 when the master stayed unreachable
for ``reconnect_give_up_after`` seconds (after ``connection_lost_hook`` ran).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import cloudwatch_logs, isolation
from agent.config import AgentConfig, ConfigError, load_config
from agent.daemon import Daemon, agent_version
from agent.devices import detect_slots
from agent.isolation import Isolation, IsolationError
from agent.protocol import SlotInfo

EXIT_BAD_CONFIG = 2

log = logging.getLogger("agent")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="det-agent",
        description="Run a Flotilla agent: join the master, run allocations, ship their logs.",
        epilog="Precedence: flags > DET_AGENT_<FIELD> environment variables > --config file > "
        "defaults.",
    )
    parser.add_argument("--config", type=Path, help="agent config file (YAML)")
    parser.add_argument("--master-url", help="master URL, e.g. http://10.0.0.2:8080")
    parser.add_argument("--join-token", help="cluster join token (prefer DET_AGENT_JOIN_TOKEN)")
    parser.add_argument("--agent-id", help="agent name (default: the hostname)")
    parser.add_argument("--resource-pool", help="resource pool to join")
    parser.add_argument("--slots", help="number of CPU slots when no GPU is used")
    parser.add_argument(
        "--no-gpu", action="store_true", default=None, help="offer CPU slots even if GPUs exist"
    )
    parser.add_argument("--work-dir", help="directory for allocation working directories")
    parser.add_argument(
        "--isolation",
        choices=["auto", "uid", "none"],
        help="run each task as its own uid (uid), never (none), or when possible (auto)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {agent_version()}")
    return parser.parse_args(argv)


def _flags(args: argparse.Namespace) -> dict[str, object]:
    names = (
        "master_url",
        "join_token",
        "agent_id",
        "resource_pool",
        "slots",
        "no_gpu",
        "work_dir",
        "isolation",
    )
    return {name: getattr(args, name) for name in names}


async def _run(config: AgentConfig, slots: list[SlotInfo], mode: Isolation) -> int:
    daemon = Daemon(config, slots, mode)
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s", sig.name)
        daemon.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    return await daemon.run()


def _prepare_work_dir(config: AgentConfig) -> Isolation:
    """Create the work dir and decide the isolation (:func:`agent.isolation.resolve`); under
    ``uid`` the work dir is made passable (0711) for task uids. Logs the one warning of an
    ``auto`` that fell back to ``none``."""
    config.work_path.mkdir(parents=True, exist_ok=True)
    mode, why_not = isolation.resolve(config.isolation, config.work_path)
    if why_not:
        log.warning("%s", why_not)
    if mode == "uid":
        config.work_path.chmod(isolation.WORK_ROOT_MODE)
    return mode


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO: the spot watcher's polls (agent/spot.py) would flood.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = load_config(args.config, _flags(args), os.environ)
        mode = _prepare_work_dir(config)
        shipping = cloudwatch_logs.start(config)
    except (ConfigError, IsolationError) as e:
        print(f"det-agent: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)
    except OSError as e:
        print(f"det-agent: work_dir: cannot create {e.filename}: {e.strerror}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)
    slots = detect_slots(no_gpu=config.no_gpu, cpu_slot_count=config.slots)
    log.info(
        "agent %s (version %s) starting, work_dir %s, isolation %s",
        config.agent_id,
        agent_version(),
        config.work_path,
        mode,
    )
    try:
        code = asyncio.run(_run(config, slots, mode))
    finally:
        cloudwatch_logs.stop(shipping)
    sys.exit(code)


if __name__ == "__main__":
    main()
