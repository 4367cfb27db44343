"""Issue 10, finding 4: an unexpected error is a 500 in Determined's shape with an error id the
master logs once with its traceback, and the keep-alive connection stays usable."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from master.api import errors


def _app() -> FastAPI:
    app = FastAPI()
    errors.install(app)
    app.add_middleware(errors.UnexpectedErrorMiddleware)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail")

    @app.get("/port")
    def port(request: Request) -> dict[str, int]:
        assert request.client is not None
        return {"port": request.client.port}

    return app


@pytest.fixture
def server_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_unexpected_error_answers_an_error_id_and_keeps_the_connection(
    server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="master.api.errors")
    with httpx.Client(base_url=server_url, limits=httpx.Limits(max_connections=1)) as client:
        first = client.get("/port").json()["port"]
        failed = client.get("/boom")
        assert failed.status_code == 500
        assert failed.headers.get("connection") != "close"
        body = failed.json()
        assert body["code"] == 13 and body["error"]["reason"] == "Internal Server Error"
        assert "secret detail" not in body["message"]
        error_id = body["message"].split()[2].rstrip(":")
        after = client.get("/port")
        assert after.status_code == 200
        assert after.json()["port"] == first  # the same connection
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "RuntimeError" in logged[0].getMessage()
