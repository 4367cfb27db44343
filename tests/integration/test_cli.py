"""Our ``det`` against real clusters: commands, logs, agents, users, errors, ``det deploy local``.

Each run gets HOME and FLOTILLA_HOME in the test's temporary directory (the token cache and a
local cluster's state live there) and no ``DET_*`` variables from the machine. Commands that must
be seen mid-run wait on a gate file the test creates, so "streams as it comes" is shown by
reading the first line while the command is still blocked, never by timing.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.integration.cluster import BIN, Agent, Api, Master, free_port, running_cluster, wait_for

DET_TIMEOUT_SECONDS = 90
LINE_TIMEOUT_SECONDS = 30.0
CAROL_PASSWORD = "Passw0rdCarol"


class Cli:
    """Runs our ``det`` with an isolated HOME/FLOTILLA_HOME, against ``master_url`` if given."""

    def __init__(self, home: Path, master_url: str | None = None) -> None:
        self.home = home
        self.master_url = master_url
        home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DET_")}
        self.env = {**env, "HOME": str(home), "FLOTILLA_HOME": str(home)}

    def argv(self, args: tuple[str, ...]) -> list[str]:
        master = ["-m", self.master_url] if self.master_url else []
        return [str(BIN / "det"), *master, *args]

    def __call__(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=DET_TIMEOUT_SECONDS,
            start_new_session=True,  # no controlling terminal: a prompt reads stdin, not a tty
        )
        assert "Traceback" not in result.stderr, f"det {' '.join(args)}:\n{result.stderr}"
        return result

    def ok(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run a command that must succeed; return its stdout."""
        result = self(*args, env=env)
        assert result.returncode == 0, f"det {' '.join(args)}: {result.stderr}\n{result.stdout}"
        return result.stdout

    def start(self, *args: str, stderr: Path) -> LineReader:
        """Start a long-running ``det``; its stdout is read line by line as it comes."""
        with stderr.open("wb") as err:
            proc = subprocess.Popen(
                self.argv(args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=self.env,
                start_new_session=True,
            )
        return LineReader(proc, stderr)


class LineReader:
    """A running ``det`` whose stdout lines arrive on a queue as the process writes them."""

    def __init__(self, proc: subprocess.Popen[str], stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def next_line(self) -> str | None:
        try:
            return self.lines.get(timeout=LINE_TIMEOUT_SECONDS)
        except queue.Empty:
            raise AssertionError(
                f"no output from det within {LINE_TIMEOUT_SECONDS}s; stderr:\n"
                + self.stderr.read_text()
            ) from None

    def next_line_from_task(self) -> str | None:
        """The next line the task printed, skipping ``det``'s own and the master's lines
        (which share stdout with the task's output, as in Determined)."""
        while True:
            line = self.next_line()
            if line is None or not _is_cli_or_master_line(line):
                return line

    def finish(self) -> int:
        code = self.proc.wait(DET_TIMEOUT_SECONDS)
        assert "Traceback" not in self.stderr.read_text(), self.stderr.read_text()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# The CLI's own lines and the master's lifecycle lines (master/scheduler) in a command's log.
_NOT_TASK_OUTPUT = re.compile(
    r"(Launched command|Preparing files|queued|assigned|running on|exited|killed|"
    r"service ready|preempted|re-attached|agent ')"
)


def _is_cli_or_master_line(line: str) -> bool:
    return bool(_NOT_TASK_OUTPUT.match(line))


def task_output(stdout: str) -> list[str]:
    """The lines of ``det cmd run``'s stdout that the task printed."""
    return [line for line in stdout.splitlines() if not _is_cli_or_master_line(line + "\n")]


def table(stdout: str) -> list[dict[str, str]]:
    """Rows of a ``tabulate`` table (header, dashes, rows) as dicts keyed by the header."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if set(line) <= {"-", "+"}) - 1
    header = [cell.strip() for cell in lines[start].split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.split("|")), strict=True))
        for line in lines[start + 2 :]
    ]


def gated(gate: Path) -> str:
    """A command printing ``first``, then ``second`` only once ``gate`` exists."""
    return f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second"


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=2)


@pytest.fixture
def det(cluster: tuple[Master, list[Agent]], tmp_path: Path) -> Cli:
    """Our ``det`` for the cluster, logged in as admin (blank password)."""
    master, _ = cluster
    cli = Cli(tmp_path / "home", master.url)
    cli.ok("user", "login", "admin", env={"DET_PASS": ""})
    return cli


def test_cmd_run_prints_the_output_and_exits_with_the_command_code(det: Cli) -> None:
    result = det("cmd", "run", "echo hi; exit 7")
    assert result.returncode == 7, result.stderr
    # Every log line goes to stdout, as in Determined: the task's and the master's.
    assert task_output(result.stdout) == ["hi"]
    assert "exited with code 7" in result.stdout


def test_cmd_run_uploads_a_context_directory(det: Cli, tmp_path: Path) -> None:
    context = tmp_path / "context"
    (context / "pkg").mkdir(parents=True)
    (context / "pkg" / "data.txt").write_text("from the context\n")
    (context / "big.ckpt").write_text("left out\n")
    (context / ".detignore").write_text("*.ckpt\n")
    result = det("cmd", "run", "-c", str(context), "cat pkg/data.txt; ls")
    assert result.returncode == 0, result.stderr
    output = task_output(result.stdout)
    assert output[0] == "from the context"
    assert "big.ckpt" not in output and "pkg" in output


def test_cmd_run_streams_lines_as_they_come(det: Cli, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    run = det.start("cmd", "run", gated(gate), stderr=tmp_path / "run.err")
    try:
        assert run.next_line_from_task() == "first\n"
        assert run.proc.poll() is None
        gate.touch()
        assert run.next_line_from_task() == "second\n"
        assert run.next_line_from_task() is None
        assert run.finish() == 0
    finally:
        run.stop()


def test_detached_command_logs_follow_and_kill(
    det: Cli, cluster: tuple[Master, list[Agent]], tmp_path: Path
) -> None:
    master, _ = cluster
    api = Api(master)
    gate = tmp_path / "gate"
    task_id = det.ok("cmd", "run", "-d", gated(gate)).strip()
    assert api.task(task_id)["taskId"] == task_id
    logs = det.start("cmd", "logs", "-f", task_id, stderr=tmp_path / "logs.err")
    try:
        assert logs.next_line_from_task() == "first\n"
        assert logs.proc.poll() is None
        gate.touch()
        assert logs.next_line_from_task() == "second\n"
        assert logs.next_line_from_task() is None
        assert logs.finish() == 0
    finally:
        logs.stop()

    sleeper = det.ok("cmd", "run", "-d", "sleep 300").strip()
    wait_for("the command to run", lambda: api.task(sleeper)["allocations"][0]["isReady"])
    tasks = table(det.ok("task", "list"))
    assert [(t["Task ID"], t["Allocation ID"], t["Agent"]) for t in tasks] == [
        (sleeper, f"{sleeper}.1", "agent-0")
    ]
    assert det.ok("cmd", "kill", sleeper) == f"Killed command {sleeper}\n"
    assert api.wait_ended(sleeper)["allocations"][-1]["exitReason"].startswith("killed by admin")
    assert table(det.ok("task", "list")) == []


def test_agent_list_json_and_drain_then_enable(
    det: Cli, cluster: tuple[Master, list[Agent]]
) -> None:
    master, _ = cluster
    api = Api(master)
    (agent,) = json.loads(det.ok("agent", "list", "--json"))
    assert (agent["id"], agent["num_slots"], agent["enabled"], agent["draining"]) == (
        "agent-0",
        2,
        True,
        False,
    )

    task_id = det.ok("cmd", "run", "-d", "sleep 300").strip()
    wait_for("the command to run", lambda: api.task(task_id)["allocations"][0]["isReady"])
    disabled = det("agent", "disable", "--drain", "agent-0")
    assert disabled.returncode == 0, disabled.stderr
    assert "Disabled agent agent-0." in disabled.stderr
    assert disabled.stdout.startswith("Tasks still in progress on draining nodes.\n")
    assert [t["Task ID"] for t in table(disabled.stdout)] == [task_id]
    assert api.agents()["agent-0"]["draining"] is True
    assert not api.task(task_id)["endTime"]
    (agent,) = json.loads(det.ok("agent", "list", "--json"))
    assert (agent["enabled"], agent["draining"]) == (False, True)

    enabled = det("agent", "enable", "agent-0")
    assert enabled.returncode == 0 and "Enabled agent agent-0." in enabled.stderr
    agent = api.agents()["agent-0"]
    assert (agent["enabled"], agent["draining"]) == (True, False)
    det.ok("cmd", "kill", task_id)


def test_user_create_login_whoami_with_det_pass(det: Cli) -> None:
    det.ok("user", "create", "carol", "--password", CAROL_PASSWORD)
    det.ok("user", "login", "carol", env={"DET_PASS": CAROL_PASSWORD})
    assert det.ok("user", "whoami") == "You are logged in as user 'carol'\n"
    users = {u["Username"]: u for u in table(det.ok("user", "list"))}
    assert users["carol"]["Admin"] == "False"


def test_wrong_password_says_invalid_username_or_password(det: Cli) -> None:
    login = det("user", "login", "admin", env={"DET_PASS": "not-the-password"})
    assert login.returncode == 1
    assert login.stderr.strip().splitlines()[-1] == (
        "Failed to log in: invalid username or password"
    )
    det.ok("user", "logout")
    listed = det("agent", "list", env={"DET_USER": "admin", "DET_PASS": "not-the-password"})
    assert listed.returncode == 1
    assert "invalid username or password" in listed.stderr


def test_unreachable_master_is_one_line_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    cli = Cli(tmp_path / "home", url)
    for args in (("agent", "list"), ("user", "login", "admin")):
        result = cli(*args, env={"DET_PASS": ""})
        assert result.returncode == 1
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"cannot reach the master at {url}"), line


def _pid_alive(pid: int) -> bool:
    """Running (not merely a zombie waiting to be reaped by whoever inherited it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_deploy_local_cluster_up_and_down(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cli = Cli(tmp_path / "home", url)
    state = tmp_path / "home" / "local"
    up = ["deploy", "local", "cluster-up", "--agents", "2", "--slots-per-agent", "1"]
    up += ["--no-gpu", "--port", str(port)]
    recorded: list[int] = []
    try:
        started = cli(*up)
        assert started.returncode == 0, started.stderr  # it prints the failing log's tail
        assert f"Cluster is up at {url} (2 agents, 2 slots)" in started.stdout
        cluster = json.loads((state / "cluster.json").read_text())
        recorded = [cluster["master"]["pid"], *(a["pid"] for a in cluster["agents"])]
        assert len(recorded) == 3 and all(_pid_alive(pid) for pid in recorded)

        admin = {"DET_USER": "admin", "DET_PASS": ""}
        agents = json.loads(cli.ok("agent", "list", "--json", env=admin))
        assert sorted(a["id"] for a in agents) == ["local-agent-0", "local-agent-1"]

        again = cli(*up)
        assert again.returncode == 0, again.stderr
        assert again.stdout == f"Cluster is already running at {url}\n"
        assert json.loads((state / "cluster.json").read_text()) == cluster

        ran = cli("cmd", "run", "echo via-local", env=admin)
        assert (ran.returncode, task_output(ran.stdout)) == (0, ["via-local"]), ran.stderr

        # Work running on an agent goes down with the cluster too. As root the task runs as
        # its own uid: it writes its pid where any uid may.
        drop = tmp_path / "drop"
        drop.mkdir(mode=0o1777)
        drop.chmod(0o1777)
        pid_file = drop / "task.pid"
        cli.ok(
            "cmd",
            "run",
            "-d",
            f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 300",
            env=admin,
        )
        task_pid = int(wait_for("the command to start", lambda: pid_file.read_text().strip()))
        recorded.append(task_pid)

        down = cli("deploy", "local", "cluster-down")
        assert down.returncode == 0, down.stderr
        assert down.stdout.startswith(f"Stopped the local cluster at {url}")
        assert [pid for pid in recorded if _pid_alive(pid)] == []
        assert not (state / "cluster.json").exists()
        assert (state / "flotilla.db").exists()

        second = cli("deploy", "local", "cluster-down")
        assert (second.returncode, second.stdout) == (0, "Local cluster: nothing to stop\n")
    finally:
        if (state / "cluster.json").exists():
            cli("deploy", "local", "cluster-down")
        for pid in recorded:
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
