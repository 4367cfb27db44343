"""``det deploy local`` with stand-in ``det-master``/``det-agent`` programs: real processes,
real process groups and signals, a real HTTP port; only the programs themselves are fakes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli import deploy_local, local_cluster
from tests.unit.test_cli_fake_master import (  # noqa: F401  (fixtures by name)
    Result,
    cli_env_fixture,
    det_fixture,
)

Det = Callable[..., Result]

FAKE_MASTER = """\
import argparse, json, os, sys, uuid, yaml
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
p = argparse.ArgumentParser(); p.add_argument("--config"); a = p.parse_args()
config = yaml.safe_load(open(a.config))
if config["cluster_name"] == "broken":
    print("fatal: the database is on fire", flush=True); sys.exit(3)
# The cluster's id lives in its data dir, as the real master's lives in its database.
os.makedirs(config["data_dir"], exist_ok=True)
id_file = os.path.join(config["data_dir"], "cluster_id")
if not os.path.exists(id_file):
    open(id_file, "w").write(str(uuid.uuid4()))
cluster_id = open(id_file).read()
agents = {}
class H(BaseHTTPRequestHandler):
    def reply(self, body):
        data = json.dumps(body).encode(); self.send_response(200)
        self.send_header("Content-Length", str(len(data))); self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        info = {"version": "0", "clusterId": cluster_id}
        self.reply(info if self.path == "/info" else {"agents": list(agents.values())})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)) or b"{}")
        if self.path == "/register":
            agents[body["id"]] = body
        self.reply({"token": "t", "user": {}})
    def log_message(self, *args): pass
print("master listening", flush=True)
ThreadingHTTPServer((config["host"], config["port"]), H).serve_forever()
"""

FAKE_AGENT = """\
import argparse, json, os, signal, time, urllib.request
p = argparse.ArgumentParser()
for f in ("--master-url", "--agent-id", "--work-dir"): p.add_argument(f)
p.add_argument("--slots", type=int); p.add_argument("--no-gpu", action="store_true")
a = p.parse_args()
if a.agent_id.endswith("-1"):  # the second agent is stubborn: it ignores SIGTERM
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
slots = {f"/agents/{a.agent_id}/slots/{i}": {"id": str(i)} for i in range(a.slots)}
token = os.environ["DET_AGENT_JOIN_TOKEN"]
body = json.dumps({"id": a.agent_id, "slots": slots, "token": token}).encode()
joined = False
while True:  # like the real agent, join again whenever the master comes back
    try:
        urllib.request.urlopen(urllib.request.Request(a.master_url + "/register", data=body))
        if not joined:
            print("agent joined", a.no_gpu, token, flush=True); joined = True
    except OSError:
        pass
    time.sleep(0.2)
