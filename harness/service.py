"""What every interactive task (shell, notebook, TensorBoard) does on its agent.

The master reaches a task's service through its proxy at ``/proxy/<task-id>/``. The task binds
its server to the address this machine uses to reach the master (loopback for a local cluster,
the private address in a cloud VPC; never every interface, so that a TensorBoard without its own
authentication is not open to the agent's whole network), then tells the master where it listens
and that it is ready: ``POST /api/v1/allocations/{allocation_id}/ready``, authenticated with the
allocation's own token. Until then the master reports the task as starting.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from harness.client import MasterClient


@dataclass(frozen=True)
class TaskEnv:
    """The variables the master gives every task (see ``master.scheduler.loop``)."""

    master_url: str
    task_id: str
    allocation_id: str
    token: str

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> TaskEnv:
        env = os.environ if environ is None else environ
        missing = [
            name
            for name in ("DET_MASTER", "DET_TASK_ID", "DET_ALLOCATION_ID", "DET_SESSION_TOKEN")
            if not env.get(name)
        ]
        if missing:
            raise RuntimeError(
                f"not running as a Flotilla task: {', '.join(missing)} unset "
                "(the agent sets them when the master starts a task)"
            )
        return cls(
            master_url=env["DET_MASTER"],
            task_id=env["DET_TASK_ID"],
            allocation_id=env["DET_ALLOCATION_ID"],
            token=env["DET_SESSION_TOKEN"],
        )

    @property
    def base_url(self) -> str:
        """The path prefix the master proxies to this task; servers that know their prefix
        (Jupyter, TensorBoard) serve under it so links work through the proxy."""
        return f"/proxy/{self.task_id}/"

    def client(self) -> MasterClient:
        return MasterClient(self.master_url, token=self.token)


def bind_host(master_url: str) -> str:
    """The local address the kernel would use to reach the master (no packet is sent)."""
    parts = urlsplit(master_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, address = info[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(address)
        local: str = probe.getsockname()[0]
    return local


def free_port(host: str) -> int:
    """A port free on ``host`` now, for servers that cannot be given an open socket."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def report_ready(env: TaskEnv, host: str, port: int) -> None:
    """Tell the master where this task's service listens; from now on it is ready."""
    with env.client() as client:
        client.post(
            f"/api/v1/allocations/{env.allocation_id}/ready",
            {"proxyAddress": host, "proxyPort": port},
        )
