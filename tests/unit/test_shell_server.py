"""The shell task's SSH server (``harness.shell``), driven by paramiko and by OpenSSH's clients.

Every test runs a real server on 127.0.0.1 (port 0) in this process, rooted in a temporary
working directory, and stops it afterwards; the last ones run ``python -m harness.shell`` as
the agent would, against a fake master.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from harness.shell.keys import (
    KeyPair,
    fingerprint,
    generate_keypair,
    load_private_key,
    parse_authorized_keys,
)
from harness.shell.server import ShellServer
from tests.shell_helpers import ReadyRecorder, ssh_options, wait_for, write_private_key

REPO = Path(__file__).resolve().parents[2]


# ---- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def user_keys() -> KeyPair:
    return generate_keypair("shell-test")


@pytest.fixture(scope="module")
def host_key() -> paramiko.PKey:
    return load_private_key(generate_keypair().private_pem)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "task"
    path.mkdir()
    return path


@pytest.fixture
def server(host_key: paramiko.PKey, user_keys: KeyPair, workdir: Path) -> Iterator[ShellServer]:
    with ShellServer(host_key, user_keys.public_openssh, "127.0.0.1", 0, cwd=str(workdir)) as srv:
        srv.start()
        yield srv


def connect(port: int, key: paramiko.PKey | None, **kwargs: object) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1",
        port,
        username="anyone",
        pkey=key,
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
        banner_timeout=10,
        auth_timeout=10,
        **kwargs,  # type: ignore[arg-type]
    )
    return client


@pytest.fixture
def client(server: ShellServer, user_keys: KeyPair) -> Iterator[paramiko.SSHClient]:
    ssh = connect(server.port, load_private_key(user_keys.private_pem))
    yield ssh
    ssh.close()


def run(
    ssh: paramiko.SSHClient, command: str, environment: dict[str, str] | None = None
) -> tuple[int, str, str]:
    _, stdout, stderr = ssh.exec_command(command, timeout=10, environment=environment)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def read_until(channel: paramiko.Channel, marker: str, timeout: float = 10.0) -> str:
    """Everything the channel sends until ``marker`` has appeared (or the channel ends)."""
    channel.settimeout(timeout)
    received = b""
    while marker.encode() not in received:
        data = channel.recv(4096)
        if not data:
            break
        received += data
    return received.decode(errors="replace")


def process_gone(pid: int) -> bool:
    """The process has exited and been reaped (a zombie still shows in /proc)."""
    return not os.path.exists(f"/proc/{pid}")


# ---- keys -----------------------------------------------------------------------------------


def test_generated_key_pair_round_trips(user_keys: KeyPair) -> None:
    assert user_keys.private_pem.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    kind, blob, comment = user_keys.public_openssh.split(" ")
    assert (kind, comment) == ("ssh-ed25519", "shell-test")
    assert blob.startswith("AAAA")
    (public,) = parse_authorized_keys(f"# a comment\n\n{user_keys.public_openssh}\n")
    assert public.asbytes() == load_private_key(user_keys.private_pem).asbytes()
    assert user_keys.fingerprint == public.fingerprint  # paramiko's, as ssh-keygen -l
    assert fingerprint(user_keys.public_openssh) == user_keys.fingerprint
    assert generate_keypair().public_openssh.count(" ") == 1  # no comment, no trailing space


def test_authorized_keys_with_options_are_refused(user_keys: KeyPair) -> None:
    with pytest.raises(ValueError, match="line 1"):
        parse_authorized_keys(f'command="true" {user_keys.public_openssh}')
    with pytest.raises(ValueError):
        ShellServer(load_private_key(user_keys.private_pem), "", "127.0.0.1", 0)


# ---- paramiko client ------------------------------------------------------------------------


def test_exec_exit_status_and_output(client: paramiko.SSHClient) -> None:
    assert run(client, "exit 3") == (3, "", "")
    assert run(client, "echo hi") == (0, "hi\n", "")
    # Several commands one after another on one connection (channel numbers get reused).
    for n in range(3):
        assert run(client, f"echo {n}") == (0, f"{n}\n", "")


def test_stderr_is_separate_without_a_pty(client: paramiko.SSHClient) -> None:
    assert run(client, "echo out; echo err >&2; exit 1") == (1, "out\n", "err\n")


def test_death_by_signal_is_128_plus_the_signal(client: paramiko.SSHClient) -> None:
    assert run(client, "kill -9 $$")[0] == 128 + 9


def test_env_requests_and_working_directory(client: paramiko.SSHClient, workdir: Path) -> None:
    status, out, _ = run(
        client,
        'echo "$FLOTILLA_X|$LC_TEST|$SSH_CONNECTION"; pwd',
        environment={"FLOTILLA_X": "from client", "LC_TEST": "C"},
    )
    assert status == 0
    first, cwd = out.splitlines()
    values, connection = first.rsplit("|", 1)
    assert values == "from client|C"
    assert connection.startswith("127.0.0.1 ")
    assert cwd == str(workdir)


def test_stdin_and_its_eof_reach_the_command(client: paramiko.SSHClient) -> None:
    stdin, stdout, _ = client.exec_command("tr a-z A-Z", timeout=10)
    stdin.write("hello\n")
    stdin.channel.shutdown_write()
    assert stdout.read() == b"HELLO\n"
    assert stdout.channel.recv_exit_status() == 0


def test_pty_size_term_and_window_change(client: paramiko.SSHClient, workdir: Path) -> None:
    (workdir / "winch.py").write_text(
        "import os, signal, sys\n"
        "def changed(*_):\n"
        "    size = os.get_terminal_size(0)\n"
        "    print(f'winch {size.lines} {size.columns}', flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGWINCH, changed)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    signal.pause()\n"
    )
    transport = client.get_transport()
    assert transport is not None
    channel = transport.open_session()
    channel.get_pty(term="xterm-256color", width=100, height=30)
    channel.exec_command(f"stty size; echo TERM=$TERM; tty; exec {sys.executable} winch.py")
    before = read_until(channel, "ready")
    assert "30 100\r\n" in before
    assert "TERM=xterm-256color\r\n" in before
    assert "/dev/pts/" in before
    channel.resize_pty(width=120, height=40)
    assert "winch 40 120" in read_until(channel, "winch 40 120")
    assert channel.recv_exit_status() == 0
    channel.close()


def test_interactive_shell_with_a_pty(client: paramiko.SSHClient) -> None:
    channel = client.invoke_shell(term="vt100", width=80, height=24)
    channel.sendall(b"echo $((6 * 7)); exit 5\n")
    assert "42" in read_until(channel, "42\r\n")
    assert channel.recv_exit_status() == 5
    channel.close()


def test_closing_the_channel_hangs_up_the_command(client: paramiko.SSHClient) -> None:
    transport = client.get_transport()
    assert transport is not None
    channel = transport.open_session()
    channel.exec_command("echo $$; exec sleep 60")
    pid = int(read_until(channel, "\n").strip())
    assert not process_gone(pid)
    channel.close()
    wait_for(lambda: process_gone(pid), what=f"process {pid} to be hung up")


def test_closing_the_server_ends_its_processes(
    server: ShellServer, client: paramiko.SSHClient
) -> None:
    transport = client.get_transport()
    assert transport is not None
    channel = transport.open_session()
    channel.get_pty()
    channel.exec_command("sleep 60 & echo $!; wait")
    pid = int(read_until(channel, "\n").strip())
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 5
    wait_for(lambda: process_gone(pid) or _is_zombie_of_init(pid), what=f"{pid} to end")


def _is_zombie_of_init(pid: int) -> bool:
    """A background job's process is reaped by init (or a subreaper), not by us."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# ---- authentication -------------------------------------------------------------------------


