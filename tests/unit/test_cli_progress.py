"""Bars are drawn on a terminal only; anywhere else nothing, and no escape code, is written."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest

from cli import progress
from harness.client import MasterClient


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_is_written_when_stderr_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    assert not progress.drawn()
    with progress.transfer("Downloading x", 1000) as bar:
        bar.advance(500)
    with progress.waiting("Experiment 1", total=1.0) as bar:
        bar.update(completed=0.5)
    assert err.getvalue() == ""


def test_a_transfer_bar_shows_sizes_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    err = Terminal()
    monkeypatch.setattr("sys.stderr", err)
    assert progress.drawn()
    with progress.transfer("Downloading x", 2_000_000) as bar:
        bar.advance(1_000_000)
    drawn = err.getvalue()
    assert "Downloading x" in drawn
    assert "2.0 MB" in drawn
    assert "\x1b[" in drawn  # a real bar: redrawn in place with escape codes


def test_a_wait_bar_shows_the_fraction_done_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    err = Terminal()
    monkeypatch.setattr("sys.stderr", err)
    with progress.waiting("Experiment 7", total=1.0) as bar:
        bar.update(completed=0.25)
    assert "Experiment 7" in err.getvalue() and "25%" in err.getvalue()


def test_an_upload_sends_the_same_body_with_a_bar_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    received: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-length"] == str(len(request.content))
        received.append(json.loads(request.content))
        return httpx.Response(200, json={"ok": True})

    client = MasterClient("master:8080", "tok", transport=httpx.MockTransport(handler))
    body = {"files": [{"content": "x" * 600_000}]}
    err = Terminal()
    monkeypatch.setattr("sys.stderr", err)
    assert progress.post(client, "/api/v1/commands", body, "Uploading context") == {"ok": True}
    assert "Uploading context" in err.getvalue()
    plain = io.StringIO()
    monkeypatch.setattr("sys.stderr", plain)
    assert progress.post(client, "/api/v1/commands", body, "Uploading context") == {"ok": True}
    assert plain.getvalue() == ""
    assert received == [body, body]
