"""The agent daemon against a fake master speaking the real protocol over a loopback WebSocket."""

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from agent.config import AgentConfig
from agent.daemon import Daemon, backoff_delays
from agent.protocol import (
    AGENT_WS_PATH,
    Ack,
    AgentMessageAdapter,
    AgentOptions,
    AllocationExited,
    AllocationStarted,
    DeviceType,
    Hello,
    KillAllocation,
    LogBatch,
    Ping,
    Pong,
    Reject,
    SlotInfo,
    StartAllocation,
    Welcome,
)

REPO = Path(__file__).resolve().parents[2]
TOKEN = "join-secret"
SLOTS = [SlotInfo(id=0, type=DeviceType.CPU), SlotInfo(id=1, type=DeviceType.CPU)]
OPTIONS = AgentOptions(ping_interval=5, ping_timeout=5, log_batch_interval=0.02)
# A det-agent process starting (imports included) and connecting, or ending: seconds on an idle
# machine, far more on a loaded 2-core one running the suite in parallel. Only a hang reaches it.
AGENT_PROCESS_SECONDS = 60


class FakeMaster:
    """Accepts agent sockets and hands each to the test, which then plays the master."""

    def __init__(self) -> None:
        self.accepting = True
        self.connections: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.port = 0

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path != AGENT_WS_PATH:
            return connection.respond(404, "no such path\n")
        if not self.accepting:
            return connection.respond(503, "master restarting\n")
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return connection.respond(401, "bad join token\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        await self.connections.put(ws)
        await ws.wait_closed()

    async def next_connection(self, timeout: float = 5.0) -> ServerConnection:
        return await asyncio.wait_for(self.connections.get(), timeout)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["FakeMaster"]:
        async with serve(self._handle, "127.0.0.1", 0, process_request=self._admit) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            yield self


async def recv(ws: ServerConnection, timeout: float = 5.0):
    return AgentMessageAdapter.validate_json(await asyncio.wait_for(ws.recv(), timeout))


async def send(ws: ServerConnection, message) -> None:
    await ws.send(message.model_dump_json())


async def recv_until(ws: ServerConnection, done: Callable[[list], bool], timeout: float = 5.0):
    messages: list = []
    deadline = time.monotonic() + timeout
    while not done(messages):
        messages.append(await recv(ws, max(0.01, deadline - time.monotonic())))
    return messages


def exited(allocation_id: str) -> Callable[[list], bool]:
    return lambda ms: any(
        isinstance(m, AllocationExited) and m.allocation_id == allocation_id for m in ms
    )


def log_lines(messages: list, allocation_id: str) -> list[str]:
    return [
        e.line
        for m in messages
        if isinstance(m, LogBatch) and m.allocation_id == allocation_id
        for e in m.entries
    ]


def config_for(master: FakeMaster, tmp_path: Path, **overrides) -> AgentConfig:
    return AgentConfig(
        master_url=f"http://127.0.0.1:{master.port}",
        join_token=TOKEN,
        agent_id="agent-7",
        work_dir=tmp_path,
        reconnect_initial_backoff=0.02,
        reconnect_max_backoff=0.1,
        reconnect_give_up_after=10,
        kill_grace_period=2,
        **overrides,
    )


def sh(allocation_id: str, script: str) -> StartAllocation:
    return StartAllocation(allocation_id=allocation_id, task_id="t", argv=["sh", "-c", script])


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_backoff_doubles_to_the_cap_with_jitter_never_below_initial():
    full = backoff_delays(0.5, 10, rng=lambda: 0.0)
    assert [next(full) for _ in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    jittered = backoff_delays(0.5, 10, rng=lambda: 1.0)
    assert [next(jittered) for _ in range(7)] == [0.5, 0.5, 1, 2, 4, 5, 5]


def test_hello_welcome_start_logs_exit_ping_kill_and_stop(tmp_path):
    async def scenario() -> None:
        async with FakeMaster().running() as master:
            daemon = Daemon(config_for(master, tmp_path), SLOTS)
            agent = asyncio.create_task(daemon.run())
            ws = await master.next_connection()
            hello = await recv(ws)
            assert isinstance(hello, Hello)
            assert (hello.agent_id, hello.resource_pool, hello.slots) == (
                "agent-7",
                "default",
                SLOTS,
            )
            assert hello.running == [] and hello.version
            await send(ws, Welcome(options=OPTIONS))

            await send(ws, Ping(seq=41))
            assert await recv(ws) == Pong(seq=41)

            await send(ws, sh("a1", "echo hello; echo oops >&2; exit 4"))
            messages = await recv_until(ws, exited("a1"))
            assert isinstance(messages[0], AllocationStarted)
            assert sorted(log_lines(messages, "a1")) == ["hello", "oops"]
            assert (messages[-1].exit_code, messages[-1].reason) == (4, "")

            await send(ws, sh("a2", "echo up; sleep 100"))
            await recv_until(ws, lambda ms: log_lines(ms, "a2") == ["up"])
            await send(ws, KillAllocation(allocation_id="a2", reason="user asked"))
            (last,) = [m for m in await recv_until(ws, exited("a2")) if m.type != "log_batch"]
            assert (last.exit_code, last.reason) == (-15, "killed by the master: user asked")

            await send(ws, sh("a3", "sleep 100"))
            assert isinstance(await recv(ws), AllocationStarted)
            daemon.stop()
            final = await recv(ws)  # the shutdown kill is reported before the agent leaves
            assert isinstance(final, AllocationExited)
            assert (final.exit_code, final.reason) == (-15, "the agent is shutting down")
            await send(ws, Ack(seq=final.seq))  # the agent waits for it (up to 5 s)
            assert await asyncio.wait_for(agent, 5) == 0

    asyncio.run(scenario())


def test_reconnect_reattaches_and_delivers_what_happened_offline_once_in_order(tmp_path):
    go, go2 = tmp_path / "go", tmp_path / "go2"
    wait_go = f"while [ ! -e {go} ]; do sleep 0.01; done"
    wait_go2 = f"while [ ! -e {go2} ]; do sleep 0.01; done"

    async def scenario() -> None:
        async with FakeMaster().running() as master:
            daemon = Daemon(config_for(master, tmp_path / "work"), SLOTS)
            agent = asyncio.create_task(daemon.run())
            ws = await master.next_connection()
            await recv(ws)
            await send(ws, Welcome(options=OPTIONS))
            await send(ws, sh("short", f"echo s1; {wait_go}; echo s2; exit 5"))
            await send(ws, sh("long", f"echo l1; {wait_go}; echo l2; {wait_go2}; echo l3; exit 7"))
            seen = await recv_until(
                ws, lambda ms: "s1" in log_lines(ms, "short") and "l1" in log_lines(ms, "long")
            )
            pid = next(
                m.pid
                for m in seen
                if isinstance(m, AllocationStarted) and m.allocation_id == "long"
            )

            master.accepting = False  # the master goes away; retries get HTTP 503
            await ws.close()
            go.touch()  # produces s2, the exit of "short", and l2 while nobody listens

            def queued() -> list[str]:
                return [m.type for m in daemon.outbox.messages()]

            await until(
                lambda: (
                    "allocation_exited" in queued()
                    and "l2" in log_lines(daemon.outbox.messages(), "long")
                )
            )
            master.accepting = True

            ws = await master.next_connection()
            hello = await recv(ws)
            assert isinstance(hello, Hello)
            assert [(r.allocation_id, r.pid) for r in hello.running] == [("long", pid)]
            # The link died after the socket took everything in `seen`: the master applied
            # it all, and says so; the agent sends only what came after.
            applied = max(m.seq for m in seen)
            await send(ws, Welcome(options=OPTIONS, reattach=["long"], last_seq=applied))
            after = await recv_until(ws, exited("short"))
            go2.touch()
            after += await recv_until(ws, exited("long"))

            everything = seen + after
            assert [m.seq for m in everything] == list(range(1, len(everything) + 1))
            assert log_lines(everything, "short") == ["s1", "s2"]
            assert log_lines(everything, "long") == ["l1", "l2", "l3"]
            assert log_lines(after, "short") == ["s2"] and log_lines(after, "long")[0] == "l2"
            for allocation_id, code in (("short", 5), ("long", 7)):
                ours = [m for m in everything if m.allocation_id == allocation_id]
                assert [m.type for m in ours if m.type != "log_batch"] == [
                    "allocation_started",
                    "allocation_exited",
                ]
                assert ours[-1].exit_code == code  # the exit comes after all its logs
            assert daemon.sessions == 2
            await send(ws, Ack(seq=everything[-1].seq))  # else stopping waits 5 s for it
            await until(lambda: len(daemon.outbox) == 0)
            daemon.stop()
            assert await asyncio.wait_for(agent, 5) == 0

    asyncio.run(scenario())


def test_an_allocation_the_welcome_does_not_list_is_killed(tmp_path):
    async def scenario() -> None:
        async with FakeMaster().running() as master:
            daemon = Daemon(config_for(master, tmp_path), SLOTS)
            agent = asyncio.create_task(daemon.run())
            ws = await master.next_connection()
            await recv(ws)
            await send(ws, Welcome(options=OPTIONS))
            await send(ws, sh("orphan", "sleep 100"))
            assert isinstance(await recv(ws), AllocationStarted)
            await ws.close()

            ws = await master.next_connection()
            hello = await recv(ws)
            assert [r.allocation_id for r in hello.running] == ["orphan"]
            await send(ws, Welcome(options=OPTIONS, reattach=[]))
            last = (await recv_until(ws, exited("orphan")))[-1]
            assert last.exit_code == -15
            assert last.reason == "not re-attached by the master after reconnecting"
            assert daemon.runner.running() == []
            await send(ws, Ack(seq=last.seq))
            daemon.stop()
            assert await asyncio.wait_for(agent, 5) == 0

    asyncio.run(scenario())


def test_a_silent_master_is_treated_as_lost_after_ping_timeout(tmp_path):
    async def scenario() -> None:
        async with FakeMaster().running() as master:
            daemon = Daemon(config_for(master, tmp_path), SLOTS)
            agent = asyncio.create_task(daemon.run())
            ws = await master.next_connection()
            await recv(ws)
            began = time.monotonic()
            await send(
                ws,
                Welcome(
                    options=AgentOptions(
                        ping_interval=0.1, ping_timeout=0.3, log_batch_interval=0.02
                    )
                ),
            )
            second = await master.next_connection()  # the first stays open but says nothing
            assert 0.3 <= time.monotonic() - began < 2
            assert isinstance(await recv(second), Hello)
            daemon.stop()
            assert await asyncio.wait_for(agent, 5) == 0

    asyncio.run(scenario())


def test_reject_makes_the_agent_exit_1_with_the_reason(tmp_path, caplog):
    async def scenario() -> int:
        async with FakeMaster().running() as master:
            daemon = Daemon(config_for(master, tmp_path), SLOTS)
            agent = asyncio.create_task(daemon.run())
            ws = await master.next_connection()
            await recv(ws)
            await send(ws, Reject(reason="unknown resource pool 'default'"))
            return await asyncio.wait_for(agent, 5)

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(scenario()) == 1
    assert "the master rejected this agent: unknown resource pool 'default'" in caplog.text


@contextlib.asynccontextmanager
async def det_agent(
    *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``det-agent`` as a real process; killed (and its tasks with it) if the test fails."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from agent.main import main; main()",
        *args,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


def test_det_agent_with_a_bad_join_token_exits_1_without_retrying(tmp_path):
    async def scenario() -> tuple[int, str]:
        async with (
            FakeMaster().running() as master,
            det_agent(
                f"--master-url=http://127.0.0.1:{master.port}",
                f"--work-dir={tmp_path}",
                "--join-token=wrong",
            ) as process,
        ):
            _, stderr = await asyncio.wait_for(process.communicate(), AGENT_PROCESS_SECONDS)
            assert process.returncode is not None
            return process.returncode, stderr.decode()

    code, stderr = asyncio.run(scenario())
    assert code == 1
    assert "refused the join token (HTTP 401)" in stderr
    assert "Traceback" not in stderr
    assert stderr.count("connecting to the master") == 1


def test_det_agent_on_sigterm_kills_its_tasks_reports_them_and_exits_0(tmp_path):
    async def scenario() -> None:
        async with (
            FakeMaster().running() as master,
            det_agent(
                f"--master-url=http://127.0.0.1:{master.port}",
                f"--work-dir={tmp_path}",
                env={"DET_AGENT_JOIN_TOKEN": TOKEN},
            ) as process,
        ):
            ws = await master.next_connection(timeout=AGENT_PROCESS_SECONDS)
            await recv(ws)
            await send(ws, Welcome(options=OPTIONS))
            await send(ws, sh("a1", "sleep 100"))
            started = await recv(ws)
            assert isinstance(started, AllocationStarted)
            process.send_signal(signal.SIGTERM)
            last = await recv(ws)
            assert (last.allocation_id, last.exit_code) == ("a1", -15)
            await send(ws, Ack(seq=last.seq))
            await asyncio.wait_for(process.communicate(), AGENT_PROCESS_SECONDS)
            assert process.returncode == 0

    asyncio.run(scenario())


def test_after_give_up_the_hook_runs_and_the_agent_exits_3(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    marker = tmp_path / "hook-ran"
    config = AgentConfig(
        master_url=f"http://127.0.0.1:{port}",
        join_token=TOKEN,
        work_dir=tmp_path,
        reconnect_initial_backoff=0.02,
        reconnect_max_backoff=0.05,
        reconnect_give_up_after=0.3,
        connection_lost_hook=f"touch {marker}",
    )
    began = time.monotonic()
    assert asyncio.run(Daemon(config, SLOTS).run()) == 3
    assert 0.3 <= time.monotonic() - began < 3
    assert marker.exists()


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_statuses_are_fatal_but_others_are_retried(tmp_path, status):
    attempts: list[int] = []

    def admit(connection: ServerConnection, request: Request) -> Response:
        attempts.append(1)
        return connection.respond(503 if len(attempts) < 3 else status, "no\n")

    async def scenario() -> int:
        async with serve(
            lambda ws: ws.wait_closed(), "127.0.0.1", 0, process_request=admit
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            config = AgentConfig(
                master_url=f"http://127.0.0.1:{port}",
                join_token=TOKEN,
                work_dir=tmp_path,
                reconnect_initial_backoff=0.01,
                reconnect_max_backoff=0.02,
            )
            return await asyncio.wait_for(Daemon(config, SLOTS).run(), 5)

    assert asyncio.run(scenario()) == 1
    assert len(attempts) == 3


def test_a_message_the_socket_refused_is_sent_first_on_the_next_connection(tmp_path):
    class ClosedSocket:
        async def send(self, data: str) -> None:
            raise ConnectionClosed(None, None)

    started = AllocationStarted(allocation_id="a", pid=1, started_at="2030-01-01T00:00:00Z")
    exited_ = AllocationExited(allocation_id="a", exit_code=0, ended_at="2030-01-01T00:00:01Z")

    async def scenario() -> list:
        config = AgentConfig(join_token=TOKEN, work_dir=tmp_path)
        daemon = Daemon(config, SLOTS)
        daemon.outbox.put(started)
        daemon.outbox.put(exited_)
        with pytest.raises(ConnectionClosed):
            await daemon._send_queued(ClosedSocket())  # type: ignore[arg-type]
        return daemon.outbox.messages()

    assert asyncio.run(scenario()) == [started, exited_]


def test_what_the_master_did_not_acknowledge_is_sent_again_with_its_numbers(tmp_path):
    """The link dies after the socket took messages the master never applied: the next welcome's
    last_seq is lower than what was sent, and the agent replays the rest, same numbers."""

    async def scenario() -> None:
        async with FakeMaster().running() as master:
            daemon = Daemon(config_for(master, tmp_path / "work"), SLOTS)
            agent = asyncio.create_task(daemon.run())
            ws = await master.next_connection()
            first_hello = await recv(ws)
            await send(ws, Welcome(options=OPTIONS))
            await send(ws, sh("a", "echo one; echo two; exit 3"))
            seen = await recv_until(ws, exited("a"))
            await send(ws, Ack(seq=seen[0].seq))  # only the start was applied
            await until(lambda: len(daemon.outbox) == len(seen) - 1)
            await ws.close()

            ws = await master.next_connection()
            hello = await recv(ws)
            assert hello.boot_id == first_hello.boot_id  # the same process reconnects
            assert hello.exited == ["a"]  # its exit is not acknowledged yet
            await send(ws, Welcome(options=OPTIONS, last_seq=seen[0].seq))
            again = await recv_until(ws, exited("a"))
            assert again == seen[1:]
            await send(ws, Ack(seq=again[-1].seq))
            await until(lambda: len(daemon.outbox) == 0)
            daemon.stop()
            assert await asyncio.wait_for(agent, 5) == 0

    asyncio.run(scenario())


def test_a_stopped_agent_closes_with_going_away_not_an_internal_error(tmp_path):
    """The master logs 1000/1001 as a normal departure (an idle agent the autoscaler stopped);
    leaving the socket on the cancellation would send 1011, which it logs as a warning."""

    async def scenario() -> None:
        async with FakeMaster().running() as master:
            daemon = Daemon(config_for(master, tmp_path), SLOTS)
            agent = asyncio.create_task(daemon.run())
            ws = await master.next_connection()
            assert isinstance(await recv(ws), Hello)
            await send(ws, Welcome(options=OPTIONS))
            daemon.stop()
            assert await asyncio.wait_for(agent, 5) == 0
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == 1001
            assert ws.close_reason == "agent shutting down"

    asyncio.run(scenario())
