"""The agent's link to the master: connect, hello/welcome, serve, and reconnect when it breaks.

States, each change logged in one line:

    connecting ──hello/welcome──▶ connected ──silence / close──▶ lost ──backoff──▶ connecting
        │                            │                                                  │
        └─ 401/403 or reject ──▶ exit 1                 no connection for give_up_after ─┴▶ exit 3

A lost link does not touch the allocations: they keep running and everything they produce
waits in the :class:`~agent.outbox.Outbox`. The next hello lists what still runs; the welcome
says what the master re-attaches, the rest is killed, then the queued messages go out in order.

Delivery: every message the outbox sends is numbered and kept until the master acknowledges it
(``ack``, or the next ``welcome``'s ``last_seq``); after a reconnect the unacknowledged ones go
out again with their numbers and the master skips those it applied already — nothing is lost
or applied twice across a reconnect. Each run of this process says who it is in ``hello``
(``boot_id``, ``booted_at``), so the master can tell a restarted agent from a reconnected one.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import ipaddress
import logging
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from agent.config import AgentConfig
from agent.isolation import Isolation
from agent.outbox import Outbox
from agent.protocol import (
    Ack,
    Hello,
    KillAllocation,
    MasterMessage,
    MasterMessageAdapter,
    Ping,
    Pong,
    Reject,
    SlotInfo,
    StartAllocation,
    Welcome,
)
from agent.runner import Runner
from agent.spot import SpotWatcher

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REJECTED = 1  # bad join token, or the master sent reject
EXIT_MASTER_LOST = 3  # no connection for reconnect_give_up_after seconds

OPEN_TIMEOUT = 10.0  # seconds for TCP + TLS + the WebSocket handshake
WELCOME_TIMEOUT = 30.0  # seconds from hello to welcome
CLOSE_TIMEOUT = 2.0  # seconds to wait for the closing handshake of a dying link
GOING_AWAY = 1001  # RFC 6455 close code: the endpoint is going away (a stopping agent)
MAX_MASTER_MESSAGE_BYTES = 256 * 1024 * 1024  # start_allocation carries the base64 context
HOOK_TIMEOUT = 300.0  # seconds connection_lost_hook may run
SHUTDOWN_FLUSH_TIMEOUT = 5.0  # seconds to deliver final exits when stopping
AUTH_FAILURE_STATUSES = (401, 403)
DEFAULT_VERSION = "0.1.0"


class Fatal(Exception):
    """The agent must stop: ``code`` is its exit status, ``str()`` the reason for the user."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class LinkLost(Exception):
    """The current connection is unusable; the agent reconnects."""


def agent_version() -> str:
    try:
        return importlib.metadata.version("flotilla")
    except importlib.metadata.PackageNotFoundError:
        return DEFAULT_VERSION


def backoff_delays(
    initial: float, maximum: float, rng: Callable[[], float] = random.random
) -> Iterator[float]:
    """Reconnect delays: doubling from ``initial`` to ``maximum``, each one jittered down by up
    to half (never below ``initial``) so a fleet that lost its master does not return in step."""
    delay = initial
    while True:
        yield max(initial, delay * (1 - 0.5 * rng()))
        delay = min(maximum, delay * 2)