def test_a_wrong_key_is_refused(server: ShellServer) -> None:
    stranger = load_private_key(generate_keypair().private_pem)
    with pytest.raises(paramiko.AuthenticationException):
        connect(server.port, stranger)


def test_password_and_none_are_refused(server: ShellServer) -> None:
    with pytest.raises(paramiko.BadAuthenticationType) as refused:
        connect(server.port, None, password="hunter2")
    assert refused.value.allowed_types == ["publickey"]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=10)
            with pytest.raises(paramiko.BadAuthenticationType):
                transport.auth_none("anyone")
            assert not transport.is_authenticated()
        finally:
            transport.close()


# ---- SFTP -----------------------------------------------------------------------------------


def test_sftp_put_get_list_stat(client: paramiko.SSHClient, workdir: Path, tmp_path: Path) -> None:
    local = tmp_path / "local.bin"
    payload = os.urandom(200_000)
    local.write_bytes(payload)
    with client.open_sftp() as sftp:
        assert sftp.normalize(".") == str(workdir)
        sftp.put(str(local), "uploaded.bin")  # relative: the task's working directory
        assert (workdir / "uploaded.bin").read_bytes() == payload
        assert sftp.stat("uploaded.bin").st_size == len(payload)
        sftp.mkdir("sub")
        sftp.rename("uploaded.bin", "sub/moved.bin")
        assert sorted(sftp.listdir(".")) == ["sub"]
        assert sftp.listdir(str(workdir / "sub")) == ["moved.bin"]
        back = tmp_path / "back.bin"
        sftp.get("sub/moved.bin", str(back))
        assert back.read_bytes() == payload
        sftp.symlink("moved.bin", "sub/link")
        assert sftp.readlink("sub/link") == "moved.bin"
        assert sftp.lstat("sub/link").st_size != sftp.stat("sub/link").st_size
        sftp.chmod("sub/moved.bin", 0o640)
        assert (workdir / "sub" / "moved.bin").stat().st_mode & 0o777 == 0o640
        with sftp.open("sub/moved.bin", "r+") as f:
            f.truncate(10)
        assert (workdir / "sub" / "moved.bin").read_bytes() == payload[:10]
        sftp.remove("sub/link")
        sftp.remove("sub/moved.bin")
        sftp.rmdir("sub")
        assert sftp.listdir(".") == []
        with pytest.raises(FileNotFoundError):
            sftp.stat("missing")


