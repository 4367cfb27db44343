"""Drive a Jupyter server the way a browser does: REST for kernels, a WebSocket to run code.

Shared by the notebook program's unit test (straight to the server) and the master proxy's
integration test (through ``/proxy/<task-id>/``), so both check the same thing: code typed in a
notebook runs in a kernel and its result comes back. The WebSocket speaks Jupyter's original
JSON protocol (no subprotocol requested), one JSON object per text frame with a ``channel``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from websockets.sync.client import connect

PROTOCOL_VERSION = "5.3"


def start_kernel(base_url: str, headers: Mapping[str, str], name: str = "python3") -> str:
    """Start a kernel on the server at ``base_url`` (ending in ``/``); its id."""
    response = httpx.post(
        f"{base_url}api/kernels", json={"name": name}, headers=dict(headers), trust_env=False
    )
    response.raise_for_status()
    kernel_id: str = response.json()["id"]
    return kernel_id


def kernel_channels_url(base_url: str, kernel_id: str) -> str:
    """The ``ws://`` (or ``wss://``) URL of a kernel's channels under an ``http(s)://``
    ``base_url``."""
    ws_base = "ws" + base_url.removeprefix("http")  # http:// -> ws://, https:// -> wss://
    return f"{ws_base}api/kernels/{kernel_id}/channels"


def execute_request(code: str, session: str) -> dict[str, Any]:
    """A shell-channel ``execute_request`` message in the JSON WebSocket format."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "username": "test",
            "session": session,
            "date": datetime.now(UTC).isoformat(),
            "version": PROTOCOL_VERSION,
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }


def execute_over_websocket(
    ws_url: str, headers: Mapping[str, str], code: str, timeout: float = 60.0
) -> str:
    """Run ``code`` in the kernel behind ``ws_url``; the ``text/plain`` of its result.

    Returns ``""`` when the code has no result (a statement). Raises ``RuntimeError`` with the
    kernel's ``ename: evalue`` when the code fails, ``TimeoutError`` after ``timeout`` seconds.
    """
    request = execute_request(code, session=uuid.uuid4().hex)
    msg_id = request["header"]["msg_id"]
    result = ""
    replied = idle = False
    deadline = time.monotonic() + timeout
    with connect(ws_url, additional_headers=dict(headers), proxy=None, open_timeout=timeout) as ws:
        ws.send(json.dumps(request))
        while not (replied and idle):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete answer to {code!r} within {timeout:.0f}s")
            message = json.loads(ws.recv(timeout=remaining))
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["header"]["msg_type"]
            content = message["content"]
            if kind == "execute_result":
                result = content["data"].get("text/plain", "")
            elif kind == "error":
                raise RuntimeError(f"{content['ename']}: {content['evalue']}")
            elif kind == "execute_reply":
                replied = True
                if content.get("status") == "error":
                    raise RuntimeError(f"{content.get('ename')}: {content.get('evalue')}")
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
    return result
