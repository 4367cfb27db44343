"""``det deploy local cluster-up|cluster-down``: a master and agents as processes on this machine.

Determined's ``det deploy local`` runs Docker containers; Flotilla runs the ``det-master`` and
``det-agent`` programs directly, each in its own session (so its process group is exactly what
it spawned), with output in ``$FLOTILLA_HOME/local/logs``. Everything the cluster owns lives in
that state directory (default ``~/.flotilla/local``)::

    master.yaml        the generated master config (the join token is kept across restarts)
    cluster.json       pids, process start times and ports of what cluster-up started
    flotilla.db        the default SQLite database
    data/              the master's data_dir
    agents/<i>/        each agent's work dir
    logs/master.log, logs/agent-<i>.log

What holds secrets or other users' data is private: ``master.yaml`` (the join token),
``cluster.json`` and the logs are 0600, ``logs/`` is 0700; the state directory and ``agents/``
are 0711, so tasks running as their own uids can reach their work directories but list nothing.
The master makes ``data/`` and the database private itself.

``cluster-up`` with a ``cluster.json`` looks first at what became of the cluster
(:func:`cli.local_cluster.survey`): a running cluster is used as it is; a master restarted by hand
(a new pid answering on the port as the same cluster) is adopted; a crashed master whose agents
still run is started again on the saved ``master.yaml`` (same port, database, data dir, join
token) and the agents re-attach their running tasks, nothing killed; a master that runs but does
not answer, or another cluster on the port, is reported and ``cluster.json`` kept. Only when
nothing of the cluster runs or answers does cluster-up start afresh.

``cluster.json`` records each process's kernel start time next to its pid, and ``cluster-down``
signals a process group only while that pair still matches (see :mod:`cli.processes`). The join
token reaches agents through ``DET_AGENT_JOIN_TOKEN``, not argv, so ``ps`` does not show it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cli import progress
from cli.errors import CliError
from cli.local_cluster import ClusterState, Survey, master_identity, provisioned_agents, survey
from cli.parser import add_group, add_verb
from cli.processes import ProcessRecord, Started, log_tail, start_process, stop_all
from cli.session import flotilla_home
from harness.client import ClientError, MasterClient

if TYPE_CHECKING:
    from cli.parser import SubParsers

MASTER_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
MASTER_START_TIMEOUT_SECONDS = 60.0
AGENT_JOIN_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 15.0
POLL_SECONDS = 0.2
LOG_TAIL_LINES = 20
ADMIN_USER = "admin"
PRIVATE_FILE = 0o600
# (subdirectory of the state directory, mode); "" is the state directory itself.
_STATE_DIRS = (("", 0o711), ("logs", 0o700), ("data", 0o700), ("agents", 0o711))


def prepare_state_dir(state: Path) -> None:
    """Create the state directory and its subdirectories with their modes (see the module
    docstring), or bring existing ones to them."""
    for directory, mode in _STATE_DIRS:
        path = state / directory if directory else state
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        path.chmod(mode)


def private_log(path: Path) -> Path:
    """``path``, created (or made) readable by its owner only, for a process to append to."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE))
    path.chmod(PRIVATE_FILE)
    return path


def state_dir() -> Path:
    return flotilla_home() / "local"


