"""The chaos suite's cluster: a real master, real agents, the slow trial of ``trial/``, and what
the trial did compared with what the master stored.

Timings are short so an outage is felt in seconds: the master pings each agent every second and
counts it lost after 3 s of silence, waits 10 s for it to come back (``agent_reconnect_wait``),
and agents retry the master at least every second. The trial keeps a journal, a file per run
in a directory every uid may write (tasks run as their own uids), with every line it printed:
the witness the stored metrics, checkpoints and logs are compared with.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from cli.context import pack_context
from tests.integration.cluster import Agent, Api, Master, wait_for

TRIAL_DIR = Path(__file__).resolve().parent / "trial"
MASTER_SETTINGS = {
    "agent_ping_interval": "1s",
    "agent_ping_timeout": "3s",
    "agent_reconnect_wait": "10s",
}
AGENT_ENV = {"DET_AGENT_RECONNECT_MAX_BACKOFF": "1"}
STEP_SECONDS = 0.5
TERMINAL = {"STATE_COMPLETED", "STATE_CANCELED", "STATE_ERROR"}


@dataclass
class Journal:
    """What the trial printed, per trial run id (read from its journal files)."""

    lines: dict[str, list[str]]

    def steps(self, run: str) -> list[int]:
        return [int(line.split()[2]) for line in self.lines[run] if line.startswith("chaos step")]

    def checkpoints(self) -> dict[str, int]:
        """uuid → step of every checkpoint any run saved."""
        return {
            words[2]: int(words[4])
            for lines in self.lines.values()
            for words in (line.split() for line in lines)
            if words[:2] == ["chaos", "checkpoint"]
        }

    def all_lines(self) -> list[str]:
        return [line for run in sorted(self.lines) for line in self.lines[run]]


@dataclass
class ChaosCluster:
    tmp_path: Path
    master: Master
    agents: list[Agent] = field(default_factory=list)
    journal_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.journal_dir = self.tmp_path / "journal"
        self.journal_dir.mkdir(exist_ok=True)
        self.journal_dir.chmod(0o777)  # tasks run as other uids

    @property
    def logs(self) -> list[Path]:
        return [self.master.log_path, *(a.log_path for a in self.agents)]

    def api(self) -> Api:
        return Api(self.master)

    def add_agent(self, agent_id: str, master_url: str | None = None) -> Agent:
        agent = Agent(self.tmp_path, self.master, agent_id)
        if master_url is not None:  # e.g. through a TcpProxy
            agent.argv[agent.argv.index("--master-url") + 1] = master_url
        agent.env = {**(agent.env or {}), **AGENT_ENV}
        agent.start()
        self.agents.append(agent)
        api = self.api()
        wait_for(f"agent {agent_id} to join", lambda: agent_id in api.agents(), logs=self.logs)
        return agent

    def submit(self, steps: int, checkpoint_every: int, max_restarts: int = 0) -> int:
        """Create the chaos experiment; returns its trial's id once it trains."""
        config = {
            "name": "chaos",
            "entrypoint": "python3 train.py",
            "hyperparameters": {
                "steps": steps,
                "step_seconds": STEP_SECONDS,
                "checkpoint_every": checkpoint_every,
                "journal": str(self.journal_dir),
            },
            "searcher": {
                "name": "single",
                "metric": "validation_loss",
                "smaller_is_better": True,
                "max_length": {"batches": steps},
            },
            "max_restarts": max_restarts,
        }
        body = {"config": yaml.safe_dump(config), "modelDefinition": pack_context(TRIAL_DIR)}
        api = self.api()
        response = api.post("/api/v1/experiments", json={**body, "activate": True})
        assert response.status_code == 200, response.text
        experiment_id = response.json()["experiment"]["id"]

        def trial_id() -> int | None:
            found = api.get(f"/api/v1/experiments/{experiment_id}/trials").json()["trials"]
            return int(found[0]["id"]) if found else None

        found: int = wait_for("the trial to be created", trial_id, logs=self.logs)
        return found

    def trial(self, trial_id: int) -> dict[str, Any]:
        found: dict[str, Any] = self.api().get(f"/api/v1/trials/{trial_id}").json()["trial"]
        return found

    def wait_step(self, run: str, step: int, timeout: float = 90.0) -> None:
        """Until the trial's run ``run`` has printed step ``step`` (its journal says so)."""
        wait_for(
            f"run {run} of the trial to reach step {step}",
            lambda: step in self.journal().steps(run) if run in self.journal().lines else False,
            timeout,
            logs=self.logs,
        )

    def wait_ended(self, trial_id: int, timeout: float) -> dict[str, Any]:
        ended: dict[str, Any] = wait_for(
            f"trial {trial_id} to end",
            lambda: (t := self.trial(trial_id))["state"] in TERMINAL and t,
            timeout,
            logs=self.logs,
        )
        return ended

    def journal(self) -> Journal:
        return Journal(
            {
                path.stem: path.read_text().splitlines()
                for path in sorted(self.journal_dir.glob("*.txt"))
            }
        )

    def stored_steps(self, trial_id: int, group: str = "training") -> list[int]:
        rows = self.api().get(f"/api/v1/trials/{trial_id}/metrics", params={"group": group})
        return [int(r["stepsCompleted"]) for r in rows.json()["metrics"]]

    def stored_checkpoints(self, trial_id: int) -> dict[str, int]:
        """uuid → step of every checkpoint the master registered (those its GC deleted after
        the experiment ended included: they were registered)."""
        rows = self.api().get(f"/api/v1/trials/{trial_id}/checkpoints").json()["checkpoints"]
        return {c["uuid"]: int(c["metadata"]["steps_completed"]) for c in rows}

    def stored_chaos_lines(self, trial_id: int) -> list[str]:
        import json

        with self.api().http.stream("GET", f"/api/v1/trials/{trial_id}/logs") as response:
            entries = [json.loads(line)["result"] for line in response.iter_lines() if line]
        return [e["message"].rstrip("\n") for e in entries if e["message"].startswith("chaos ")]

    def allocations(self, task_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api().task(task_id)["allocations"]
        return found

    def restart_master(self, after: float) -> None:
        import time

        self.master.kill()
        time.sleep(after)
        self.master.start()

    def assert_nothing_lost_or_doubled(self, trial_id: int, steps: int) -> None:
        """One run trained every step once: each step's metrics stored once, every checkpoint
        registered, every line the trial printed stored once."""
        journal = self.journal()
        assert len(journal.lines) == 1, f"runs in the journal: {list(journal.lines)}"
        (run,) = journal.lines
        assert journal.steps(run) == list(range(1, steps + 1))
        stored = self.stored_steps(trial_id)
        doubled = sorted(s for s, n in Counter(stored).items() if n > 1)
        missing = sorted(set(range(1, steps + 1)) - set(stored))
        assert (doubled, missing) == ([], []), "metrics doubled, missing"
        assert sorted(stored) == list(range(1, steps + 1))
        assert self.stored_checkpoints(trial_id) == journal.checkpoints()
        stored_lines, printed = (
            Counter(self.stored_chaos_lines(trial_id)),
            Counter(journal.all_lines()),
        )
        missing_lines = sorted((printed - stored_lines).elements())
        doubled_lines = sorted((stored_lines - printed).elements())
        assert (missing_lines, doubled_lines) == ([], []), "log lines missing, doubled"

    def close(self) -> None:
        for agent in self.agents:
            kill_tree(agent)
        self.master.stop()


def kill_tree(agent: Agent) -> None:
    """SIGKILL an agent and every process under it at once: the machine is gone."""
    if agent.proc is None or agent.proc.poll() is not None:
        return
    try:
        everything = [psutil.Process(agent.proc.pid)]
        everything += everything[0].children(recursive=True)
    except psutil.Error:
        everything = []
    for proc in everything:
        with contextlib.suppress(psutil.Error):
            os.kill(proc.pid, signal.SIGKILL)
    agent.proc.wait(5)


@contextlib.contextmanager
def chaos_cluster(tmp_path: Path, db_url: str, **settings: Any) -> Iterator[ChaosCluster]:
    master = Master(tmp_path, db_url, **{**MASTER_SETTINGS, **settings})
    master.start()
    cluster = ChaosCluster(tmp_path, master)
    try:
        yield cluster
    finally:
        cluster.close()
