"""Many fake agents in one process, speaking the real agent protocol to a real master.

Each fake agent opens its own WebSocket to ``/agents/ws`` with the cluster join token, exactly as
``agent/daemon.py`` does (the ``websockets`` client, ``Authorization: Bearer <token>``), and
speaks only through ``agent.protocol``'s message models: a protocol change breaks this module
the way it breaks a real agent, never silently. What it does not do is run anything:

- ``hello`` with ``slots`` CPU slots, then waits for ``welcome`` (a ``reject`` is an error);
- answers every ``ping`` with a ``pong``;
- on ``start_allocation``: ``allocation_started`` at once, then after ``run_seconds`` (default
  0) one ``log_batch`` line and ``allocation_exited`` with exit code 0;
- on ``kill_allocation``: the allocation ends at once with exit code -15 (SIGTERM).

As a library::

    async with FakeAgents(master_url, join_token, count=500, slots=1) as agents:
        ...  # agents.started / agents.exited count allocations

From the command line (runs until interrupted)::

    .venv/bin/python -m bench.fake_agents --master-url http://127.0.0.1:8080 \\
        --join-token TOKEN --agents 500 --slots 1 [--run-seconds 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from types import TracebackType

from websockets.asyncio.client import ClientConnection, connect

from agent.protocol import (
    AGENT_WS_PATH,
    AllocationExited,
    AllocationStarted,
    DeviceType,
    Hello,
    KillAllocation,
    LogBatch,
    LogEntry,
    MasterMessageAdapter,
    Ping,
    Pong,
    Reject,
    SlotInfo,
    StartAllocation,
    Welcome,
)

log = logging.getLogger(__name__)

# How many agents open their connection at once: the master answers each hello in a scheduler
# event, and thousands of simultaneous handshakes only time out against each other.
CONNECT_CONCURRENCY = 64
OPEN_TIMEOUT = 60.0  # seconds for one agent's handshake and welcome under load
SIGTERM_EXIT = -15
VERSION = "fake-agents"


def ws_url(master_url: str) -> str:
    scheme, rest = master_url.rstrip("/").split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{AGENT_WS_PATH}"


def _now() -> datetime:
    return datetime.now(UTC)


class FakeAgent:
    """One agent's connection; ``run`` returns when the link closes or the agent is cancelled."""

    def __init__(self, owner: FakeAgents, agent_id: str) -> None:
        self.owner = owner
        self.id = agent_id
        self.ws: ClientConnection | None = None
        self.running: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()
        # Protocol 2: every agent -> master message but pong is numbered from 1 per process;
        # a fake agent never reconnects, so it has nothing to replay and ignores acks.
        self.boot_id = uuid.uuid4().hex
        self.booted_at = _now()
        self.seq = 0

    async def connect(self) -> None:
        owner = self.owner
        self.ws = await connect(
            ws_url(owner.master_url),
            additional_headers={"Authorization": f"Bearer {owner.join_token}"},
            open_timeout=OPEN_TIMEOUT,
            ping_interval=None,  # liveness is the protocol's own ping/pong
            max_size=None,
        )
        slots = [SlotInfo(id=i, type=DeviceType.CPU, brand="fake") for i in range(owner.slots)]
        hello = Hello(
            agent_id=self.id,
            boot_id=self.boot_id,
            booted_at=self.booted_at,
            version=VERSION,
            resource_pool=owner.resource_pool,
            slots=slots,
        )
        await self.ws.send(hello.model_dump_json())
        async with asyncio.timeout(OPEN_TIMEOUT):
            first = MasterMessageAdapter.validate_json(await self.ws.recv())
        if isinstance(first, Reject):
            raise RuntimeError(f"agent {self.id} rejected: {first.reason}")
        if not isinstance(first, Welcome):
            raise RuntimeError(f"agent {self.id}: expected welcome, got {first.type}")

    async def serve(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                message = MasterMessageAdapter.validate_json(raw)
                if isinstance(message, Ping):
                    await self._send(Pong(seq=message.seq))
                elif isinstance(message, StartAllocation):
                    self.running[message.allocation_id] = asyncio.create_task(
                        self._run(message.allocation_id)
                    )
                elif isinstance(message, KillAllocation):
                    task = self.running.pop(message.allocation_id, None)
                    if task is not None:
                        task.cancel()
                        await self._send(
                            AllocationExited(
                                allocation_id=message.allocation_id,
                                exit_code=SIGTERM_EXIT,
                                reason="killed by the master",
                                ended_at=_now(),
                            )
                        )
                elif isinstance(message, Reject):
                    raise RuntimeError(f"agent {self.id} rejected: {message.reason}")
        finally:
            for task in self.running.values():
                task.cancel()

    async def _send(self, message: AllocationStarted | AllocationExited | LogBatch | Pong) -> None:
        assert self.ws is not None
        async with self._lock:
            if not isinstance(message, Pong):
                self.seq += 1
                message.seq = self.seq
            await self.ws.send(message.model_dump_json())

    async def _run(self, allocation_id: str) -> None:
        await self._send(
            AllocationStarted(allocation_id=allocation_id, pid=os.getpid(), started_at=_now())
        )
        self.owner.started += 1
        if self.owner.run_seconds > 0:
            await asyncio.sleep(self.owner.run_seconds)
        line = LogEntry(timestamp=_now(), stdtype="stdout", line=f"{self.id} ran {allocation_id}")
        await self._send(LogBatch(allocation_id=allocation_id, entries=[line]))
        # Gone from `running` before the exit goes out: a kill racing it finds nothing to kill.
        self.running.pop(allocation_id, None)
        await self._send(
            AllocationExited(allocation_id=allocation_id, exit_code=0, ended_at=_now())
        )
        self.owner.exited += 1

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close(code=1001, reason="fake agents stopping")


class FakeAgents:
    """``count`` fake agents named ``{prefix}-{i}``, each with ``slots`` slots; entering connects
    them all (welcomed), leaving closes them. ``started``/``exited`` count allocations."""

    def __init__(
        self,
        master_url: str,
        join_token: str,
        count: int,
        slots: int = 1,
        *,
        run_seconds: float = 0.0,
        resource_pool: str = "default",
        prefix: str = "fake",
    ) -> None:
        self.master_url = master_url
        self.join_token = join_token
        self.count = count
        self.slots = slots
        self.run_seconds = run_seconds
        self.resource_pool = resource_pool
        self.agents = [FakeAgent(self, f"{prefix}-{i}") for i in range(count)]
        self.started = 0
        self.exited = 0
        self.connect_seconds = 0.0
        self._serving: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> FakeAgents:
        began = time.monotonic()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def join(agent: FakeAgent) -> None:
            async with gate:
                await agent.connect()
            self._serving.append(asyncio.create_task(agent.serve(), name=agent.id))

        try:
            await asyncio.gather(*(join(a) for a in self.agents))
        except BaseException:
            await self.close()
            raise
        self.connect_seconds = time.monotonic() - began
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def failures(self) -> list[BaseException]:
        """Errors of agents whose connection ended other than by closing."""
        return [
            t.exception()  # type: ignore[misc]
            for t in self._serving
            if t.done() and not t.cancelled() and t.exception() is not None
        ]

    async def close(self) -> None:
        await asyncio.gather(*(a.close() for a in self.agents))
        for task in self._serving:
            task.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)


async def _main(args: argparse.Namespace) -> None:
    async with FakeAgents(
        args.master_url,
        args.join_token,
        args.agents,
        args.slots,
        run_seconds=args.run_seconds,
        resource_pool=args.resource_pool,
    ) as agents:
        print(
            f"{args.agents} fake agents x {args.slots} slots joined in "
            f"{agents.connect_seconds:.1f}s",
            file=sys.stderr,
        )
        while True:
            await asyncio.sleep(5)
            print(f"started {agents.started}, exited {agents.exited}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--master-url", required=True)
    parser.add_argument(
        "--join-token", default=os.environ.get("DET_AGENT_JOIN_TOKEN", ""), help="or env"
    )
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--run-seconds", type=float, default=0.0)
    parser.add_argument("--resource-pool", default="default")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
