"""The master's proxy on a real cluster: a task's web service reached at /proxy/<task-id>/.

The service (data/proxy_target.py) runs as a command and reports ready like every interactive
task, so these tests pin the proxy itself: prefix kept, bodies streamed, credentials not
forwarded, WebSocket frames/subprotocols/close codes, who may pass, browser tickets, and
connections closed when the task ends.
"""

from __future__ import annotations

import base64
import gzip
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.integration.cluster import Agent, Api, Master, running_cluster, wait_for

TARGET = Path(__file__).parent / "data" / "proxy_target.py"
PASSWORD = "Passw0rd!"
TEXT = b"compressible text, " * 400  # what the target's /gzipped serves, gzipped


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=2)


def start_service(api: Api) -> str:
    files = [
        {"path": "target.py", "type": 48, "content": base64.b64encode(TARGET.read_bytes()).decode()}
    ]
    config = {"entrypoint": ["python", "target.py"], "resources": {"slots": 0}}
    response = api.post("/api/v1/commands", json={"config": config, "files": files})
    assert response.status_code == 200, response.text
    task_id: str = response.json()["command"]["id"]

    def ready() -> bool:
        task = api.task(task_id)
        assert not task["endTime"], api.task_output(task_id)
        return bool(task["allocations"] and task["allocations"][0]["isReady"])

    wait_for("the service to report ready", ready, 60, logs=[api.master.log_path])
    # The command counts as ready once running; wait for the address it reports.
    wait_for(
        "the proxy to forward",
        lambda: api.get(f"/proxy/{task_id}/ping").status_code == 200,
        30,
        logs=[api.master.log_path],
    )
    return task_id


def other_user(master: Master) -> Api:
    admin = Api(master)
    body = {"user": {"username": "bob", "active": True, "admin": False}, "password": PASSWORD}
    assert admin.post("/api/v1/users", json=body).status_code == 200
    return Api(master, "bob", PASSWORD)


def ws_url(master: Master, task_id: str, path: str) -> str:
    return master.url.replace("http://", "ws://") + f"/proxy/{task_id}/{path}"


