"""``python -m harness.notebook`` against a fake master, and the supervisor it shares with
``harness.tensorboard`` (``harness.service_process``).

Everything runs as real subprocesses: the program installs signal handlers and its whole point is
how it reacts to signals and to its child, which cannot be checked inside pytest's own process.
Requests go straight to the server (the master's proxy is tested elsewhere), under the
``/proxy/<task-id>/`` prefix it serves at.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.service_process import exit_status
from tests.fake_master import (
    ALLOCATION_ID,
    SESSION_TOKEN,
    TASK_ID,
    FakeMaster,
    Program,
    port_is_closed,
    running_fake_master,
    task_environ,
)
from tests.jupyter_client_helpers import execute_over_websocket, kernel_channels_url, start_kernel

JUPYTER_TOKEN = "jupyter-secret-token"


@pytest.fixture
def master() -> Iterator[FakeMaster]:
    with running_fake_master() as fake:
        yield fake


# ---- the notebook program -----------------------------------------------------------------------


def test_notebook_serves_under_the_prefix_runs_code_and_stops_on_sigterm(
    master: FakeMaster, tmp_path: Path
) -> None:
    env = task_environ(master, DET_NOTEBOOK_TOKEN=JUPYTER_TOKEN)
    program = Program(["-m", "harness.notebook"], env, tmp_path)
    try:
        ready = master.wait_for_ready(timeout=90)
    except TimeoutError:
        program.kill()
        pytest.fail(f"never ready: {program.wait()}")
    http = httpx.Client(trust_env=False, timeout=30)
    try:
        assert ready.allocation_id == ALLOCATION_ID
        assert ready.authorization == f"Bearer {SESSION_TOKEN}"
        host, port = ready.body["proxyAddress"], ready.body["proxyPort"]
        assert host == "127.0.0.1"  # bind_host of a loopback master
        assert isinstance(port, int)
        base = f"http://{host}:{port}/proxy/{TASK_ID}/"
        auth = {"Authorization": f"token {JUPYTER_TOKEN}"}

        status = http.get(f"{base}api/status", headers=auth)
        assert status.status_code == 200
        assert "started" in status.json()
        # Fresh clients: after a token-authenticated request Jupyter sets a login cookie.
        refused = httpx.get(f"{base}api/status", trust_env=False)
        assert refused.status_code in (401, 403)
        wrong = httpx.get(
            f"{base}api/status", headers={"Authorization": "token nope"}, trust_env=False
        )
        assert wrong.status_code in (401, 403)
        # Served only under the prefix.
        assert http.get(f"http://{host}:{port}/api/status", headers=auth).status_code == 404
        # No terminals: a shell on the agent is a shell task's business.
        assert http.get(f"{base}api/terminals", headers=auth).status_code == 404

        kernel_id = start_kernel(base, auth)
        ws_url = kernel_channels_url(base, kernel_id)
        assert ws_url.startswith(f"ws://{host}:{port}/proxy/{TASK_ID}/api/kernels/")
        assert execute_over_websocket(ws_url, auth, "6*7") == "42"
        # The kernel is this interpreter, and it runs in the task's working directory.
        assert execute_over_websocket(ws_url, auth, "import sys; sys.executable") == repr(
            sys.executable
        )
        assert execute_over_websocket(ws_url, auth, "import os; os.getcwd()") == repr(str(tmp_path))
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            execute_over_websocket(ws_url, auth, "1/0")
    finally:
        http.close()
        code, out, err = program.stop()

    assert code == 0, err
    assert f"Jupyter server ready at /proxy/{TASK_ID}/" in out
    assert JUPYTER_TOKEN not in out + err
    assert port_is_closed(host, port)
    assert len(master.ready_calls) == 1


def test_notebook_without_its_token_fails_clearly(master: FakeMaster, tmp_path: Path) -> None:
    env = task_environ(master)
    env.pop("DET_NOTEBOOK_TOKEN", None)
    result = subprocess.run(
        [sys.executable, "-m", "harness.notebook"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "DET_NOTEBOOK_TOKEN is unset" in result.stderr
    assert not master.ready_calls


def test_notebook_outside_a_task_fails_clearly(tmp_path: Path) -> None:
    env = {k: v for k, v in task_environ(FakeMaster()).items() if not k.startswith("DET_")}
    result = subprocess.run(
        [sys.executable, "-m", "harness.notebook"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "not running as a Flotilla task" in result.stderr


# ---- the shared supervisor (harness.service_process) --------------------------------------------

# A stand-in service: a one-line Python HTTP server, or a child that never listens. The
# supervisor is driven by a small script so that its signal handlers live in their own process.
SUPERVISOR_SCRIPT = textwrap.dedent(
    """
    import sys
    from harness.service import TaskEnv, bind_host, free_port
    from harness.service_process import ServiceSpec, local_url, run_service

    mode, timeout = sys.argv[1], float(sys.argv[2])
    task = TaskEnv.from_environ()
    host = bind_host(task.master_url)
    port = free_port(host)
    children = {
        "http": ["-m", "http.server", "--bind", host, str(port)],
        "silent": ["-c", "import time; time.sleep(60)"],
        "crash": ["-c", "import sys; sys.exit(3)"],
    }
    spec = ServiceSpec(
        name="test server",
        argv=[sys.executable, *children[mode]],
        ready_url=local_url(host, port, "/"),
        ready_message="test server ready",
    )
    sys.exit(run_service(task, host, port, spec, ready_timeout=timeout))
    """
)


def run_supervisor(master: FakeMaster, tmp_path: Path, mode: str, timeout: float = 30.0) -> Program:
    return Program(["-c", SUPERVISOR_SCRIPT, mode, str(timeout)], task_environ(master), tmp_path)


def test_supervisor_reports_ready_then_stops_cleanly(master: FakeMaster, tmp_path: Path) -> None:
    program = run_supervisor(master, tmp_path, "http")
    try:
        ready = master.wait_for_ready(timeout=30)
    finally:
        if not master.ready_calls:
            program.kill()
    port = ready.body["proxyPort"]
    assert httpx.get(f"http://127.0.0.1:{port}/", trust_env=False).status_code == 200
    code, out, err = program.stop()
    # http.server dies of the forwarded SIGTERM: that is the stop we asked for, so success.
    assert code == 0, err
    assert "test server ready" in out
    assert "received SIGTERM" in err
    assert port_is_closed("127.0.0.1", port)


def test_supervisor_passes_on_an_early_exit(master: FakeMaster, tmp_path: Path) -> None:
    code, _, err = run_supervisor(master, tmp_path, "crash").wait()
    assert code == 3
    assert "the test server exited with code 3 before it was ready" in err
    assert not master.ready_calls


def test_supervisor_gives_up_on_a_server_that_never_answers(
    master: FakeMaster, tmp_path: Path
) -> None:
    code, _, err = run_supervisor(master, tmp_path, "silent", timeout=1.0).wait()
    assert code == 1
    assert "the test server did not answer at http://127.0.0.1:" in err
    assert "within 1s" in err
    assert not master.ready_calls


def test_supervisor_stopped_before_ready_exits_0_without_reporting(
    master: FakeMaster, tmp_path: Path
) -> None:
    program = run_supervisor(master, tmp_path, "silent")
    time.sleep(1.0)  # let it start its child
    code, out, err = program.stop()
    assert code == 0, err
    assert "test server ready" not in out
    assert not master.ready_calls


@pytest.mark.parametrize(
    ("returncode", "stopped", "expected"),
    [
        (0, False, 0),
        (2, False, 2),
        (-signal.SIGKILL, False, 128 + signal.SIGKILL),
        (-signal.SIGTERM, True, 0),
        (-signal.SIGKILL, True, 0),
        (0, True, 0),
        (5, True, 5),
        (-signal.SIGSEGV, True, 128 + signal.SIGSEGV),
    ],
)
def test_exit_status(returncode: int, stopped: bool, expected: int) -> None:
    assert exit_status(returncode, stopped=stopped) == expected
