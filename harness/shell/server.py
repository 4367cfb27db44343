"""The SSH server of a shell task: public-key logins, sessions, SFTP and forwarding.

One thread accepts connections; each connection gets a paramiko ``Transport`` (which runs its
own thread) and a thread that takes its channels. The key is what authenticates: any user name
is accepted (the server runs as the task's account whatever name the client sends, as
Determined's shells do), and only public-key authentication is offered.

Supported, as far as ``ssh``, ``scp``, ``sftp`` and VS Code Remote-SSH need:
``exec``/``shell`` with or without a PTY, ``env``, ``window-change``, exit statuses (see
:mod:`harness.shell.session`), the ``sftp`` subsystem (:mod:`harness.shell.sftp`) and
``direct-tcpip`` forwarding (:mod:`harness.shell.forward`). Refused: passwords, agent and X11
forwarding, and remote forwarding (``ssh -R``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterable

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    MSG_CHANNEL_REQUEST,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_FAILED_CONNECT_FAILED,
    OPEN_SUCCEEDED,
)

from harness.shell import forward
from harness.shell.keys import parse_authorized_keys
from harness.shell.session import HANGUP_GRACE_SECONDS, Session, login_shell
from harness.shell.sftp import LocalSFTPServer, SFTPSubsystem

log = logging.getLogger("harness.shell")

# A connection that has not logged in by then is dropped (sshd's LoginGraceTime is 120 s).
LOGIN_GRACE_SECONDS = 120.0
# How often a connection's thread looks at its transport while waiting for channels (a
# transport closed by another thread does not wake it).
_ACCEPT_POLL_SECONDS = 0.1
_MAX_LOGGED_COMMAND = 200


def _peer(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _command_for_log(command: str) -> str:
    if len(command) > _MAX_LOGGED_COMMAND:
        command = command[:_MAX_LOGGED_COMMAND] + "…"
    return command.replace("\n", "\\n")


class _Connection(paramiko.ServerInterface):
    """What one client may do; paramiko calls these methods from the transport's thread."""

    def __init__(self, server: ShellServer, transport: paramiko.Transport, peer: str, local: str):
        self._server = server
        self._transport = transport
        self._peer = peer
        self._ssh_connection = local
        self._sessions: dict[int, Session] = {}
        self._forwards: dict[int, socket.socket] = {}
        self._pending: dict[int, tuple[Session, str | None]] = {}
        self._lock = threading.Lock()
        self.opened = False

    def _announce(self) -> None:
        """Log the login once, when the client first opens a channel."""
        if not self.opened:
            self.opened = True
            username = self._transport.get_username()
            log.info("ssh session opened from %s (user %r)", self._peer, username)

    # ---- authentication ---------------------------------------------------------------------

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_none(self, username: str) -> int:
        return AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        log.info("refused a password login from %s", self._peer)
        return AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        # Paramiko calls this to ask whether a key would do and again, once it has checked the
        # client's signature, to log in. The login is logged when the first channel opens.
        if self._server.is_authorized(key):
            return AUTH_SUCCESSFUL
        log.info("refused key %s from %s", key.fingerprint, self._peer)
        return AUTH_FAILED

    # ---- channels ---------------------------------------------------------------------------

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind != "session" or not self._transport.is_authenticated():
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        self._announce()
        return OPEN_SUCCEEDED

    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        if not self._transport.is_authenticated():
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        self._announce()
        log.info("forward from %s to %s:%d", self._peer, destination[0], destination[1])
        sock = forward.connect(destination)
        if sock is None:
            return OPEN_FAILED_CONNECT_FAILED
        with self._lock:
            self._forwards[chanid] = sock
        return OPEN_SUCCEEDED

    def channel_accepted(self, channel: paramiko.Channel) -> None:
        """A channel the client opened is ready; forwarded ones start copying now."""
        with self._lock:
            sock = self._forwards.pop(channel.get_id(), None)
        if sock is not None:
            threading.Thread(
                target=forward.pump, args=(channel, sock), name="ssh-forward", daemon=True
            ).start()

    def _session(self, channel: paramiko.Channel) -> Session:
        # Keyed by the channel object, not its number: paramiko reuses a closed channel's
        # number while the old session may still be finishing.
        with self._lock:
            session = self._sessions.get(id(channel))
            if session is None:
                session = Session(
                    channel,
                    cwd=self._server.cwd,
                    ssh_connection=self._ssh_connection,
                    on_finished=self._session_finished,
                )
                self._sessions[id(channel)] = session
            return session

    def _session_finished(self, session: Session) -> None:
        with self._lock:
            if self._sessions.get(id(session.channel)) is session:
                del self._sessions[id(session.channel)]
        self._server.forget(session)

    def check_channel_pty_request(
        self,
        channel: paramiko.Channel,
        term: bytes,
        width: int,
        height: int,
        pixelwidth: int,
        pixelheight: int,
        modes: bytes,
    ) -> bool:
        return self._session(channel).open_pty(term, width, height, pixelwidth, pixelheight)

    def check_channel_window_change_request(
        self, channel: paramiko.Channel, width: int, height: int, pixelwidth: int, pixelheight: int
    ) -> bool:
        return self._session(channel).resize(width, height, pixelwidth, pixelheight)

    def check_channel_env_request(
        self, channel: paramiko.Channel, name: bytes, value: bytes
    ) -> bool:
        return self._session(channel).set_env(name, value)

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode("utf-8", "surrogateescape")
        log.info("exec from %s: %s", self._peer, _command_for_log(text))
        return self._start(channel, text)

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        log.info("interactive shell for %s", self._peer)
        return self._start(channel, None)

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        session = self._session(channel)
        if not session.claim():
            return False
        with self._lock:  # no process of ours will run on this channel
            self._sessions.pop(id(channel), None)
        session.discard()
        log.info("subsystem %s for %s", name, self._peer)
        return super().check_channel_subsystem_request(channel, name)

    def _start(self, channel: paramiko.Channel, command: str | None) -> bool:
        """Accept the request; the process starts once paramiko has sent its reply."""
        session = self._session(channel)
        if not session.claim():
            return False
        with self._lock:
            self._pending[id(channel)] = (session, command)
        return True

    def after_reply(self, channel: paramiko.Channel) -> None:
        """Paramiko has answered a request on ``channel``: start the process it asked for.

        Starting it any earlier would let a command that ends at once have its exit status and
        CLOSE overtake the "exec succeeded" reply, and clients then report a failed request.
        """
        with self._lock:
            pending = self._pending.pop(id(channel), None)
        if pending is None:
            return
        session, command = pending
        if not channel.active or channel.closed:
            session.discard()
            return
        try:
            session.start(command)
        except OSError as e:
            log.warning("could not start a process for %s: %s", self._peer, e)
            session.fail(f"harness.shell: cannot run {login_shell()}: {e.strerror or e}")
            return
        self._server.remember(session)

    def close(self) -> None:
        """The connection ended: free what its unstarted channels held."""
        with self._lock:
            unstarted = [s for s in self._sessions.values() if s.process is None]
            forwards = list(self._forwards.values())
            self._forwards.clear()
        for session in unstarted:
            session.discard()
        for sock in forwards:
            with contextlib.suppress(OSError):
                sock.close()