"""


@pytest.fixture
def programs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = {}
    for name, source in (("det-master", FAKE_MASTER), ("det-agent", FAKE_AGENT)):
        path = tmp_path / "bin" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"#!{sys.executable}\n{source}")
        path.chmod(0o755)
        paths[name] = str(path)
    monkeypatch.setattr(deploy_local, "find_executable", paths.__getitem__)
    monkeypatch.setattr(deploy_local, "STOP_GRACE_SECONDS", 1.0)
    monkeypatch.delenv("DET_PASS", raising=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int) -> bool:
    return deploy_local.ProcessRecord("p", pid, "").alive()


@pytest.mark.usefixtures("programs")
def test_cluster_up_is_idempotent_and_cluster_down_stops_exactly_its_processes(
    det: Det, cli_env: Path
) -> None:
    port = free_port()
    state = cli_env / "local"
    up = det(
        "deploy",
        "local",
        "cluster-up",
        "--agents",
        "2",
        "--slots-per-agent",
        "3",
        "--port",
        str(port),
        "--no-gpu",
    )
    assert up.code == 0, up.err
    assert up.out.splitlines() == [
        f"Cluster is up at http://127.0.0.1:{port} (2 agents, 6 slots)",
        f"Logs are in {state / 'logs'}",
    ]
    config = yaml.safe_load((state / "master.yaml").read_text())
    assert config["port"] == port and config["host"] == "127.0.0.1"
    assert config["db"] == {"url": f"sqlite:///{state / 'flotilla.db'}"}
    assert config["resource_pools"] == [{"pool_name": "default"}]
    assert len(config["agent_join_token"]) >= 40
    assert (state / "master.yaml").stat().st_mode & 0o777 == 0o600
    agent_log = (state / "logs" / "agent-0.log").read_text()
    assert f"agent joined True {config['agent_join_token']}" in agent_log
    recorded = json.loads((state / "cluster.json").read_text())
    pids = [recorded["master"]["pid"]] + [a["pid"] for a in recorded["agents"]]
    assert [a["name"] for a in recorded["agents"]] == ["local-agent-0", "local-agent-1"]
    assert all(alive(pid) for pid in pids)

    again = det("deploy", "local", "cluster-up", "--port", str(port))
    assert (again.code, again.out) == (
        0,
        f"Cluster is already running at http://127.0.0.1:{port}\n",
    )
    assert det("deploy", "local", "cluster-up").out == (
        f"Cluster is already running at http://127.0.0.1:{port}\n"
    )
    elsewhere = det("deploy", "local", "cluster-up", "--port", str(port + 1))
    assert (elsewhere.code, elsewhere.out) == (1, "")
    assert elsewhere.err == (
        f"a local cluster is already running at http://127.0.0.1:{port}, not on port "
        f"{port + 1}; use it (det -m http://127.0.0.1:{port} ...), or stop it first with: "
        "det deploy local cluster-down\n"
    )

    down = det("deploy", "local", "cluster-down")
    assert down.code == 0 and "Stopped the local cluster" in down.out
    assert "local-agent-1" in down.err  # the stubborn agent was SIGKILLed after the grace period
    assert not any(alive(pid) for pid in pids)
    assert not (state / "cluster.json").exists()
    assert (state / "logs" / "master.log").exists()

    assert det("deploy", "local", "cluster-down").out == "Local cluster: nothing to stop\n"

    token = config["agent_join_token"]
    assert det("deploy", "local", "cluster-up", "--agents", "0", "--port", str(port)).code == 0
    assert yaml.safe_load((state / "master.yaml").read_text())["agent_join_token"] == token
    assert det("deploy", "local", "cluster-down").code == 0


@pytest.mark.usefixtures("programs")
def test_master_dying_on_start_prints_its_log_tail(det: Det, cli_env: Path) -> None:
    result = det(
        "deploy", "local", "cluster-up", "--cluster-name", "broken", "--port", str(free_port())
    )
    assert result.code == 1
    assert "fatal: the database is on fire" in result.err
    assert result.err.rstrip().endswith("the master exited during start-up (exit code 3)")
    assert not (cli_env / "local" / "cluster.json").exists()


@pytest.mark.usefixtures("programs")
def test_port_in_use_is_refused_before_starting_anything(det: Det, cli_env: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = det("deploy", "local", "cluster-up", "--port", str(port))
    assert result.code == 1
    assert result.err == f"port {port} on 127.0.0.1 is already in use; choose --port\n"


def test_a_recycled_pid_is_not_ours() -> None:
    record = deploy_local.ProcessRecord("x", os.getpid(), "", start_time="1")
    assert not record.alive()
    assert deploy_local.ProcessRecord("x", os.getpid(), "").alive()


def test_stale_state_is_cleared_by_cluster_down(det: Det, cli_env: Path) -> None:
    state = cli_env / "local"
    state.mkdir(parents=True)
    dead = {"name": "master", "pid": 2**22 + 12345, "log": "", "start_time": None}
    (state / "cluster.json").write_text(
        json.dumps({"url": "http://127.0.0.1:1", "port": 1, "cluster_name": "x", "master": dead})
    )
    assert det("deploy", "local", "cluster-down").out == "Local cluster: nothing to stop\n"
    assert not (state / "cluster.json").exists()


def _up(det: Det, port: int, agents: int = 2) -> dict[str, Any]:
    result = det(
        "deploy", "local", "cluster-up", "--agents", str(agents), "--port", str(port), "--no-gpu"
    )
    assert result.code == 0, result.err
    recorded: dict[str, Any] = json.loads(
        (Path(os.environ["FLOTILLA_HOME"]) / "local" / "cluster.json").read_text()
    )
    return recorded


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def _by_hand(cli_env: Path, config: Path) -> subprocess.Popen[bytes]:
    """A master started by hand on ``config`` (not by cluster-up), answering on its port."""
    master = deploy_local.find_executable("det-master")
    proc = subprocess.Popen([master, "--config", str(config)], start_new_session=True)
    url = f"http://127.0.0.1:{yaml.safe_load(config.read_text())['port']}"
    deadline = time.monotonic() + 10
    while local_cluster.master_identity(url) is None:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc


@pytest.mark.usefixtures("programs")
def test_cluster_up_after_a_master_crash_restarts_it_and_keeps_the_running_agents(
    det: Det, cli_env: Path
) -> None:
    port = free_port()
    state = cli_env / "local"
    before = _up(det, port)
    config = (state / "master.yaml").read_text()
    survivor, dead = before["agents"][1]["pid"], before["agents"][0]["pid"]
    _kill(before["master"]["pid"])
    _kill(dead)  # this agent crashed too: it is started again with the saved settings

    up = det("deploy", "local", "cluster-up", "--agents", "5", "--slots-per-agent", "9")
    assert up.code == 0, up.err
    assert up.out == (
        f"Cluster is up again at http://127.0.0.1:{port} (master restarted; "
        "1 running agent(s) re-attached, 1 agent(s) started again)\n"
    )
    assert "1 agent(s) still run. Restarting the master with the cluster's saved" in up.err
    after = json.loads((state / "cluster.json").read_text())
    assert after["port"] == port and after["cluster_id"] == before["cluster_id"] != ""
    assert after["master"]["pid"] != before["master"]["pid"] and alive(after["master"]["pid"])
    assert after["agents"][1]["pid"] == survivor and alive(survivor)  # nothing killed
    assert after["agents"][0]["pid"] != dead and alive(after["agents"][0]["pid"])
    assert (state / "master.yaml").read_text() == config  # same port, database, token
    assert "agent joined True" in (state / "logs" / "agent-0.log").read_text()

    assert det("deploy", "local", "cluster-down").code == 0
    pids = [after["master"]["pid"]] + [a["pid"] for a in after["agents"]]
    assert not any(alive(pid) for pid in pids)


@pytest.mark.usefixtures("programs")
def test_a_master_restarted_by_hand_is_adopted_and_stopped_by_cluster_down(
    det: Det, cli_env: Path
) -> None:
    port = free_port()
    state = cli_env / "local"
    before = _up(det, port, agents=1)
    _kill(before["master"]["pid"])
    by_hand = _by_hand(cli_env, state / "master.yaml")

    up = det("deploy", "local", "cluster-up")
    assert up.code == 0, up.err
    assert up.out == (
        f"Cluster is already running at http://127.0.0.1:{port} (its master was restarted by "
        f"hand: now pid {by_hand.pid}, recorded for cluster-down)\n"
    )
    assert json.loads((state / "cluster.json").read_text())["master"]["pid"] == by_hand.pid
    assert alive(before["agents"][0]["pid"])

    assert det("deploy", "local", "cluster-down").code == 0
    assert by_hand.wait(5) is not None
    assert not alive(before["agents"][0]["pid"])


@pytest.mark.usefixtures("programs")
def test_a_hand_restart_is_stopped_by_cluster_down_even_before_cluster_up_adopts_it(
    det: Det, cli_env: Path
) -> None:
    before = _up(det, free_port(), agents=0)
    _kill(before["master"]["pid"])
    by_hand = _by_hand(cli_env, cli_env / "local" / "master.yaml")
    down = det("deploy", "local", "cluster-down")
    assert down.code == 0 and "Stopped the local cluster" in down.out
    assert by_hand.wait(5) is not None


@pytest.mark.usefixtures("programs")
def test_another_cluster_on_the_port_is_named_and_cluster_json_is_kept(
    det: Det, cli_env: Path, tmp_path: Path
) -> None:
    port = free_port()
    state = cli_env / "local"
    before = _up(det, port, agents=0)
    _kill(before["master"]["pid"])
    other = tmp_path / "other.yaml"
    other_config = yaml.safe_load((state / "master.yaml").read_text())
    other.write_text(yaml.safe_dump({**other_config, "data_dir": str(tmp_path / "other-data")}))
    stranger = _by_hand(cli_env, other)
    try:
        up = det("deploy", "local", "cluster-up")
        assert up.code == 1
        assert f"http://127.0.0.1:{port} answers as another cluster (" in up.err
        assert f"not this local cluster ({before['cluster_id']})" in up.err
        assert (state / "cluster.json").exists()
        down = det("deploy", "local", "cluster-down")
        assert "Not stopping what answers at" in down.err
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait(5)


@pytest.mark.usefixtures("programs")
def test_a_master_that_runs_but_does_not_answer_is_reported_not_forgotten(
    det: Det, cli_env: Path
) -> None:
    state = cli_env / "local"
    before = _up(det, free_port(), agents=1)
    master = before["master"]["pid"]
    os.kill(master, signal.SIGSTOP)  # alive, but answers nothing
    try:
        up = det("deploy", "local", "cluster-up")
    finally:
        os.kill(master, signal.SIGCONT)
    assert up.code == 1
    assert f"the local cluster's master (pid {master}) is running but does not answer" in up.err
    assert json.loads((state / "cluster.json").read_text()) == before
    assert alive(master) and alive(before["agents"][0]["pid"])
    assert det("deploy", "local", "cluster-down").code == 0
