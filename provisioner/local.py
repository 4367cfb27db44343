"""The ``local`` provider: each instance is a ``det-agent`` process on this machine.

It is the embedded default (``det deploy local``) and how the whole provisioning loop is tested
end to end without a cloud. An instance id doubles as its agent id, exactly as on AWS (where the
agent reports the EC2 instance id). Launched processes run in their own session so they outlive
a master restart; a state file in ``state_dir`` lets the next master adopt them. Instances are
free unless ``prices["local"]`` says otherwise, so cost reports still have a figure to show.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from provisioner.config import ProviderConfig
from provisioner.types import (
    Instance,
    InstanceState,
    LaunchedInstance,
    Market,
    Offer,
    TerminateResult,
)

INSTANCE_TYPE = "local"
STATE_FILE = "instances.json"
TERMINATE_GRACE_SECONDS = 15.0


@dataclass
class _Process:
    id: str
    pid: int
    slots: int
    launched_at: datetime
    started: float | None = None  # when pid started (psutil): tells a reused pid apart


def _started(pid: int) -> float | None:
    """When ``pid`` started, in seconds since the epoch; None if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone: reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


def _agent_binary() -> str:
    beside = Path(sys.executable).with_name("det-agent")
    if beside.exists():
        return str(beside)
    found = shutil.which("det-agent")
    if found is None:
        raise FileNotFoundError("det-agent is neither beside this Python nor on PATH")
    return found


class LocalProvider:
    """Agent processes for one pool. Thread-safe: the loop calls it from worker threads."""

    def __init__(
        self,
        config: ProviderConfig,
        pool: str,
        master_url: str,
        join_token: str,
        state_dir: Path,
    ) -> None:
        self.config = config
        self.pool = pool
        self.master_url = master_url
        self.join_token = join_token
        self.state_dir = state_dir
        self.slots = config.instance_slots or 1
        self._lock = threading.Lock()
        self._processes: dict[str, _Process] = {}
        self._tokens: dict[str, list[str]] = {}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._load()

    # ---- state file -------------------------------------------------------------------------

    def _load(self) -> None:
        path = self.state_dir / STATE_FILE
        if not path.exists():
            return
        for item in json.loads(path.read_text()):
            process = _Process(
                item["id"],
                item["pid"],
                item["slots"],
                datetime.fromisoformat(item["launched_at"]),
                item.get("started"),
            )
            # Adopt only the very process we launched, never another that reuses its pid.
            if _alive(process.pid) and _started(process.pid) == process.started:
                self._processes[process.id] = process

    def _save(self) -> None:
        items = [
            {
                "id": p.id,
                "pid": p.pid,
                "slots": p.slots,
                "launched_at": p.launched_at.isoformat(),
                "started": p.started,
            }
            for p in self._processes.values()
        ]
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(items))
        tmp.replace(self.state_dir / STATE_FILE)

    # ---- Provider -------------------------------------------------------------------------

    def offers(self) -> list[Offer]:
        price = self.config.prices.get(INSTANCE_TYPE, 0.0)
        return [Offer(INSTANCE_TYPE, None, Market.ON_DEMAND, price, self.slots)]

    def list_instances(self) -> list[Instance]:
        price = self.config.prices.get(INSTANCE_TYPE, 0.0)
        with self._lock:
            gone = [i for i, p in self._processes.items() if not _alive(p.pid)]
            for instance_id in gone:
                del self._processes[instance_id]
            if gone:
                self._save()
            return [
                Instance(
                    id=p.id,
                    instance_type=INSTANCE_TYPE,
                    zone=None,
                    market=Market.ON_DEMAND,
                    price_per_hour=price,
                    slots=p.slots,
                    state=InstanceState.RUNNING,
                    launched_at=p.launched_at,
                    agent_id=p.id,
                )
                for p in self._processes.values()
            ]

    def launch(self, offer: Offer, count: int, client_token: str) -> list[LaunchedInstance]:
        with self._lock:
            if client_token in self._tokens:  # a retried call: the first one's instances
                return [
                    LaunchedInstance(i, offer, self._processes[i].launched_at)
                    for i in self._tokens[client_token]
                    if i in self._processes
                ]
            launched = [self._spawn(offer) for _ in range(count)]
            self._tokens[client_token] = [i.id for i in launched]
            self._save()
            return launched

    def _spawn(self, offer: Offer) -> LaunchedInstance:
        instance_id = f"{self.pool}-{uuid.uuid4().hex[:8]}"
        work_dir = self.state_dir / instance_id
        work_dir.mkdir(parents=True, exist_ok=True)
        log = (self.state_dir / f"{instance_id}.log").open("ab")
        argv = [
            _agent_binary(),
            "--master-url", self.master_url,
            "--agent-id", instance_id,
            "--resource-pool", self.pool,
            "--slots", str(offer.slots),
            "--no-gpu",
            "--work-dir", str(work_dir),
        ]  # fmt: skip
        env = {**os.environ, "DET_AGENT_JOIN_TOKEN": self.join_token}
        if self.config.startup_script:  # run on "boot", before the agent, as on a cloud instance
            script = f'{self.config.startup_script}\nexec "$@"'
            argv = ["/bin/sh", "-c", script, "startup", *argv]
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        log.close()
        now = datetime.now(UTC)
        self._processes[instance_id] = _Process(
            instance_id, process.pid, offer.slots, now, _started(process.pid)
        )
        return LaunchedInstance(instance_id, offer, now)

    def terminate(self, instance_ids: list[str]) -> list[TerminateResult]:
        results = []
        with self._lock:
            for instance_id in instance_ids:
                process = self._processes.pop(instance_id, None)
                if process is None:
                    results.append(TerminateResult(instance_id, True, "already gone"))
                    continue
                results.append(_stop(process))
            self._save()
        return results

    def terminate_all(self) -> None:
        """Stop every agent this pool launched (``det deploy local cluster-down``)."""
        self.terminate(list(self._processes))


def _stop(process: _Process) -> TerminateResult:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return TerminateResult(process.id, True, "already gone")
    deadline = datetime.now(UTC).timestamp() + TERMINATE_GRACE_SECONDS
    while _alive(process.pid) and datetime.now(UTC).timestamp() < deadline:
        threading.Event().wait(0.1)
    if _alive(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return TerminateResult(process.id, True, "")
