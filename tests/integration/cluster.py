"""Real processes for integration tests: a master (uvicorn on a free loopback port) and agents.

Everything binds 127.0.0.1 and is stopped by the test that started it. Logs land in the test's
temporary directory and are printed when a wait times out, so a failure says what happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

BIN = Path(sys.executable).parent
JOIN_TOKEN = "test-join-token"
ISOLATION = "uid" if os.geteuid() == 0 else "auto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 30.0, logs: list[Path] | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except AssertionError as exc:  # the thing we wait for is gone for good
            last_error = exc
            break
        except Exception as exc:  # the thing we wait for may not answer yet
            last_error = exc
        time.sleep(0.1)
    tails = "".join(
        f"\n--- {p.name} ---\n" + "\n".join(p.read_text().splitlines()[-30:])
        for p in logs or []
        if p.exists()
    )
    raise AssertionError(f"timed out waiting for {what} (last error: {last_error}){tails}")


class Process:
    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(self.env or {})},
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL the process alone (not its group), like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Master(Process):
    def __init__(
        self, workdir: Path, db_url: str, env: dict[str, str] | None = None, **config: Any
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "master.yaml"
        settings = {
            "host": "127.0.0.1",
            "port": self.port,
            "data_dir": str(workdir / "master-data"),
            "db": {"url": db_url},
            "agent_join_token": JOIN_TOKEN,
            "agent_ping_interval": "1s",
            "agent_ping_timeout": "5s",
            "agent_reconnect_wait": "5s",
            **config,
        }
        self.config_path.write_text(yaml.safe_dump(settings))
        super().__init__(
            [str(BIN / "det-master"), "--config", str(self.config_path)],
            workdir / "master.log",
            env,
        )

    def start(self) -> None:
        super().start()
        wait_for("the master to answer /info", self.answers, logs=[self.log_path])

    def restart_patiently(self, reconnect_wait: str = "30s") -> None:
        """Stop and start again, giving agents ``reconnect_wait`` to come back: on a loaded
        machine (the suite runs in parallel) an agent's reconnect backoff can outlast 5 s."""
        self.stop()
        settings = yaml.safe_load(self.config_path.read_text())
        settings["agent_reconnect_wait"] = reconnect_wait
        self.config_path.write_text(yaml.safe_dump(settings))
        self.start()

    def answers(self) -> bool:
        if not self.alive():
            raise AssertionError(f"the master exited with code {self.proc and self.proc.poll()}")
        return httpx.get(f"{self.url}/info", timeout=1).status_code == 200


def kill_provisioned_agents(workdir: Path) -> None:
    """SIGKILL the agent processes a master's local provider launched (they run in their own
    sessions and would outlive the test). Reads provisioner/local.py's state files."""
    import json

    for path in (workdir / "master-data" / "provisioner").glob("*/instances.json"):
        for item in json.loads(path.read_text()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(item["pid"]), signal.SIGKILL)


class Agent(Process):
    """A ``det-agent``. Every task runs as its own uid (``--isolation uid``), so the whole
    integration suite runs isolated; that needs root, as the tests do in CI (otherwise the
    agent runs tasks unisolated). ``flags`` add or override command-line flags."""

    def __init__(
        self, workdir: Path, master: Master, agent_id: str, slots: int = 1, **flags: str
    ) -> None:
        self.id = agent_id
        flags = {"isolation": ISOLATION, **flags}
        argv = [
            str(BIN / "det-agent"),
            "--master-url",
            master.url,
            "--agent-id",
            agent_id,
            "--slots",
            str(slots),
            "--no-gpu",
            "--work-dir",
            str(workdir / f"agent-{agent_id}"),
        ]
        for flag, value in flags.items():
            argv += [f"--{flag.replace('_', '-')}", value]
        self.work_dir = workdir / f"agent-{agent_id}"
        # The join token goes in the environment, as in production: argv is world-readable.
        super().__init__(
            argv, workdir / f"agent-{agent_id}.log", env={"DET_AGENT_JOIN_TOKEN": JOIN_TOKEN}
        )


class Api:
    """An authenticated httpx client for one user."""

    def __init__(self, master: Master, username: str = "admin", password: str = "") -> None:
        self.master = master
        self.http = httpx.Client(base_url=master.url, timeout=30)
        self.token = ""
        if username:
            response = self.http.post(
                "/api/v1/auth/login", json={"username": username, "password": password}
            )
            response.raise_for_status()
            self.token = response.json()["token"]
            self.http.headers["Authorization"] = f"Bearer {self.token}"

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.patch(path, **kwargs)

    def agents(self) -> dict[str, Any]:
        return {a["id"]: a for a in self.get("/api/v1/agents").json()["agents"]}

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.get(f"/api/v1/tasks/{task_id}")
        response.raise_for_status()
        task: dict[str, Any] = response.json()["task"]
        return task

    def run(self, entrypoint: str | list[str], **resources: Any) -> str:
        config: dict[str, Any] = {"entrypoint": entrypoint}
        if resources:
            config["resources"] = resources
        response = self.post("/api/v1/commands", json={"config": config})
        assert response.status_code == 200, response.text
        command_id: str = response.json()["command"]["id"]
        return command_id

    def wait_ended(self, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
        task: dict[str, Any] = wait_for(
            f"task {task_id} to end",
            lambda: (t := self.task(task_id))["endTime"] and t,
            timeout,
            logs=[self.master.log_path],
        )
        return task

    def logs(self, task_id: str, follow: bool = False) -> list[dict[str, Any]]:
        import json

        with self.http.stream(
            "GET", f"/api/v1/tasks/{task_id}/logs", params={"follow": follow}, timeout=None
        ) as response:
            return [json.loads(line)["result"] for line in response.iter_lines() if line]

    def task_output(self, task_id: str) -> list[str]:
        return [e["message"] for e in self.logs(task_id) if e["source"] == "task"]


def running_cluster(
    tmp_path: Path, db_url: str, agents: int = 1, slots: int = 1, **config: Any
) -> Iterator[tuple[Master, list[Agent]]]:
    master = Master(tmp_path, db_url, **config)
    master.start()
    started = [Agent(tmp_path, master, f"agent-{i}", slots=slots) for i in range(agents)]
    try:
        for agent in started:
            agent.start()
        if started:
            api = Api(master)
            wait_for(
                f"{agents} agents to join",
                lambda: len(api.agents()) == agents,
                logs=[master.log_path, *(a.log_path for a in started)],
            )
        yield master, started
    finally:
        for agent in started:
            agent.stop()
        master.stop()
