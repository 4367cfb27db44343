"""What a local cluster is made of, and how to tell what became of it since cluster-up ran.

``cluster.json`` (:class:`ClusterState`) names the processes ``det deploy local cluster-up``
started and the cluster's identity: the ``clusterId`` its master answered with on ``/info``
(kept in the master's database, so a master restarted on the same database answers with the same
id). Between two runs of ``det`` anything may have happened: the master crashed while its agents
kept running their tasks, or someone restarted the master by hand (a new pid on the same port).
:func:`survey` looks and says which, without changing anything; ``cluster-up`` and
``cluster-down`` act on what it found.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from cli.processes import ProcessRecord, _proc_start_time
from harness.client import ClientError, MasterClient

PRIVATE_FILE = 0o600
PROBE_TIMEOUT_SECONDS = 2.0


@dataclass
class ClusterState:
    """What ``cluster.json`` holds. ``cluster_id`` is empty in files written before it was kept
    (the master's command line, naming this state directory's ``master.yaml``, identifies it
    then); ``no_gpu`` says how the static agents were started, to start them again alike."""

    url: str
    port: int
    cluster_name: str
    master: ProcessRecord
    agents: list[ProcessRecord] = field(default_factory=list)
    slots_per_agent: int = 1
    db_url: str = ""
    cluster_id: str = ""
    no_gpu: bool = False

    @classmethod
    def load(cls, path: Path) -> ClusterState | None:
        try:
            raw = json.loads(path.read_text())
            raw["master"] = ProcessRecord(**raw["master"])
            raw["agents"] = [ProcessRecord(**a) for a in raw.get("agents", [])]
            return cls(**raw)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError):
            print(f"Ignoring unreadable {path}", file=sys.stderr)
            return None

    def save(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(self), indent=2) + "\n")
        path.chmod(PRIVATE_FILE)

    def processes(self) -> list[ProcessRecord]:
        return [*self.agents, self.master]


def provisioned_agents(state: Path) -> list[ProcessRecord]:
    """Agents the master's local provider launched (provisioner/local.py's state file, a JSON
    list of ``{id, pid, …}``); in their own sessions, they outlive the master."""
    records = []
    for path in sorted((state / "data" / "provisioner").glob("*/instances.json")):
        try:
            items = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        records += [ProcessRecord(item["id"], int(item["pid"]), "") for item in items]
    return records


def master_identity(url: str) -> str | None:
    """The ``clusterId`` of whatever answers ``/info`` at ``url`` ("" if it answers without
    one); None if nothing answers."""
    try:
        with MasterClient(url, timeout=PROBE_TIMEOUT_SECONDS) as client:
            info = client.info()
    except ClientError:
        return None
    return str(info.get("clusterId") or "") if isinstance(info, dict) else ""


def listening_pid(port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` of this machine (None if none is, or
    the kernel does not tell us whose it is)."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


@dataclass
class Survey:
    """What became of a recorded cluster. ``answering`` is the clusterId found on the cluster's
    port (None: nothing answers); ``stranger`` is set when that is another cluster;
    ``adoptable`` is the record of a master restarted by hand (a new pid answering as this
    cluster); ``agents_alive`` are the agents still running (static and provisioned)."""

    master_alive: bool
    answering: str | None
    agents_alive: list[ProcessRecord]
    adoptable: ProcessRecord | None = None
    stranger: str | None = None


def _ours(cluster: ClusterState, state: Path, found_id: str, pid: int | None) -> bool:
    if cluster.cluster_id:
        return found_id == cluster.cluster_id
    try:  # an older cluster.json: is it a master started on this state directory's config?
        cmdline = psutil.Process(pid).cmdline() if pid else []
    except psutil.Error:
        return False
    return str(state / "master.yaml") in cmdline


def survey(cluster: ClusterState, state: Path) -> Survey:
    agents = [r for r in [*cluster.agents, *provisioned_agents(state)] if r.alive()]
    found = Survey(cluster.master.alive(), master_identity(cluster.url), agents)
    if found.master_alive or found.answering is None:
        return found
    pid = listening_pid(cluster.port)
    if pid is not None and _ours(cluster, state, found.answering, pid):
        found.adoptable = ProcessRecord("master", pid, cluster.master.log, _proc_start_time(pid))
    else:
        found.stranger = found.answering or "(no clusterId)"
    return found
