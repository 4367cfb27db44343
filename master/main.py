"""``det-master``: read the config, secure the data directory, migrate the database, serve."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from harness.experiment_config import SharedFSStorage
from master.app import create_app
from master.config import ConfigError, MasterConfig, load_config
from master.db import PRIVATE_DIR_MODE

# Owner only, plus traversal for others: tasks running as their own uids must reach the shared
# checkpoint or TensorBoard directories inside; they can list and read nothing else.
TRAVERSABLE_DIR_MODE = 0o711


def shared_dirs(config: MasterConfig) -> list[Path]:
    """Directories tasks write to that the master configures: TensorBoard and shared_fs."""
    dirs = [config.resolved_tensorboard_dir]
    storage = config.resolved_checkpoint_storage
    if isinstance(storage, SharedFSStorage):
        dirs.append(Path(storage.host_path).expanduser())
    return dirs


def secure_data_dir(config: MasterConfig) -> Path:
    """Create the data directory for the master's user only (0700), or 0711 when a shared
    directory tasks use lies inside it; returns it. Files the master keeps there are 0600
    each (the SQLite database, the join token), so 0711 exposes none of them."""
    data_dir = config.resolved_data_dir.absolute()
    data_dir.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    inside = any(p.absolute().is_relative_to(data_dir) for p in shared_dirs(config))
    data_dir.chmod(TRAVERSABLE_DIR_MODE if inside else PRIVATE_DIR_MODE)
    return data_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="det-master", description="Run the Flotilla master.")
    parser.add_argument("--config", type=Path, help="master.yaml (default: built-in defaults)")
    parser.add_argument("--port", type=int, help="override the config's port")
    parser.add_argument("--host", help="override the config's bind address")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("port", args.port), ("host", args.host)) if v is not None}
    try:
        config = load_config(args.config, **overrides)
    except ConfigError as exc:
        print(f"det-master: {exc}", file=sys.stderr)
        sys.exit(2)
    secure_data_dir(config)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        log_level=config.log_level.lower(),
        ws_ping_interval=None,  # liveness is the agent protocol's own ping/pong
        access_log=config.log_level.upper() == "DEBUG",
        # Streams that never end by themselves (log follows, proxied notebooks and their
        # kernels' sockets) would hold a stop forever; after this, they are cut.
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
