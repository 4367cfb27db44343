"""harness.client: Determined-compatible hashing and URLs, and errors reduced to one sentence."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from harness.client import (
    APIError,
    BadRequestError,
    ForbiddenError,
    MasterClient,
    MasterUnreachableError,
    NotFoundError,
    UnauthenticatedError,
    canonicalize_master_url,
    salted_password,
)

# determined.common.api.authentication.salt_and_hash(...) from Determined's own package.
DETERMINED_HASHES = {
    "password": "112ded61f568879685bb7849596d3372f9de8e18733483f25363123bc4aa98eb"
    "7abe69b4c0487140dafce136cc1c5e452cc93748f6ef961e26325bc34717da65",
    "Secret123": "00427e90e81c2fc07d2ce94549a7cd474bfb6cbb7d524b188df8ed655f44950e"
    "44e54a8de7a96ef327d45a85cb3f88d638439fd51d1514669c062ab60359a081",
}


@pytest.mark.parametrize("password", DETERMINED_HASHES)
def test_salted_password_matches_determined(password: str) -> None:
    assert salted_password(password) == DETERMINED_HASHES[password]


def test_blank_password_is_sent_blank_like_determined() -> None:
    assert salted_password("") == ""


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("localhost", "http://localhost:8080"),
        ("localhost:9000", "http://localhost:9000"),
        ("http://example.com", "http://example.com:80"),
        ("https://example.com/", "https://example.com:443"),
        ("http://10.0.0.1:8080/", "http://10.0.0.1:8080"),
        ("[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_master_url_is_canonicalized_like_determined(given: str, canonical: str) -> None:
    assert canonicalize_master_url(given) == canonical


@pytest.mark.parametrize(
    "bad", ["", "http://", "http://u:p@host", "host?x=1", "ftp://host", "host:8080/api/v1"]
)
def test_bad_master_urls_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid master url"):
        canonicalize_master_url(bad)


def client_answering(handler: Callable[[httpx.Request], httpx.Response]) -> MasterClient:
    return MasterClient("master:8080", "tok", transport=httpx.MockTransport(handler))


def answer(status: int, body: Any = None, text: str | None = None) -> MasterClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if text is not None:
            return httpx.Response(status, text=text)
        return httpx.Response(status, json=body)

    return client_answering(handler)


@pytest.mark.parametrize(
    ("status", "body", "error_type", "message"),
    [
        (
            401,
            {"code": 16, "message": "token expired", "details": []},
            UnauthenticatedError,
            "token expired",
        ),
        (
            403,
            {"code": 7, "message": "needs PERMISSION_TYPE_VIEW_AGENTS"},
            ForbiddenError,
            "needs PERMISSION_TYPE_VIEW_AGENTS",
        ),
        (404, {"error": {"error": "agent a9 not found"}}, NotFoundError, "agent a9 not found"),
        (
            400,
            {"code": 3, "message": "config.resources.slots: must be >= 0"},
            BadRequestError,
            "config.resources.slots: must be >= 0",
        ),
        (
            422,
            {
                "detail": [
                    {
                        "loc": ["body", "config", "resources", "slots"],
                        "msg": "Input should be a valid integer",
                    }
                ]
            },
            BadRequestError,
            "config.resources.slots: Input should be a valid integer",
        ),
        (404, {"detail": "Not Found"}, NotFoundError, "Not Found"),
        (500, None, APIError, "HTTP 500 internal server error"),
    ],
)
def test_error_bodies_become_one_sentence(
    status: int, body: Any, error_type: type[APIError], message: str
) -> None:
    with pytest.raises(error_type) as caught:
        answer(status, body).get("/api/v1/agents")
    assert caught.value.status == status
    assert caught.value.message == message


def test_plain_text_error_uses_its_first_line() -> None:
    with pytest.raises(APIError, match=r"^upstream exploded$"):
        answer(502, text="upstream exploded\nstack...").get("/x")


def test_unreachable_master_names_the_url() -> None:
    with pytest.raises(MasterUnreachableError) as caught:
        MasterClient("127.0.0.1:9").get("/info")
    assert str(caught.value) == "cannot reach the master at http://127.0.0.1:9: connection refused"


def test_bearer_token_params_and_json_body_are_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    client = client_answering(handler)
    assert client.post("/api/v1/x", {"a": 1}, params={"follow": True, "skip": None}) == {"ok": True}
    request = seen[0]
    assert request.headers["Authorization"] == "Bearer tok"
    assert str(request.url) == "http://master:8080/api/v1/x?follow=true"
    assert json.loads(request.content) == {"a": 1}


def test_login_sends_hashed_password_and_returns_token() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body == {"username": "u", "password": salted_password("password"), "isHashed": True}
        return httpx.Response(200, json={"token": "t1", "user": {"username": "u"}})

    result = client_answering(handler).login("u", "password")
    assert (result.token, result.user) == ("t1", {"username": "u"})


def test_stream_lines_yields_results_and_raises_error_lines() -> None:
    lines = [
        {"result": {"message": "a"}},
        {"result": {"message": "b"}},
        {"error": {"grpcCode": 7, "message": "not allowed"}},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="\n".join(json.dumps(x) for x in lines) + "\n\n")

    received = []
    with pytest.raises(ForbiddenError, match="not allowed"):
        for item in client_answering(handler).stream_lines("/api/v1/tasks/t/logs"):
            received.append(item["message"])
    assert received == ["a", "b"]


def test_stream_with_error_status_raises_before_yielding() -> None:
    with pytest.raises(NotFoundError, match="task t not found"):
        list(answer(404, {"code": 5, "message": "task t not found"}).stream_lines("/x"))


def test_a_master_url_with_a_path_says_it_must_not_have_one() -> None:
    with pytest.raises(ValueError, match="must not have a path") as caught:
        canonicalize_master_url("localhost:8080/api/v1")
    assert "http://localhost:8080" in str(caught.value)
