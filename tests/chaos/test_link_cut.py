"""The link between an agent and the master cut and restored within ``agent_reconnect_wait``:
nothing restarts. The agent reaches the master through a :class:`TcpProxy` the test cuts (every
connection dropped, new ones refused) for longer than the master's ping timeout, so both sides
notice, and shorter than ``agent_reconnect_wait``. The trial itself talks to the master
directly, as a task on another machine would if only its agent's route had failed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.cluster import MASTER_SETTINGS, ChaosCluster, chaos_cluster
from tests.chaos.tcp_proxy import TcpProxy

STEPS = 30
CHECKPOINT_EVERY = 10
CUT_SECONDS = 6.0  # > agent_ping_timeout (3 s), < agent_reconnect_wait (10 s)


@pytest.fixture
def proxied(tmp_path: Path, db_url: str) -> Iterator[tuple[ChaosCluster, TcpProxy]]:
    with chaos_cluster(tmp_path, db_url) as cluster, TcpProxy(cluster.master.port) as proxy:
        cluster.add_agent("agent-0", master_url=proxy.url)
        yield cluster, proxy


@pytest.mark.timeout(180)
def test_a_link_cut_shorter_than_the_reconnect_wait_restarts_nothing(
    proxied: tuple[ChaosCluster, TcpProxy],
) -> None:
    assert MASTER_SETTINGS["agent_reconnect_wait"] == "10s"
    cluster, proxy = proxied
    trial_id = cluster.submit(STEPS, CHECKPOINT_EVERY)
    cluster.wait_step("1", 6)
    (allocation,) = cluster.allocations(cluster.trial(trial_id)["taskId"])
    connections = proxy.connections_made

    proxy.cut()
    time.sleep(CUT_SECONDS)
    proxy.restore()

    trial = cluster.wait_ended(trial_id, timeout=STEPS * 0.5 + 60)
    assert trial["state"] == "STATE_COMPLETED", trial["stateReason"]
    assert trial["restarts"] == 0
    (after,) = cluster.allocations(trial["taskId"])
    assert after["allocationId"] == allocation["allocationId"]
    assert proxy.connections_made > connections, "the agent never reconnected through the proxy"
    master_log = cluster.master.log_path.read_text()
    assert "agent agent-0 disconnected" in master_log, "the master never noticed the cut"
    cluster.assert_nothing_lost_or_doubled(trial_id, STEPS)
