"""``python -m cli.tunnel MASTER_URL TASK_ID``: a byte pipe to a task through the master's proxy.

ssh cannot reach a shell's agent directly (agents sit in private networks), so ``det shell``
runs ssh with this module as its ``ProxyCommand``: it opens a WebSocket to
``<master>/proxy/<task_id>/`` (``ws``/``wss`` from ``http``/``https``) and copies stdin into
binary frames and frames onto stdout until either side closes, the same way Determined's
``python -m determined.cli.tunnel`` does.

The user's cached token for that master is sent as a bearer token when there is one (read from
the token cache without prompting: ssh owns the terminal). The master lets a shell's WebSocket
through without one, as the shell's SSH key is what authenticates.

Failures print one line on stderr and exit 255, which is what ssh itself exits with when it
cannot connect, so scripts see one code for "never got there".

:func:`open_tunnel` gives the same pipe to Python code as a connected socket (one end of a
socketpair, pumped by two threads), which is all ``paramiko.Transport`` needs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
from urllib.parse import urlsplit, urlunsplit

from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    InvalidStatus,
    WebSocketException,
)
from websockets.sync.client import ClientConnection, connect

from cli.errors import CliError
from cli.session import TokenStore, choose_user
from harness.client import USER_AGENT, canonicalize_master_url, error_for

EXIT_FAILURE = 255
OPEN_TIMEOUT_SECONDS = 15.0
CHUNK_BYTES = 64 * 1024


class TunnelError(Exception):
    """The tunnel could not be opened or broke; the message is one line for a human."""


def websocket_url(master_url: str, task_id: str) -> str:
    """``http://m:8080`` and ``abc`` → ``ws://m:8080/proxy/abc/`` (``wss`` for https)."""
    parts = urlsplit(canonicalize_master_url(master_url))  # which has no path
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, f"/proxy/{task_id}/", "", ""))


def cached_token(master_url: str) -> str | None:
    """The token ``det`` would use for this master, if cached; never prompts, never fails."""
    try:
        store = TokenStore(master_url)
        user, _, _ = choose_user(None, store)
        token = store.get_token(user)
    except (CliError, OSError, ValueError):
        token = None
    if token is None and os.environ.get("DET_USER") and os.environ.get("DET_USER_TOKEN"):
        token = os.environ["DET_USER_TOKEN"]
    return token


def _os_reason(error: OSError) -> str:
    text = error.strerror or str(error) or type(error).__name__
    return text[:1].lower() + text[1:]


def open_websocket(master_url: str, task_id: str, token: str | None = None) -> ClientConnection:
    """The WebSocket to the task's proxy path, or a :class:`TunnelError` saying why not."""
    url = websocket_url(master_url, task_id)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return connect(
            url,
            additional_headers=headers,
            user_agent_header=USER_AGENT,
            open_timeout=OPEN_TIMEOUT_SECONDS,
            compression=None,  # ssh traffic is encrypted: nothing to gain by deflating it
            max_size=None,
        )
    except InvalidStatus as e:
        response = e.response
        text = response.body.decode("utf-8", "replace") if response.body else ""
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        message = error_for(response.status_code, body, text=text).message
        raise TunnelError(
            f"cannot open a tunnel to task {task_id} at {url}: HTTP {response.status_code}: "
            f"{message}"
        ) from None
    except TimeoutError:
        raise TunnelError(f"cannot reach the master at {master_url}: timed out") from None
    except OSError as e:
        raise TunnelError(f"cannot reach the master at {master_url}: {_os_reason(e)}") from None
    except WebSocketException as e:
        raise TunnelError(f"cannot open a tunnel to task {task_id} at {url}: {e}") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def relay(ws: ClientConnection, stdin_fd: int, stdout_fd: int) -> None:
    """Copy ``stdin_fd`` to ``ws`` and ``ws`` to ``stdout_fd`` until either side closes."""

    def upstream() -> None:
        try:
            while chunk := os.read(stdin_fd, CHUNK_BYTES):
                ws.send(chunk)
        except (OSError, ConnectionClosed):
            pass
        finally:
            ws.close()

    threading.Thread(target=upstream, name="tunnel-upstream", daemon=True).start()
    try:
        for message in ws:
            _write_all(stdout_fd, message.encode() if isinstance(message, str) else message)
    except ConnectionClosedError as e:
        raise TunnelError(f"the tunnel was cut off: {e}") from None
    except OSError:  # our reader (ssh) went away: nothing left to deliver to
        ws.close()


def open_tunnel(master_url: str, task_id: str, token: str | None = None) -> socket.socket:
    """A connected socket whose bytes travel to and from the task through the master's proxy.

    Closing the returned socket closes the WebSocket; the WebSocket closing ends the socket
    (``recv`` returns ``b""``). Raises :class:`TunnelError` if the tunnel cannot be opened.
    """
    ws = open_websocket(master_url, task_id, token)
    ours, theirs = socket.socketpair()

    def upstream() -> None:
        try:
            while chunk := theirs.recv(CHUNK_BYTES):
                ws.send(chunk)
        except (OSError, ConnectionClosed):
            pass
        finally:
            ws.close()

    def downstream() -> None:
        with ws:  # the connection is ours to close (websockets warns unless it is entered)
            up = threading.Thread(target=upstream, name=f"tunnel-up-{task_id}", daemon=True)
            up.start()
            try:
                for message in ws:
                    theirs.sendall(message.encode() if isinstance(message, str) else message)
            except (OSError, ConnectionClosed):
                pass
            finally:
                # Wakes upstream's recv and tells our caller's recv the tunnel has ended.
                with contextlib.suppress(OSError):
                    theirs.shutdown(socket.SHUT_RDWR)
                up.join()
                theirs.close()

    threading.Thread(target=downstream, name=f"tunnel-down-{task_id}", daemon=True).start()
    return ours


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cli.tunnel",
        description="Pipe stdin/stdout to a task through the master's proxy (ssh ProxyCommand).",
    )
    parser.add_argument("master_url", help="the master's URL, e.g. http://master:8080")
    parser.add_argument("task_id", help="the task (shell) to reach")
    args = parser.parse_args(argv)
    try:
        master = canonicalize_master_url(args.master_url)
        with open_websocket(master, args.task_id, cached_token(master)) as ws:
            relay(ws, sys.stdin.fileno(), sys.stdout.fileno())
    except (TunnelError, ValueError) as e:
        print(e, file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    return 0


if __name__ == "__main__":
    sys.exit(main())