# ---- direct-tcpip ---------------------------------------------------------------------------


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1 that answers each connection until its EOF."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()


def test_direct_tcpip_forwards_to_a_local_port(client: paramiko.SSHClient, echo_port: int) -> None:
    transport = client.get_transport()
    assert transport is not None
    channel = transport.open_channel("direct-tcpip", ("127.0.0.1", echo_port), ("127.0.0.1", 0))
    channel.settimeout(10)
    channel.sendall(b"ping")
    assert channel.recv(4) == b"ping"
    channel.shutdown_write()  # the echo server sees EOF, closes, and so does the channel
    assert channel.recv(10) == b""
    channel.close()

    unused = socket.create_server(("127.0.0.1", 0))
    refused_port = unused.getsockname()[1]
    unused.close()
    with pytest.raises(paramiko.ChannelException):
        transport.open_channel("direct-tcpip", ("127.0.0.1", refused_port), ("127.0.0.1", 0))


# ---- OpenSSH clients ------------------------------------------------------------------------

needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client (ssh)")
needs_scp = pytest.mark.skipif(shutil.which("scp") is None, reason="no OpenSSH scp")


@pytest.fixture
def key_file(tmp_path: Path, user_keys: KeyPair) -> Path:
    return write_private_key(tmp_path / "id_ed25519", user_keys.private_pem)


