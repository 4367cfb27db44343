"""The agent's CloudWatch shipping (``logging:`` in ``agent.yaml``).

The agent's Python logging goes to ``<stream_prefix>agent/<agent-id>`` through a spool under
``<work_dir>/.cloudwatch-spool`` (allocation directories never start with a dot), so lines
logged while CloudWatch or the network is down, or before a crash, are shipped later, by this
process or the next agent started with the same ``work_dir``.

Unless ``log_group`` is set, the group is ``/flotilla/<cluster-id>``; the agent asks the
master's ``/info`` for the id on its shipping thread, retrying until the master answers, and
spools meanwhile. The master creates the group; an agent creates it only if it is missing and
its IAM role allows it. Task output is not shipped from here: it reaches the master, which
ships it when ``ship_task_logs`` is on.
"""

from __future__ import annotations

import functools

import httpx

from agent.cloudwatch.client import ShipperError
from agent.cloudwatch.config import CloudWatchConfig
from agent.cloudwatch.handler import ProcessShipping, ship_process_logs
from agent.config import AgentConfig, ConfigError

SPOOL_DIR = ".cloudwatch-spool"
INFO_TIMEOUT = 10.0  # seconds for the master's /info


def start(config: AgentConfig) -> ProcessShipping | None:
    """Start shipping if ``config.logging`` asks for it; raises :class:`ConfigError` for a
    setting that cannot work."""
    settings = config.logging
    if settings is None:
        return None
    group = settings.log_group or functools.partial(group_from_master, config.master_url, settings)
    try:
        return ship_process_logs(
            settings,
            config.work_path / SPOOL_DIR,
            settings.agent_stream(config.agent_id),
            group,
            owns_group=False,
        )
    except ShipperError as e:
        raise ConfigError(str(e)) from None


def stop(shipping: ProcessShipping | None) -> None:
    if shipping is not None:
        shipping.stop()


def group_from_master(master_url: str, settings: CloudWatchConfig) -> str:
    """``/flotilla/<cluster-id>`` with the id from the master's ``/info``."""
    response = httpx.get(f"{master_url}/info", timeout=INFO_TIMEOUT)
    response.raise_for_status()
    return settings.group_name(str(response.json()["clusterId"]))