def find_executable(name: str) -> str:
    """``name`` next to the running Python (the same venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise CliError(
        f"cannot find {name} next to {sys.executable} or on PATH; "
        "install Flotilla with the master and agent extras (pip install 'flotilla[all]')"
    )


def elastic_pool(args: argparse.Namespace) -> dict[str, Any]:
    """The default pool without ``--agents``: local agent processes launched with the queue."""
    return {
        "pool_name": "default",
        "provider": {
            "type": "local",
            "instance_slots": args.slots_per_agent,
            "min_instances": args.min_agents,
            "max_instances": args.max_agents,
            "max_idle_agent_period": args.max_idle_agent_period,
            "boot_hedge": 0,  # a local agent starts in under a second: nothing to race
            "provisioning_tick": "2s",
            "prices": {"local": args.agent_price_per_hour},
        },
    }


def master_config(
    state: Path,
    *,
    port: int,
    cluster_name: str,
    db_url: str | None,
    join_token: str,
    pool: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "port": port,
        "host": MASTER_HOST,
        "cluster_name": cluster_name,
        "data_dir": str(state / "data"),
        "db": {"url": db_url or default_db_url(state)},
        "agent_join_token": join_token,
        "resource_pools": [pool or {"pool_name": "default"}],
    }


def default_db_url(state: Path) -> str:
    return f"sqlite:///{state / 'flotilla.db'}"


def _existing_join_token(config_path: Path) -> str | None:
    try:
        token = (yaml.safe_load(config_path.read_text()) or {}).get("agent_join_token")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return token if isinstance(token, str) and token else None


def port_in_use(port: int, host: str = MASTER_HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _fail(message: str, record: ProcessRecord, started: list[ProcessRecord]) -> CliError:
    print(f"Last {LOG_TAIL_LINES} lines of {record.log}:", file=sys.stderr)
    print(log_tail(record.log, LOG_TAIL_LINES), file=sys.stderr)
    stop_all(started, STOP_GRACE_SECONDS)
    return CliError(message)


def _master_answers(url: str) -> bool:
    try:
        with MasterClient(url, timeout=2.0) as client:
            client.info()
        return True
    except ClientError:
        return False


def wait_for_master(url: str, started: Started, everything: list[ProcessRecord]) -> None:
    record, proc = started
    deadline = time.monotonic() + MASTER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _fail(
                f"the master exited during start-up (exit code {proc.returncode})",
                record,
                everything,
            )
        if _master_answers(url):
            return
        time.sleep(POLL_SECONDS)
    raise _fail(
        f"the master did not answer at {url} within {MASTER_START_TIMEOUT_SECONDS:.0f} s",
        record,
        everything,
    )


def wait_for_agents(
    url: str,
    agents: list[tuple[ProcessRecord, subprocess.Popen[bytes] | None]],
    started: list[ProcessRecord],
) -> int | None:
    """Wait until every agent is registered; return their total slots (None if not checked).
    An agent without a ``Popen`` (one a crashed master left running) is watched by its record."""
    password = os.environ.get("DET_PASS", "")
    client = MasterClient(url, timeout=5.0)
    try:
        client.token = client.login(ADMIN_USER, password).token
    except ClientError as e:
        print(
            f"Warning: could not log in as '{ADMIN_USER}' to check that agents joined ({e}); "
            "not waiting for them",
            file=sys.stderr,
        )
        client.close()
        return None
    wanted = {record.name for record, _ in agents}
    deadline = time.monotonic() + AGENT_JOIN_TIMEOUT_SECONDS
    with client:
        while True:
            for record, proc in agents:
                exited = proc.poll() is not None if proc else not record.alive()
                if exited:
                    code = f"exit code {proc.returncode}" if proc else "it is gone"
                    raise _fail(
                        f"agent {record.name} exited during start-up ({code})", record, started
                    )
            listed = client.get("/api/v1/agents").get("agents") or []
            joined = {os.path.basename(a.get("id", "")): a for a in listed}
            if wanted <= joined.keys():
                return sum(len(joined[name].get("slots") or {}) for name in wanted)
            if time.monotonic() >= deadline:
                missing = ", ".join(sorted(wanted - joined.keys()))
                first = next(r for r, _ in agents if r.name not in joined)
                raise _fail(f"agents did not join the master in time: {missing}", first, started)
            time.sleep(POLL_SECONDS)


def cluster_up(args: argparse.Namespace) -> int:
    elastic = args.agents is None
    if (args.agents or 0) < 0 or args.slots_per_agent < 1:
        raise CliError("--agents must not be negative and --slots-per-agent must be at least 1")
    if elastic and not 0 <= args.min_agents <= args.max_agents:
        raise CliError("need 0 <= --min-agents <= --max-agents")
    state = state_dir()
    state_file = state / "cluster.json"
    existing = ClusterState.load(state_file)
    if existing is not None:
        if (handled := _resume(args, existing, state)) is not None:
            return handled
        state_file.unlink(missing_ok=True)  # nothing of it runs or answers any more

    if args.port is None:
        args.port = DEFAULT_PORT
    if port_in_use(args.port):
        raise CliError(f"port {args.port} on {MASTER_HOST} is already in use; choose --port")
    master_bin, agent_bin = find_executable("det-master"), find_executable("det-agent")
    prepare_state_dir(state)
    config_path = state / "master.yaml"
    join_token = _existing_join_token(config_path) or secrets.token_urlsafe(32)
    config = master_config(
        state,
        port=args.port,
        cluster_name=args.cluster_name,
        db_url=args.db,
        join_token=join_token,
        pool=elastic_pool(args) if elastic else None,
    )
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    config_path.chmod(PRIVATE_FILE)

    url = f"http://{MASTER_HOST}:{args.port}"
    cluster = ClusterState(
        url=url,
        port=args.port,
        cluster_name=args.cluster_name,
        master=ProcessRecord("master", 0, ""),
        slots_per_agent=args.slots_per_agent,
        db_url=config["db"]["url"],
        no_gpu=args.no_gpu,
    )
    try:
        slots = _start_cluster(args, cluster, state, config_path, (master_bin, agent_bin))
    except BaseException:
        stop_all([r for r in cluster.processes() if r.pid and r.alive()], STOP_GRACE_SECONDS)
        state_file.unlink(missing_ok=True)
        raise
    if elastic:
        period = str(args.max_idle_agent_period).strip().lower()
        idle = (
            "idle agents are kept"
            if period == "off"
            else "idle agents stop at break-even (auto)"
            if period == "auto"
            else f"idle agents stop after {args.max_idle_agent_period}"
        )
        print(
            f"Cluster is up at {url} (elastic pool 'default': {args.min_agents} to "
            f"{args.max_agents} agents of {args.slots_per_agent} slot(s), launched with the "
            f"queue; {idle})"
        )
        print(f"Logs are in {state / 'logs'}")
        return 0
    if slots is None:
        slots = args.agents * args.slots_per_agent
    print(f"Cluster is up at {url} ({args.agents} agents, {slots} slots)")
    print(f"Logs are in {state / 'logs'}")
    return 0


def _start_master(cluster: ClusterState, state: Path, config_path: Path, master_bin: str) -> None:
    """Start the master on ``config_path``, record it (and, once it answers, the clusterId it
    answers with) in cluster.json."""
    state_file = state / "cluster.json"
    master = start_process(
        "master",
        [master_bin, "--config", str(config_path)],
        private_log(state / "logs" / "master.log"),
    )
    cluster.master = master[0]
    cluster.save(state_file)
    print(f"Starting the master at {cluster.url} ...", file=sys.stderr)
    with progress.waiting(f"Waiting for the master at {cluster.url}"):
        wait_for_master(cluster.url, master, [master[0]])
    cluster.cluster_id = master_identity(cluster.url) or ""
    cluster.save(state_file)


def _start_agent(
    cluster: ClusterState, state: Path, index: int, agent_bin: str, env: dict[str, str]
) -> Started:
    agent_id = f"local-agent-{index}"
    argv = [
        agent_bin,
        "--master-url",
        cluster.url,
        "--agent-id",
        agent_id,
        "--slots",
        str(cluster.slots_per_agent),
        "--work-dir",
        str(state / "agents" / str(index)),
    ]
    if cluster.no_gpu:
        argv.append("--no-gpu")
    log_path = private_log(state / "logs" / f"agent-{index}.log")
    return start_process(agent_id, argv, log_path, env=env)


def _start_cluster(
    args: argparse.Namespace,
    cluster: ClusterState,
    state: Path,
    config_path: Path,
    programs: tuple[str, str],
) -> int | None:
    """Start the master, then the agents, recording each in cluster.json as it starts."""
    state_file = state / "cluster.json"
    master_bin, agent_bin = programs
    _start_master(cluster, state, config_path, master_bin)
    agent_env = {**os.environ, "DET_AGENT_JOIN_TOKEN": _existing_join_token(config_path) or ""}
    agents: list[tuple[ProcessRecord, subprocess.Popen[bytes] | None]] = []
    for i in range(args.agents or 0):
        agents.append(_start_agent(cluster, state, i, agent_bin, agent_env))
        cluster.agents.append(agents[-1][0])
        cluster.save(state_file)
    if not agents:
        return 0
    print(f"Starting {len(agents)} agent(s) ...", file=sys.stderr)
    with progress.waiting(f"Waiting for {len(agents)} agent(s) to join"):
        return wait_for_agents(cluster.url, agents, cluster.processes())


def _resume(args: argparse.Namespace, cluster: ClusterState, state: Path) -> int | None:
    """cluster-up with a cluster.json: use what still runs (0), refuse with what was found
    (CliError, cluster.json kept), or None when nothing of the cluster is left."""
    found = survey(cluster, state)
    alive = found.master_alive or found.answering is not None or found.agents_alive
    if alive and args.port is not None and args.port != cluster.port:
        raise CliError(
            f"a local cluster is already running at {cluster.url}, not on port "
            f"{args.port}; use it (det -m {cluster.url} ...), or stop it first with: "
            "det deploy local cluster-down"
        )
    if found.master_alive:
        if found.answering is None:
            raise CliError(
                f"the local cluster's master (pid {cluster.master.pid}) is running but does not "
                f"answer at {cluster.url}; see {cluster.master.log}. Wait for it, or stop the "
                "cluster with: det deploy local cluster-down"
            )
        print(f"Cluster is already running at {cluster.url}")
        return 0
    if found.adoptable is not None:
        cluster.master = found.adoptable
        cluster.save(state / "cluster.json")
        print(
            f"Cluster is already running at {cluster.url} (its master was restarted by hand: "
            f"now pid {found.adoptable.pid}, recorded for cluster-down)"
        )
        return 0
    if found.stranger is not None:
        raise CliError(
            f"{cluster.url} answers as another cluster ({found.stranger}), not this local "
            f"cluster ({cluster.cluster_id or 'no id recorded'}); its master (pid "
            f"{cluster.master.pid}) is gone. {state / 'cluster.json'} is kept: stop what "
            f"listens on port {cluster.port}, then run cluster-up again"
        )
    if not found.agents_alive:
        return None
    return _restart_master(cluster, state, found)


def _restart_master(cluster: ClusterState, state: Path, found: Survey) -> int:
    """The master crashed and agents still run their tasks: start the master again with the
    cluster's saved master.yaml (same port, database, data dir, join token) and let the agents
    re-attach; static agents that died too are started again."""
    config_path = state / "master.yaml"
    if not config_path.is_file():
        raise CliError(
            f"the master of the local cluster at {cluster.url} is gone and its agents still "
            f"run, but {config_path} is missing, so it cannot be started with its settings; "
            "stop the agents with: det deploy local cluster-down"
        )
    if port_in_use(cluster.port):
        raise CliError(
            f"the master of the local cluster at {cluster.url} is gone and its agents still "
            f"run, but port {cluster.port} is taken by something that does not answer as a "
            f"master; free the port and run cluster-up again ({state / 'cluster.json'} is kept)"
        )
    master_bin, agent_bin = find_executable("det-master"), find_executable("det-agent")
    print(
        f"The master of the local cluster at {cluster.url} is gone; "
        f"{len(found.agents_alive)} agent(s) still run. Restarting the master with the "
        "cluster's saved settings ...",
        file=sys.stderr,
    )
    _start_master(cluster, state, config_path, master_bin)
    agent_env = {**os.environ, "DET_AGENT_JOIN_TOKEN": _existing_join_token(config_path) or ""}
    alive_names = {r.name for r in found.agents_alive}
    watched: list[tuple[ProcessRecord, subprocess.Popen[bytes] | None]] = []
    restarted = 0
    for i, record in enumerate(cluster.agents):
        if record.name in alive_names:
            watched.append((record, None))
        else:
            watched.append(_start_agent(cluster, state, i, agent_bin, agent_env))
            cluster.agents[i] = watched[-1][0]
            restarted += 1
        cluster.save(state / "cluster.json")
    if watched:
        with progress.waiting(f"Waiting for {len(watched)} agent(s) to re-attach"):
            wait_for_agents(cluster.url, watched, [])
    print(
        f"Cluster is up again at {cluster.url} (master restarted; "
        f"{len(found.agents_alive)} running agent(s) re-attached"
        + (f", {restarted} agent(s) started again" if restarted else "")
        + ")"
    )
    return 0


def cluster_down(args: argparse.Namespace) -> int:
    state = state_dir()
    state_file = state / "cluster.json"
    cluster = ClusterState.load(state_file)
    running: list[ProcessRecord] = []
    if cluster is not None:
        found = survey(cluster, state)
        if found.stranger is not None:
            print(
                f"Not stopping what answers at {cluster.url}: it is another cluster "
                f"({found.stranger})",
                file=sys.stderr,
            )
        running = [r for r in cluster.processes() if r.alive()]
        running += [r for r in provisioned_agents(state) if r.alive() and r not in running]
        if found.adoptable is not None:  # the master restarted by hand
            running.append(found.adoptable)
    if cluster is not None and running:
        stop_all(running, STOP_GRACE_SECONDS)
        print(f"Stopped the local cluster at {cluster.url}; logs kept in {state / 'logs'}")
    else:
        print("Local cluster: nothing to stop")
    state_file.unlink(missing_ok=True)
    if args.delete_db:
        db = state / "flotilla.db"
        if cluster is None or cluster.db_url in ("", default_db_url(state)):
            db.unlink(missing_ok=True)
            print(f"Deleted {db}")
        else:
            print(f"Not deleting {cluster.db_url}: only the default SQLite file is deleted")
    return 0


def register_kind(kinds: SubParsers) -> None:
    """``det deploy local …`` (the deploy group itself is made by :mod:`cli.deploy`)."""
    _, verbs = add_group(kinds, "local", "a cluster of processes on this machine")
    p = add_verb(verbs, "cluster-up", cluster_up, "create a local cluster")
    p.add_argument(
        "--agents",
        type=int,
        default=None,
        help="start this many agents now and keep them (a static pool); without it the pool "
        "is elastic: agents are launched with the queue and stopped when idle",
    )
    p.add_argument("--min-agents", type=int, default=0, help="elastic pool: fewest agents")
    p.add_argument("--max-agents", type=int, default=4, help="elastic pool: most agents")
    p.add_argument(
        "--max-idle-agent-period",
        default="1m",
        help="elastic pool: stop an agent idle this long (e.g. 30s, 5m), or auto (break-even)",
    )
    p.add_argument("--slots-per-agent", type=int, default=1, help="slots each agent offers")
    p.add_argument(
        "--agent-price-per-hour",
        type=float,
        default=0.0,
        help="elastic pool: what an agent costs in $/hour, for cost reports (default 0)",
    )
    p.add_argument("--no-gpu", action="store_true", help="agents use CPU slots even with GPUs")
    p.add_argument("--db", default=None, help="database URL (default: SQLite in the state dir)")
    p.add_argument(
        "--port",
        "--master-port",
        dest="port",
        type=int,
        default=None,
        help=f"master port (default {DEFAULT_PORT})",
    )
    p.add_argument("--cluster-name", default="flotilla", help="name reported by the master")
    p = add_verb(verbs, "cluster-down", cluster_down, "stop the local cluster")
    p.add_argument(
        "--delete-db", action="store_true", help="also delete the default SQLite database"
    )
