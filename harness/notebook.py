"""``python -m harness.notebook``: a notebook task's main program (a Jupyter server).

The server serves under the task's proxy prefix (``base_url=/proxy/<task-id>/``) so its links
and WebSockets work through the master's proxy, which keeps the prefix when forwarding. Users
never see Jupyter's token: the proxy authenticates them and adds ``Authorization: token <token>``
itself (see docs/design/interactive-tasks.md). That header also exempts requests from Jupyter's
XSRF check, so the check stays on.

The token travels to Jupyter in ``JUPYTER_TOKEN``, not on the command line, because any local
user can read a process's argv but only its owner can read its environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from harness.service import TaskEnv, bind_host, free_port
from harness.service_process import ServiceSpec, local_url, run_service

TOKEN_VARIABLE = "DET_NOTEBOOK_TOKEN"


def jupyter_argv(base_url: str, host: str, port: int, root_dir: str) -> list[str]:
    """The Jupyter server command line: this interpreter, so kernels use it too (jupyter_client
    runs the ``python3`` kernelspec's ``python`` as ``sys.executable`` of the server)."""
    return [
        sys.executable,
        "-m",
        "jupyter_server",
        f"--ServerApp.base_url={base_url}",
        f"--ServerApp.ip={host}",
        f"--ServerApp.port={port}",
        # free_port's port is ours to use; another one would be a port the master does not know.
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.open_browser=False",
        # The agent may run tasks as root; Jupyter refuses that unless told.
        "--ServerApp.allow_root=True",
        # Browsers reach the server only through the master's proxy, which authenticates them and
        # whose origin is not this host's: allow any origin and any Host header (Jupyter's DNS
        # rebinding guard would otherwise refuse the proxy's Host when we bind to loopback).
        "--ServerApp.allow_origin=*",
        "--ServerApp.allow_remote_access=True",
        # A terminal is a shell on the agent; shells are their own task kind with their own keys.
        "--ServerApp.terminals_enabled=False",
        # Run as `jupyter_server`, not `jupyter lab`, the server's root is its bare "A Jupyter
        # Server is running" page; browser links (the console's Open, `det notebook open`) land
        # on the root, so send them on to JupyterLab, under base_url.
        "--ServerApp.default_url=/lab",
    ]


def child_environ(token: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: ours plus the token where Jupyter reads it."""
    env = dict(environ)
    env.pop("JUPYTER_TOKEN_FILE", None)  # it would not override JUPYTER_TOKEN, but be explicit
    env["JUPYTER_TOKEN"] = token
    return env


def notebook_spec(task: TaskEnv, token: str, host: str, port: int, cwd: str) -> ServiceSpec:
    """Everything needed to run and probe the Jupyter server for ``task``."""
    base_url = task.base_url
    return ServiceSpec(
        name="Jupyter server",
        argv=jupyter_argv(base_url, host, port, cwd),
        ready_url=local_url(host, port, f"{base_url}api/status"),
        ready_headers={"Authorization": f"token {token}"},
        ready_message=f"Jupyter server ready at {base_url}",
        env=child_environ(token, os.environ),
        cwd=cwd,
    )


def main() -> int:
    try:
        task = TaskEnv.from_environ()
    except RuntimeError as e:
        print(f"harness.notebook: {e}", file=sys.stderr)
        return 1
    token = os.environ.get(TOKEN_VARIABLE, "")
    if not token:
        print(
            f"harness.notebook: {TOKEN_VARIABLE} is unset (the master creates a Jupyter token for "
            "every notebook task; is this a notebook task?)",
            file=sys.stderr,
        )
        return 1
    try:
        host = bind_host(task.master_url)
        port = free_port(host)
    except OSError as e:
        print(f"harness.notebook: no address faces the master: {e}", file=sys.stderr)
        return 1
    return run_service(task, host, port, notebook_spec(task, token, host, port, os.getcwd()))


if __name__ == "__main__":
    sys.exit(main())