def local_addresses(master_host: str | None) -> list[str]:
    """Non-loopback IPs of this machine, best effort: the hostname's addresses and the source
    address the kernel would use towards the master (a UDP connect sends nothing)."""
    found: list[str] = []
    with contextlib.suppress(OSError):
        found += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)]
    if master_host:
        try:
            family = socket.getaddrinfo(master_host, 80)[0][0]
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((master_host, 80))
                found.append(str(probe.getsockname()[0]))
        except OSError:
            pass
    addresses: list[str] = []
    for text in found:
        try:
            ip = ipaddress.ip_address(text.split("%")[0])
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified) and text not in addresses:
            addresses.append(text)
    return addresses


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Daemon:
    """One agent: its runner, its outbox and its link to the master.

    :meth:`run` returns the process exit status; :meth:`stop` (e.g. on SIGTERM) makes it kill
    the allocations, deliver their exits if connected, and return 0.
    """

    def __init__(
        self, config: AgentConfig, slots: Sequence[SlotInfo], isolation: Isolation = "none"
    ) -> None:
        """``isolation`` is what :func:`agent.isolation.resolve` decided for ``config``."""
        self.config = config
        self.slots = list(slots)
        self.outbox = Outbox()
        self.runner = Runner(
            work_dir=config.work_path,
            agent_id=config.agent_id,
            slots=self.slots,
            emit=self.outbox.put,
            log_batch_interval=config.log_batch_interval,
            kill_grace_period=config.kill_grace_period,
            isolation=isolation,
            uid_range=config.uid_range,
        )
        self.boot_id = uuid.uuid4().hex  # this run of the agent process
        self.booted_at = datetime.now(UTC)
        self.sessions = 0  # welcomes received so far
        self._stopping = asyncio.Event()
        self._connected = False
        self._sending = False
        self._welcomed = False

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> int:
        link = asyncio.create_task(self._link_loop(), name="master link")
        stop = asyncio.create_task(self._stopping.wait(), name="stop request")
        spot = asyncio.create_task(self._watch_spot(), name="spot notices")
        try:
            await asyncio.wait({link, stop}, return_when=asyncio.FIRST_COMPLETED)
            if link.done():
                code = link.result()
                await self.runner.kill_all(
                    "the agent lost its master"
                    if code == EXIT_MASTER_LOST
                    else "the agent was rejected by the master"
                )
                if code == EXIT_MASTER_LOST:
                    await self._run_connection_lost_hook()
                return code
            log.info("shutting down: killing %d allocation(s)", len(self.runner.allocation_ids()))
            await self.runner.kill_all("the agent is shutting down")
            await self._deliver_queued()
            log.info("agent stopped")
            return EXIT_OK
        finally:
            for task in (link, stop, spot):
                task.cancel()
            await asyncio.gather(link, stop, spot, return_exceptions=True)
            await self.runner.kill_all("the agent is exiting")
            self.runner.close()

    async def _watch_spot(self) -> None:
        """Forward the metadata service's spot notices to the master (see ``agent/spot.py``);
        a watcher that fails is logged, never the agent's end."""
        cfg = self.config
        if cfg.metadata_service == "off":
            return
        watcher = SpotWatcher(cfg.metadata_url, cfg.metadata_service, self.outbox.put)
        try:
            await watcher.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("spot notices: the watcher failed; not watching any more")

    async def _deliver_queued(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_FLUSH_TIMEOUT
        while self._connected and (len(self.outbox) or self._sending):
            if time.monotonic() > deadline:
                log.warning(
                    "exiting with %d message(s) not delivered to the master", len(self.outbox)
                )
                return
            await asyncio.sleep(0.02)

    # ---- connection loop ----------------------------------------------------------------------

    async def _link_loop(self) -> int:
        cfg = self.config
        down_since = time.monotonic()
        delays = backoff_delays(cfg.reconnect_initial_backoff, cfg.reconnect_max_backoff)
        while True:
            try:
                reason = await self._session()
            except Fatal as e:
                log.error("%s", e)
                return e.code
            except (LinkLost, OSError, TimeoutError, WebSocketException, ValidationError) as e:
                reason = str(e) if isinstance(e, LinkLost) else _one_line(e)
                if not self._welcomed:
                    reason = f"cannot connect to the master at {cfg.ws_url}: {reason}"
            if self._welcomed:  # this connection worked: the outage starts now
                self._welcomed = False
                down_since = time.monotonic()
                delays = backoff_delays(cfg.reconnect_initial_backoff, cfg.reconnect_max_backoff)
            down = time.monotonic() - down_since
            left = cfg.reconnect_give_up_after - down
            if left <= 0:
                log.error("no connection to the master for %.0fs; giving up (%s)", down, reason)
                return EXIT_MASTER_LOST
            delay = min(next(delays), left)
            log.warning("%s; reconnecting in %.2gs (giving up in %.0fs)", reason, delay, left)
            await asyncio.sleep(delay)

    async def _session(self) -> str:
        """One connection, from the handshake until it is lost; returns why it was lost."""
        cfg = self.config
        log.info("connecting to the master at %s", cfg.ws_url)
        try:
            async with connect(
                cfg.ws_url,
                additional_headers={"Authorization": f"Bearer {cfg.join_token}"},
                open_timeout=OPEN_TIMEOUT,
                close_timeout=CLOSE_TIMEOUT,
                ping_interval=None,  # liveness is the protocol's own ping/pong
                max_size=MAX_MASTER_MESSAGE_BYTES,
            ) as ws:
                try:
                    return await self._serve(ws)
                except asyncio.CancelledError:
                    # Stopping (SIGTERM, e.g. from the autoscaler): say goodbye with 1001
                    # "going away", which the master logs as a normal departure. Leaving the
                    # `async with` on an exception would close with 1011 (internal error).
                    if self._stopping.is_set():
                        with contextlib.suppress(Exception):
                            await ws.close(code=GOING_AWAY, reason="agent shutting down")
                    raise
        except InvalidStatus as e:
            status = e.response.status_code
            if status in AUTH_FAILURE_STATUSES:
                raise Fatal(
                    EXIT_REJECTED,
                    f"the master at {cfg.master_url} refused the join token (HTTP {status}); "
                    "check join_token / --join-token / DET_AGENT_JOIN_TOKEN",
                ) from None
            raise

    async def _serve(self, ws: ClientConnection) -> str:
        hello = Hello(
            agent_id=self.config.agent_id,
            boot_id=self.boot_id,
            booted_at=self.booted_at,
            version=agent_version(),
            resource_pool=self.config.resource_pool,
            slots=self.slots,
            addresses=await asyncio.to_thread(local_addresses, self.config.master_host),
            running=self.runner.running(),
            exited=self.outbox.exited_allocations(),
            isolation=self.runner.isolation,
        )
        await ws.send(hello.model_dump_json())
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
            # that races the reply, and the agent would go on after being told to stop.
            async with asyncio.timeout(WELCOME_TIMEOUT):
                raw_first = await ws.recv()
            first = MasterMessageAdapter.validate_json(raw_first)
        except TimeoutError:
            raise LinkLost(f"no welcome from the master within {WELCOME_TIMEOUT:g}s") from None
        if isinstance(first, Reject):
            raise Fatal(EXIT_REJECTED, f"the master rejected this agent: {first.reason}")
        if not isinstance(first, Welcome):
            raise LinkLost(f"expected welcome from the master, got {first.type}")
        self._welcome(first, len(hello.running))

        sender = asyncio.create_task(self._send_queued(ws), name="send to master")
        receiver = asyncio.create_task(
            self._receive(ws, first.options.ping_timeout), name="receive from master"
        )
        self._connected = True
        try:
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._connected = False
            sender.cancel()
            receiver.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
        for finished in done:
            error = finished.exception()
            if isinstance(error, Fatal):
                raise error
            if isinstance(error, ConnectionClosed):
                return f"lost the master: connection closed ({error})"
            if error is not None:
                return f"lost the master: {_one_line(error)}"
        return f"lost the master: {receiver.result()}"

    def _welcome(self, welcome: Welcome, reported: int) -> None:
        self._welcomed = True
        self.sessions += 1
        self.runner.log_batch_interval = welcome.options.log_batch_interval
        self.outbox.rewind(welcome.last_seq)
        keep = set(welcome.reattach)
        orphans = [r.allocation_id for r in self.runner.running() if r.allocation_id not in keep]
        log.info(
            "connected to the master as %s: %d slot(s), %d of %d allocation(s) re-attached, "
            "%d queued message(s) to send (after seq %d)",
            self.config.agent_id,
            len(self.slots),
            reported - len(orphans),
            reported,
            self.outbox.pending,
            welcome.last_seq,
        )
        for allocation_id in orphans:
            self.runner.kill(allocation_id, "not re-attached by the master after reconnecting")

    async def _send_queued(self, ws: ClientConnection) -> None:
        while True:
            await self.outbox.wait()
            message = self.outbox.take()
            if message is None:
                continue
            # Unacknowledged until the master says so: a send that fails here, or a frame the
            # link loses after the socket took it, goes again after the next welcome.
            self._sending = True
            try:
                await ws.send(message.model_dump_json())
            finally:
                self._sending = False

    async def _receive(self, ws: ClientConnection, ping_timeout: float) -> str:
        while True:
            try:
                async with asyncio.timeout(ping_timeout):  # not wait_for: see _serve
                    raw = await ws.recv()
            except TimeoutError:
                return f"no message for {ping_timeout:g}s"
            try:
                message = MasterMessageAdapter.validate_json(raw)
            except ValidationError as e:
                log.warning("ignoring a malformed message from the master: %s", _one_line(e))
                continue
            await self._handle(ws, message)

    async def _handle(self, ws: ClientConnection, message: MasterMessage) -> None:
        if isinstance(message, Ping):
            await ws.send(Pong(seq=message.seq).model_dump_json())
        elif isinstance(message, Ack):
            self.outbox.ack(message.seq)
        elif isinstance(message, StartAllocation):
            self.runner.start(message)
        elif isinstance(message, KillAllocation):
            reason = "killed by the master" + (f": {message.reason}" if message.reason else "")
            self.runner.kill(message.allocation_id, reason)
        elif isinstance(message, Reject):
            raise Fatal(EXIT_REJECTED, f"the master rejected this agent: {message.reason}")
        else:
            log.warning("ignoring an unexpected %s message from the master", message.type)

    async def _run_connection_lost_hook(self) -> None:
        hook = self.config.connection_lost_hook
        if not hook:
            return
        log.info("running connection_lost_hook: %s", hook)
        try:
            process = await asyncio.create_subprocess_shell(hook)
        except OSError as e:
            log.error("connection_lost_hook could not start: %s", e)
            return
        try:
            code = await asyncio.wait_for(process.wait(), HOOK_TIMEOUT)
        except TimeoutError:
            log.error("connection_lost_hook still running after %.0fs; killing it", HOOK_TIMEOUT)
            process.kill()
            return
        (log.info if code == 0 else log.error)("connection_lost_hook exited with %d", code)