def _answer_then_start(channel: paramiko.Channel, message: paramiko.Message) -> None:
    """Paramiko's handling of a channel request (ask the server, send the reply), followed by
    starting the process the request asked for, if any (see ``_Connection.after_reply``)."""
    paramiko.Channel._handle_request(channel, message)  # type: ignore[attr-defined]
    connection = channel.get_transport().server_object
    if isinstance(connection, _Connection):
        connection.after_reply(channel)


class _Transport(paramiko.Transport):
    """A paramiko Transport with one hook: a channel request's action runs after its reply.

    Paramiko has no public hook for this; its table of channel message handlers has been the
    same since paramiko 1.x.
    """

    _channel_handler_table = {
        **paramiko.Transport._channel_handler_table,  # type: ignore[attr-defined]
        MSG_CHANNEL_REQUEST: _answer_then_start,
    }


class ShellServer:
    """An SSH server for the holders of ``authorized_keys``, on ``host:port`` (0: any free
    port; the socket is bound on construction, so :attr:`port` is known at once).

    ``cwd`` is where sessions start and relative SFTP paths begin (default: the current
    directory). :meth:`close` stops accepting, drops every connection and ends every process
    the server started (hang-up, then ``SIGKILL`` after a grace period).
    """

    def __init__(
        self,
        host_key: paramiko.PKey,
        authorized_keys: str | Iterable[paramiko.PKey],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        cwd: str | None = None,
    ) -> None:
        if isinstance(authorized_keys, str):
            authorized_keys = parse_authorized_keys(authorized_keys)
        self._authorized = {key.asbytes() for key in authorized_keys}
        if not self._authorized:
            raise ValueError("no authorized keys: nobody could log in")
        self._host_key = host_key
        self.cwd = os.path.abspath(cwd or os.getcwd())
        self._listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(64)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._closing = threading.Event()
        self._serving = threading.Event()
        self._lock = threading.Lock()
        self._transports: set[paramiko.Transport] = set()
        self._sessions: set[Session] = set()
        self._threads: set[threading.Thread] = set()
        self._serve_thread: threading.Thread | None = None

    def __enter__(self) -> ShellServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_authorized(self, key: paramiko.PKey) -> bool:
        return key.asbytes() in self._authorized

    # ---- serving ----------------------------------------------------------------------------

    def start(self) -> None:
        """Serve in a background thread; returns once connections are being accepted."""
        if self._serve_thread is not None:
            raise RuntimeError("the server is already running")
        self._serve_thread = threading.Thread(
            target=self.serve_forever, name="ssh-accept", daemon=True
        )
        self._serve_thread.start()
        self._serving.wait()

    def serve_forever(self) -> None:
        """Accept connections until :meth:`close`."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            self._serving.set()
            while not self._closing.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    try:
                        sock, address = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        if self._closing.is_set():
                            return
                        raise
                    self._spawn(sock, address)

    def _spawn(self, sock: socket.socket, address: tuple[str, int]) -> None:
        thread = threading.Thread(
            target=self._handle, args=(sock, address), name=f"ssh-{_peer(address)}", daemon=True
        )
        with self._lock:
            if self._closing.is_set():
                sock.close()
                return
            self._threads.add(thread)
        thread.start()

    def _handle(self, sock: socket.socket, address: tuple[str, int]) -> None:
        peer = _peer(address)
        local = sock.getsockname()
        ssh_connection = f"{address[0]} {address[1]} {local[0]} {local[1]}"
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = _Transport(sock)
        connection = _Connection(self, transport, peer, ssh_connection)
        with self._lock:
            self._transports.add(transport)
        try:
            transport.add_server_key(self._host_key)
            transport.set_subsystem_handler("sftp", SFTPSubsystem, LocalSFTPServer, cwd=self.cwd)
            if self._closing.is_set():
                return
            try:
                transport.start_server(server=connection)
            except (paramiko.SSHException, EOFError, OSError) as e:
                log.debug("ssh negotiation with %s failed: %s", peer, e)
                return
            self._serve_channels(transport, connection, peer)
        finally:
            connection.close()
            transport.close()
            with self._lock:
                self._transports.discard(transport)
                self._threads.discard(threading.current_thread())

    def _serve_channels(
        self, transport: paramiko.Transport, connection: _Connection, peer: str
    ) -> None:
        deadline = time.monotonic() + LOGIN_GRACE_SECONDS
        try:
            while transport.is_active() and not self._closing.is_set():
                channel = transport.accept(_ACCEPT_POLL_SECONDS)
                if channel is not None:
                    connection.channel_accepted(channel)
                elif not transport.is_authenticated() and time.monotonic() > deadline:
                    log.info(
                        "%s did not log in within %.0f s; dropping it", peer, LOGIN_GRACE_SECONDS
                    )
                    return
        finally:
            if connection.opened:
                log.info("ssh session from %s closed", peer)

    # ---- processes --------------------------------------------------------------------------

    def remember(self, session: Session) -> None:
        with self._lock:
            self._sessions.add(session)
        if self._closing.is_set():
            session.hang_up(0)

    def forget(self, session: Session) -> None:
        with self._lock:
            self._sessions.discard(session)

    # ---- shutdown ---------------------------------------------------------------------------

    def close(self, grace: float = HANGUP_GRACE_SECONDS) -> None:
        """Stop: no new connections, every connection dropped, every process ended."""
        with self._lock:
            if self._closing.is_set():
                return
            self._closing.set()
            transports = list(self._transports)
            sessions = list(self._sessions)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._serve_thread is not None and self._serve_thread is not threading.current_thread():
            self._serve_thread.join()
        self._listener.close()
        for session in sessions:
            session.signal_hangup()
        for transport in transports:
            transport.close()
        deadline = time.monotonic() + grace
        for session in sessions:
            process = session.process
            if process is not None:
                with contextlib.suppress(Exception):
                    process.wait(max(0.0, deadline - time.monotonic()))
        for session in sessions:
            session.kill()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.5, deadline - time.monotonic()))
        self._wake_r.close()
        self._wake_w.close()