def test_http_keeps_the_prefix_streams_bodies_and_never_forwards_credentials(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    task_id = start_service(api)

    response = api.get(f"/proxy/{task_id}/a/b?x=1", headers={"cookie": "auth=secret; theme=dark"})
    assert response.status_code == 200
    seen: dict[str, Any] = response.json()
    assert seen["path"] == f"/proxy/{task_id}/a/b" and seen["query"] == "x=1"
    assert seen["authorization"] is None
    assert seen["cookie"] == "theme=dark"
    assert response.headers["set-cookie"] == "served=yes; Path=/"

    payload = b"0123456789abcdef" * 65536  # 1 MiB
    posted = api.post(f"/proxy/{task_id}/upload", content=payload).json()
    assert posted["method"] == "POST" and posted["bodyLength"] == len(payload)
    assert posted["bodyHead"] == "0123456789abcdef"

    with api.http.stream("GET", f"/proxy/{task_id}/chunks") as streamed:
        lines = list(streamed.iter_lines())
    assert lines == [f"chunk {i}" for i in range(5)]

    no_slash = api.get(f"/proxy/{task_id}", follow_redirects=False)
    assert no_slash.status_code == 307
    assert no_slash.headers["location"] == f"/proxy/{task_id}/"


def raw_get(master: Master, path: str, headers: dict[str, str]) -> tuple[list[str], bytes]:
    """GET over a plain socket: the header lines exactly as the master sent them, and the body
    exactly as it came (chunked framing undone, nothing decoded)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{master.port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", master.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    header_lines = head.decode("latin-1").split("\r\n")[1:]
    if any(h.lower() == "transfer-encoding: chunked" for h in header_lines):
        unchunked = b""
        while True:
            size_line, _, body = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            unchunked, body = unchunked + body[:size], body[size + 2 :]
        body = unchunked
    return header_lines, body


def named(header_lines: list[str], name: str) -> list[str]:
    return [h.split(":", 1)[1].strip() for h in header_lines if h.lower().startswith(f"{name}:")]


def test_codings_reach_only_clients_that_ask_and_replies_carry_one_date_and_server(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    task_id = start_service(api)
    auth = {"Authorization": f"Bearer {api.token}"}

    # No Accept-Encoding: the upstream is asked without one, gzips anyway, and the proxy
    # decodes: plain bytes, no Content-Encoding, a weak ETag (it named the gzipped bytes).
    headers, body = raw_get(master, f"/proxy/{task_id}/gzipped", auth)
    assert body == TEXT
    assert named(headers, "content-encoding") == []
    assert named(headers, "x-seen-accept-encoding") == ["(none)"]
    assert named(headers, "etag") == ['W/"text-v1"']
    assert len(named(headers, "server")) == 1 and len(named(headers, "date")) == 1

    # A client that refuses gzip (q=0) or asks only for another coding gets plain text too.
    for refusing in ("gzip;q=0, deflate", "br"):
        headers, body = raw_get(
            master, f"/proxy/{task_id}/gzipped", {**auth, "Accept-Encoding": refusing}
        )
        assert body == TEXT and named(headers, "content-encoding") == []
        assert named(headers, "x-seen-accept-encoding") == [refusing]

    # A client that asks gets the upstream's gzip bytes untouched, with their coding and length.
    headers, body = raw_get(
        master, f"/proxy/{task_id}/gzipped", {**auth, "Accept-Encoding": "gzip, br"}
    )
    assert named(headers, "content-encoding") == ["gzip"]
    assert named(headers, "x-seen-accept-encoding") == ["gzip, br"]
    assert named(headers, "etag") == ['"text-v1"']
    assert named(headers, "content-length") == [str(len(body))]
    assert gzip.decompress(body) == TEXT
    assert len(named(headers, "server")) == 1 and len(named(headers, "date")) == 1

    # A HEAD for a coding the client did not ask for: no coding, no stale length.
    head = api.http.head(f"/proxy/{task_id}/gzipped", headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200 and "content-encoding" not in head.headers
    assert head.headers.get("content-length") in (None, "0")
    assert len(head.headers.get_list("server")) == 1 and len(head.headers.get_list("date")) == 1

    # A coding the proxy cannot decode and the client did not accept: a 502 that names it.
    refused = api.get(f"/proxy/{task_id}/brotli", headers={"Accept-Encoding": "gzip"})
    assert refused.status_code == 502
    assert "encoded its reply with br" in refused.json()["message"]
    passed = api.get(f"/proxy/{task_id}/brotli", headers={"Accept-Encoding": "br"})
    assert passed.headers["content-encoding"] == "br"


def test_only_the_owner_and_admins_pass(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    bob = other_user(master)
    task_id = start_service(bob)
    admin = Api(master)

    assert bob.get(f"/proxy/{task_id}/x").status_code == 200
    assert admin.get(f"/proxy/{task_id}/x").status_code == 200
    assert httpx.get(f"{master.url}/proxy/{task_id}/x").status_code == 401
    carol_body = {"user": {"username": "carol", "active": True}, "password": PASSWORD}
    assert admin.post("/api/v1/users", json=carol_body).status_code == 200
    carol = Api(master, "carol", PASSWORD)
    denied = carol.get(f"/proxy/{task_id}/x")
    assert denied.status_code == 403
    assert "belongs to 'bob'" in denied.json()["message"]

    with pytest.raises(InvalidStatus) as anonymous:
        connect(ws_url(master, task_id, "ws"), open_timeout=10).close()
    assert anonymous.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as forbidden:
        connect(
            ws_url(master, task_id, "ws"),
            additional_headers={"Authorization": f"Bearer {carol.token}"},
            open_timeout=10,
        ).close()
    assert forbidden.value.response.status_code == 403

    # Without credentials nothing about a task is said, not even whether it exists (issue 10).
    assert httpx.get(f"{master.url}/proxy/not-a-task/x").status_code == 401
    assert bob.get("/proxy/not-a-task/x").status_code == 404


def test_websocket_frames_subprotocols_and_close_codes(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    task_id = start_service(api)
    headers = {"Authorization": f"Bearer {api.token}"}
    with connect(
        ws_url(master, task_id, "ws"),
        additional_headers=headers,
        subprotocols=["v2.flotilla", "other"],  # type: ignore[list-item]
        open_timeout=10,
    ) as ws:
        assert ws.subprotocol == "v2.flotilla"
        ws.send(bytes(range(256)))
        assert ws.recv(timeout=10) == bytes(range(256))
        ws.send("text frame")
        assert ws.recv(timeout=10) == "text frame"
        ws.send("close please")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4001 and ws.close_reason == "asked to"


def test_a_browser_ticket_works_once_and_sets_a_scoped_cookie(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    task_id = start_service(api)
    ticket = api.post(f"/api/v1/tasks/{task_id}/proxy-ticket").json()
    assert ticket["url"].startswith(f"/proxy/{task_id}/?flotilla_ticket=")

    browser = httpx.Client(base_url=master.url)
    first = browser.get(ticket["url"], follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == f"/proxy/{task_id}/"
    assert f"Path=/proxy/{task_id}/" in first.headers["set-cookie"]
    assert "HttpOnly" in first.headers["set-cookie"]
    page = browser.get(f"/proxy/{task_id}/lab")
    assert page.status_code == 200 and page.json()["cookie"] is None  # never forwarded

    again = httpx.get(master.url + ticket["url"], follow_redirects=False)
    assert again.status_code == 401


def test_killing_the_task_closes_its_connections(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    api = Api(master)
    task_id = start_service(api)
    with connect(
        ws_url(master, task_id, "ws"),
        additional_headers={"Authorization": f"Bearer {api.token}"},
        open_timeout=10,
    ) as ws:
        ws.send("still here")
        assert ws.recv(timeout=10) == "still here"
        assert api.post(f"/api/v1/commands/{task_id}/kill").status_code == 200
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=15)
        # Whichever closes first: the task's server going down (1012) or the master (1001).
        assert ws.close_code in {1001, 1012}
    api.wait_ended(task_id)
    gone = api.get(f"/proxy/{task_id}/x")
    assert gone.status_code == 404 and "has ended" in gone.json()["message"]


def test_a_task_that_is_not_ready_answers_503_with_what_it_waits_for(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    task_id = api.run("sleep 30", slots=2)
    blocked = api.run("sleep 30", slots=2)
    response = api.get(f"/proxy/{blocked}/")
    assert response.status_code == 503
    assert f"task {blocked} is not ready" in response.json()["message"]
    api.post(f"/api/v1/commands/{blocked}/kill")
    api.post(f"/api/v1/commands/{task_id}/kill")