def ssh(server: ShellServer, key_file: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run OpenSSH's client; output stays bytes, so a PTY's CRLF is not translated."""
    return subprocess.run(
        ["ssh", *ssh_options(key_file), "-p", str(server.port), *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=20,
    )


@needs_ssh
@pytest.mark.parametrize("tty", [[], ["-tt"]], ids=["no-pty", "pty"])
def test_openssh_client(server: ShellServer, key_file: Path, tty: list[str]) -> None:
    done = ssh(
        server,
        key_file,
        *tty,
        "-o",
        "SetEnv=FLOTILLA_Y=y",
        "anyuser@127.0.0.1",
        "echo hi $FLOTILLA_Y",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (b"hi y\r\n" if tty else b"hi y\n")
    assert ssh(server, key_file, *tty, "anyuser@127.0.0.1", "exit 7").returncode == 7


@needs_ssh
def test_openssh_client_with_a_wrong_key(server: ShellServer, tmp_path: Path) -> None:
    other = write_private_key(tmp_path / "other", generate_keypair().private_pem)
    done = ssh(server, other, "anyuser@127.0.0.1", "true")
    assert done.returncode == 255
    assert b"Permission denied" in done.stderr


@needs_scp
def test_scp_both_ways(server: ShellServer, key_file: Path, workdir: Path, tmp_path: Path) -> None:
    source = tmp_path / "source.txt"
    source.write_text("over scp\n")
    target = f"anyuser@127.0.0.1:{workdir}/copied.txt"
    scp = ["scp", *ssh_options(key_file), "-P", str(server.port)]
    up = subprocess.run([*scp, str(source), target], capture_output=True, text=True, timeout=20)
    assert up.returncode == 0, up.stderr
    assert (workdir / "copied.txt").read_text() == "over scp\n"
    back = tmp_path / "back.txt"
    relative = "anyuser@127.0.0.1:copied.txt"  # relative to the task's working directory
    down = subprocess.run([*scp, relative, str(back)], capture_output=True, text=True, timeout=20)
    assert down.returncode == 0, down.stderr
    assert back.read_text() == "over scp\n"


# ---- python -m harness.shell ----------------------------------------------------------------


def task_environment(master_url: str, keys: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "DET_MASTER": master_url,
        "DET_TASK_ID": "shell-task-1",
        "DET_ALLOCATION_ID": "shell-task-1.alloc-1",
        "DET_SESSION_TOKEN": "allocation-token",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DET_SHELL_AUTHORIZED_KEYS", None)
    if keys is not None:
        env["DET_SHELL_AUTHORIZED_KEYS"] = keys
    return env


def test_module_reports_ready_serves_and_stops_on_sigterm(
    user_keys: KeyPair, workdir: Path
) -> None:
    with ReadyRecorder() as master:
        process = subprocess.Popen(
            [sys.executable, "-m", "harness.shell"],
            cwd=workdir,
            env={**task_environment(master.url, user_keys.public_openssh), "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if not master.called.wait(15):
                process.kill()
                pytest.fail(f"never reported ready: {process.communicate()}")
            (call,) = master.calls
            assert call.allocation_id == "shell-task-1.alloc-1"
            assert call.authorization == "Bearer allocation-token"
            assert call.body["proxyAddress"] == "127.0.0.1"
            port = call.body["proxyPort"]
            assert isinstance(port, int) and port > 0

            ssh_client = connect(port, load_private_key(user_keys.private_pem))
            try:
                assert run(ssh_client, "echo hi; pwd") == (0, f"hi\n{workdir}\n", "")
            finally:
                ssh_client.close()

            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, err
    assert "ssh session opened from 127.0.0.1" in out
    assert "exec from 127.0.0.1" in out
    assert user_keys.public_openssh.split()[1] not in out + err


def test_module_without_authorized_keys_says_so(user_keys: KeyPair) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.shell"],
        cwd=REPO,
        env=task_environment("http://127.0.0.1:9", None),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2
    assert "DET_SHELL_AUTHORIZED_KEYS is unset or empty" in done.stderr
