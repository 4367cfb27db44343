"""Shells, notebooks and TensorBoards on a real cluster, reached only through the master's proxy.

Each test starts a master and an agent (SQLite and PostgreSQL); the task-side programs run as
real processes on the agent (paramiko SSH server, Jupyter server with ipykernel, TensorBoard).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest

from cli.tunnel import open_tunnel
from harness.shell.keys import load_private_key
from tests.integration.cluster import Agent, Api, Master, running_cluster, wait_for
from tests.integration.test_cli import Cli
from tests.jupyter_client_helpers import execute_over_websocket, start_kernel
from tests.tensorboard_helpers import wait_for_scalars, write_scalars

PASSWORD = "Passw0rd!"
READY_SECONDS = 90


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(
        tmp_path, db_url, agents=1, slots=2, tensorboard_dir=str(tmp_path / "tb")
    )


def launch(api: Api, kind: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = api.post(f"/api/v1/{kind}s", json=body or {"config": {}})
    assert response.status_code == 200, response.text
    item: dict[str, Any] = response.json()[kind]
    task_id = item["id"]

    def ready() -> bool:
        task = api.task(task_id)
        assert not task["endTime"], "\n".join(e["message"] for e in api.logs(task_id))
        return bool(task["allocations"][0]["isReady"])

    wait_for(f"the {kind} to be ready", ready, READY_SECONDS, logs=[api.master.log_path])
    described: dict[str, Any] = api.get(f"/api/v1/{kind}s/{task_id}").json()[kind]
    return described


def ssh_client(master: Master, shell: dict[str, Any], token: str | None) -> paramiko.SSHClient:
    sock = open_tunnel(master.url, shell["id"], token)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        shell["id"],
        username="anyone",
        pkey=load_private_key(shell["privateKey"]),
        sock=sock,  # type: ignore[arg-type]
        allow_agent=False,
        look_for_keys=False,
        timeout=30,
    )
    return client


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, stdout, _ = client.exec_command(command, timeout=30)
    output = stdout.read().decode()
    return stdout.channel.recv_exit_status(), output


def slots_in_use(api: Api) -> int:
    agent = api.agents()["agent-0"]
    return sum(1 for slot in agent["slots"].values() if slot.get("container"))


def test_a_shell_runs_commands_and_copies_files_through_the_tunnel(
    cluster: tuple[Master, list[Agent]], tmp_path: Path
) -> None:
    master, _ = cluster
    api = Api(master)
    shell = launch(api, "shell")
    assert shell["privateKey"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert shell["agentUserGroup"]["user"]

    # Determined's tunnel sends no credentials; the shell's key is what authenticates.
    with ssh_client(master, shell, token=None) as client:
        assert run(client, "echo hi; exit 5") == (5, "hi\n")
        sftp = client.open_sftp()
        source = tmp_path / "local.bin"
        source.write_bytes(bytes(range(256)) * 512)
        sftp.put(str(source), "copied.bin")
        assert sftp.stat("copied.bin").st_size == source.stat().st_size
        back = tmp_path / "back.bin"
        sftp.get("copied.bin", str(back))
        assert back.read_bytes() == source.read_bytes()
        sftp.close()

    # Another user may read the shell but never gets its key.
    body = {"user": {"username": "bob", "active": True}, "password": PASSWORD}
    assert api.post("/api/v1/users", json=body).status_code == 200
    bob = Api(master, "bob", PASSWORD)
    assert bob.get(f"/api/v1/shells/{shell['id']}").json()["shell"]["privateKey"] is None
    assert "privateKey" not in api.get("/api/v1/shells").json()["shells"][0]
    with pytest.raises(paramiko.AuthenticationException):
        ssh_client(master, {**shell, "privateKey": other_key()}, token=None)


def test_a_shell_survives_a_master_restart(cluster: tuple[Master, list[Agent]]) -> None:
    """Readiness and the service's address are stored: after a restart the agent re-attaches
    the shell and the proxy forwards to it again without the task reporting anew."""
    master, _ = cluster
    api = Api(master)
    shell = launch(api, "shell")
    master.restart_patiently()
    api = Api(master)
    wait_for(
        "the shell to be re-attached",
        lambda: any("re-attached" in e["message"] for e in api.logs(shell["id"])),
        30,
    )
    wait_for(
        "the re-attached shell to be ready again",
        lambda: api.task(shell["id"])["allocations"][0]["isReady"],
        30,
    )
    with ssh_client(master, shell, token=None) as client:
        assert run(client, "echo back") == (0, "back\n")


def other_key() -> str:
    from harness.shell.keys import generate_keypair

    return generate_keypair().private_pem


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client (ssh)")
def test_our_det_shell_start_and_the_system_ssh(
    cluster: tuple[Master, list[Agent]], tmp_path: Path
) -> None:
    master, _ = cluster
    det = Cli(tmp_path / "home", master.url)
    det.ok("user", "login", "admin", env={"DET_PASS": ""})
    started = det("shell", "start", "--", "echo", "from-the-shell;", "exit", "3")
    assert started.returncode == 3, started.stderr
    assert "from-the-shell" in started.stdout
    assert "det shell open" in started.stderr

    shell_id = det.ok("shell", "list", "-q").split()[0]
    command = det.ok("shell", "show-ssh-command", shell_id).strip()
    assert master.url in command and "localhost" not in command
    result = subprocess.run(
        [*_split(command), "-o", "BatchMode=yes", "--", "echo", "again"],
        capture_output=True,
        text=True,
        timeout=60,
        env=det.env,
        start_new_session=True,
    )
    assert result.returncode == 0, result.stderr
    assert "again" in result.stdout

    det.ok("shell", "kill", shell_id)
    Api(master).wait_ended(shell_id)


def _split(command: str) -> list[str]:
    import shlex

    return shlex.split(command)


def test_a_notebook_kernel_runs_code_through_the_proxy(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    notebook = launch(api, "notebook", {"config": {"resources": {"slots": 1}}})
    base = f"{master.url}{notebook['serviceAddress']}"
    headers = {"Authorization": f"Bearer {api.token}"}

    # No Jupyter token anywhere on the user's side: the proxy adds it.
    assert httpx.get(f"{base}api/status", headers=headers).status_code == 200
    kernel_id = start_kernel(base, headers)
    ws = f"{base.replace('http://', 'ws://')}api/kernels/{kernel_id}/channels"
    assert execute_over_websocket(ws, headers, "6*7") == "42"

    assert httpx.get(f"{base}api/status").status_code == 401
    body = {"user": {"username": "bob", "active": True}, "password": PASSWORD}
    assert api.post("/api/v1/users", json=body).status_code == 200
    bob = Api(master, "bob", PASSWORD)
    assert bob.get(f"{notebook['serviceAddress']}api/status").status_code == 403

    assert api.post(f"/api/v1/notebooks/{notebook['id']}/kill").status_code == 200
    api.wait_ended(notebook["id"])
    wait_for("the notebook's slot to be free", lambda: slots_in_use(api) == 0)


def test_a_tensorboard_serves_an_experiments_scalars(
    cluster: tuple[Master, list[Agent]], tmp_path: Path
) -> None:
    master, _ = cluster
    api = Api(master)
    write_scalars(
        tmp_path / "tb" / "experiment" / "7" / "trial" / "3",
        "loss",
        [1.0 / (i + 1) for i in range(10)],
    )

    missing = api.post("/api/v1/tensorboards", json={"experimentIds": [8]})
    assert missing.status_code == 404
    assert missing.json()["message"] == "experiment 8 does not exist"  # and no master path

    board = launch(api, "tensorboard", {"experimentIds": [7]})
    assert board["experimentIds"] == [7]
    base = f"{master.url}{board['serviceAddress']}"
    headers = {"Authorization": f"Bearer {api.token}"}
    values = wait_for_scalars(base, "experiment-7/trial/3", "loss", 10, headers)
    assert values == pytest.approx([1.0 / (i + 1) for i in range(10)])
    assert slots_in_use(api) == 0  # a TensorBoard takes no slot


@pytest.fixture
def idle_cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(
        tmp_path,
        db_url,
        agents=1,
        slots=2,
        shell_idle_timeout="3s",
        notebook_idle_timeout="3s",
        tensorboard_timeout="3s",
        tensorboard_dir=str(tmp_path / "tb"),
    )


def idle_reason(api: Api, task_id: str) -> str:
    ended = api.wait_ended(task_id, timeout=60)
    reason: str = ended["allocations"][-1]["exitReason"] or ""
    logged = [e["message"] for e in api.logs(task_id) if "idle for" in e["message"]]
    assert logged, "no log line says why the task was killed"
    return reason + logged[0]


def test_idle_shells_are_killed_but_not_while_an_ssh_session_is_open(
    idle_cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = idle_cluster
    api = Api(master)
    shell = launch(api, "shell")
    assert shell["idleTimeout"] == "3s"
    with ssh_client(master, shell, token=api.token) as client:
        # Quiet for twice the timeout, but the session is open: the shell stays.
        time.sleep(6)
        assert run(client, "echo still-here") == (0, "still-here\n")
    assert "idle timeout 3s" in idle_reason(api, shell["id"])
    wait_for("the shell's slot to be free", lambda: slots_in_use(api) == 0)

    # A shell's own idle_timeout overrides the master's: off keeps it.
    kept = launch(api, "shell", {"config": {"idle_timeout": "off"}})
    time.sleep(5)
    assert not api.task(kept["id"])["endTime"]
    api.post(f"/api/v1/shells/{kept['id']}/kill")


def test_idle_notebooks_wait_for_busy_kernels(
    idle_cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = idle_cluster
    api = Api(master)
    notebook = launch(api, "notebook", {"config": {"resources": {"slots": 1}}})
    base = f"{master.url}{notebook['serviceAddress']}"
    headers = {"Authorization": f"Bearer {api.token}"}
    kernel_id = start_kernel(base, headers)
    ws = f"{base.replace('http://', 'ws://')}api/kernels/{kernel_id}/channels"
    # One cell busy for longer than the timeout, with no traffic meanwhile.
    assert execute_over_websocket(ws, headers, "import time; time.sleep(7); 6*7") == "42"
    assert not api.task(notebook["id"])["endTime"]
    assert "idle timeout 3s" in idle_reason(api, notebook["id"])
    wait_for("the notebook's slot to be free", lambda: slots_in_use(api) == 0)


def test_idle_tensorboards_are_killed(
    idle_cluster: tuple[Master, list[Agent]], tmp_path: Path
) -> None:
    master, _ = idle_cluster
    api = Api(master)
    write_scalars(tmp_path / "tb" / "experiment" / "1" / "trial" / "1", "loss", [0.5, 0.25])
    board = launch(api, "tensorboard", {"experimentIds": [1]})
    assert "idle timeout 3s" in idle_reason(api, board["id"])
