"""``det-master``: read the config, migrate the database, serve."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from master.app import create_app
from master.config import ConfigError, load_config


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
    )


if __name__ == "__main__":
    main()
