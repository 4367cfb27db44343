"""What the API accepts from a request before any route sees it.

Three ASGI-level guards and one app-wide dependency, so that no route can forget them:

- :class:`JsonBodyMiddleware` treats every ``/api/`` request body as JSON, whatever its
  Content-Type says. Determined's gateway does, so its clients rely on it: Determined's Python
  client sends JSON with no Content-Type at all, and the curl recipes in its docs use
  ``-d '{…}'``, which labels the body ``application/x-www-form-urlencoded``. FastAPI would refuse
  both; this middleware relabels them as ``application/json`` before routing. Multipart uploads
  keep their type.
- :class:`BodyLimitMiddleware` reads an ``/api/`` body itself, before authentication and before
  any parsing, and stops at the limit: a declared ``Content-Length`` over it is refused with 413
  without reading a byte, a streamed body is cut off with 413 as soon as it passes the limit.
  Context uploads (the routes in :data:`CONTEXT_UPLOADS`) have a larger limit, but a body larger
  than the JSON limit is read only from a caller whose token the master knows, so an anonymous
  client can make the master hold at most the JSON limit per request. A complete body is then
  checked: it must be UTF-8, and, once parsed as JSON, hold no lone surrogate (``"\\ud800"``,
  which no database can store), no NUL character (PostgreSQL's text cannot hold one) and no
  integer outside int64 (which no database column holds); each is a 400 naming the JSON path.
  The path and the query string must be UTF-8 without NUL too.
- :func:`check_int_params`, an app-wide dependency, bounds every integer path and query
  parameter of the matched route to int64, before the route's own dependencies (authentication
  included) run, with a 400 naming the parameter.

The WebSocket routes and ``/proxy/`` are not the JSON API and pass through untouched: proxied
bodies stream to the task.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Union, get_args, get_origin
from urllib.parse import unquote_to_bytes

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from master import auth
from master.api.errors import ApiError, error_body

_JSON = (b"content-type", b"application/json")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MIB = 2**20

# POST routes whose body carries a context directory (base64 files): commands, the three
# interactive services, experiments. They get the context limit instead of the JSON one.
CONTEXT_UPLOADS = frozenset(
    {
        "/api/v1/commands",
        "/api/v1/notebooks",
        "/api/v1/shells",
        "/api/v1/tensorboards",
        "/api/v1/experiments",
    }
)

# Cheap scans of the raw bytes that decide whether the body needs a full walk: a JSON escape of
# a UTF-16 surrogate, or an integer long enough to leave int64 (19 digits can already).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONG_DIGITS = re.compile(rb"\d{19,}")
# PostgreSQL's text cannot hold U+0000; JSON can only carry it escaped.
_NUL_ESCAPE = re.compile(rb"\\u0000")

Authenticate = Callable[[HTTPConnection], Awaitable[bool]]


class JsonBodyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            original = dict(scope["headers"]).get(b"content-type", b"")
            if not original.startswith(b"multipart/"):
                scope = {**scope, "headers": [*headers, _JSON]}
        await self.app(scope, receive, send)


class _Refused(Exception):
    """The request is answered with ``status`` and ``message`` instead of reaching a route."""

    def __init__(self, status: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


async def caller_is_authenticated(conn: HTTPConnection) -> bool:
    """Whether the request carries a token (header or cookie) of an active user."""
    token = auth.request_token(conn)
    state = getattr(conn.app.state, "master", None)
    if not token or state is None:
        return False

    def known(session: Any) -> bool:
        return auth.user_for_token(session, token, state.clock()) is not None

    return bool(await state.db.run(known))


class BodyLimitMiddleware:
    """Reads, bounds and checks every ``/api/`` request body before the app sees it.

    ``json_limit`` applies to every route, and to anonymous callers everywhere;
    ``context_limit`` to authenticated callers of :data:`CONTEXT_UPLOADS`. The app then receives
    the whole body in one message. Responses it writes itself are in Determined's error shape.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        json_limit: int,
        context_limit: int,
        authenticate: Authenticate = caller_is_authenticated,
    ) -> None:
        self.app = app
        self.json_limit = json_limit
        self.context_limit = max(context_limit, json_limit)
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        try:
            check_url_utf8(scope)
            body = await self._read(scope, receive)
            check_json_body(body)
        except _Refused as refused:
            headers = {"connection": "close"} if refused.close else None
            response = JSONResponse(
                error_body(refused.status, refused.message), refused.status, headers=headers
            )
            await response(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def _limit_for(self, scope: Scope) -> int:
        uploads = scope["method"] == "POST" and scope["path"].rstrip("/") in CONTEXT_UPLOADS
        return self.context_limit if uploads else self.json_limit

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        limit = self._limit_for(scope)
        authenticated: bool | None = None
        declared = _declared_length(scope)
        if declared is not None and declared > self.json_limit:
            if declared > limit:
                raise _Refused(413, _too_large(declared, limit), close=True)
            authenticated = await self.authenticate(HTTPConnection(scope))
            if not authenticated:
                raise _Refused(401, _anonymous_too_large(self.json_limit), close=True)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _Refused(413, _too_large(size, limit), close=True)
            if size > self.json_limit and authenticated is None:
                authenticated = await self.authenticate(HTTPConnection(scope))
            if size > self.json_limit and not authenticated:
                raise _Refused(401, _anonymous_too_large(self.json_limit), close=True)
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise _Refused(400, "Content-Length: not a number", close=True) from None
            if length < 0:
                raise _Refused(400, "Content-Length: negative", close=True)
            return length
    return None


def _too_large(size: int, limit: int) -> str:
    return (
        f"request body: {size} bytes is over this route's limit of {limit} bytes "
        f"({limit / MIB:g} MiB; request_limits in master.yaml)"
    )


def _anonymous_too_large(json_limit: int) -> str:
    return (
        f"request body: over {json_limit / MIB:g} MiB; a larger context upload needs a valid "
        "token (log in first)"
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then waits for the client's disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def check_url_utf8(scope: Scope) -> None:
    """400 when the percent-decoded path or query string is not UTF-8 (e.g. ``%ED%A0%80``)."""
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    for where, raw in (("path", raw_path), ("query string", scope.get("query_string", b""))):
        decoded = unquote_to_bytes(raw.replace(b"+", b" "))
        if b"\x00" in decoded:
            raise _Refused(400, f"{where}: holds a NUL character (%00), which cannot be stored")
        if not decoded.isascii():
            try:
                decoded.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _Refused(
                    400, f"{where}: not valid UTF-8 at byte {exc.start} after percent-decoding"
                ) from None


def check_json_body(body: bytes) -> None:
    """400 for a body that is not UTF-8, or whose JSON holds a lone surrogate or an integer
    outside int64. Bodies that are not JSON at all are left to the route's own parsing."""
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Refused(400, f"body: not valid UTF-8 at byte {exc.start}") from None
    if not (_SURROGATE_ESCAPE.search(body) or _long_integer(body) or _NUL_ESCAPE.search(body)):
        return
    try:
        document = json.loads(body)
    except ValueError:
        return
    for path, problem in _bad_values(document, "body"):
        raise _Refused(400, f"{path}: {problem}")


def _long_integer(body: bytes) -> bool:
    """Whether a run of 19+ digits in ``body`` may be a JSON integer: not a float's fraction or
    exponent (0.0003333333333333333: every metrics report has such floats) nor its integer part
    (followed by ".", "e" or "E"). Digits inside a string only cost a walk."""
    for run in _LONG_DIGITS.finditer(body):
        start, end = run.span()
        if end < len(body) and body[end] in b".eE":
            continue
        before = start - 1
        if before >= 0 and body[before] == 0x2D:  # a minus sign: look before it
            before -= 1
        if before >= 0 and body[before] in b".eE+-":
            continue
        return True
    return False


def _bad_values(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if not _encodable(key):
                yield path, "a key holds a lone UTF-16 surrogate (not valid Unicode text)"
            if "\x00" in key:
                yield path, "a key holds a NUL character (\\u0000), which cannot be stored"
            yield from _bad_values(item, f"{path}.{_printable(key)}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _bad_values(item, f"{path}.{index}")
    elif isinstance(value, str):
        if not _encodable(value):
            yield path, "holds a lone UTF-16 surrogate (not valid Unicode text)"
        if "\x00" in value:
            yield path, "holds a NUL character (\\u0000), which cannot be stored"
    elif isinstance(value, int) and not isinstance(value, bool) and not _in_int64(value):
        yield path, f"{value} is outside the 64-bit integer range [{INT64_MIN}, {INT64_MAX}]"


def _in_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(key: str) -> str:
    return key if _encodable(key) else key.encode("utf-8", "backslashreplace").decode()


def _is_int_annotation(annotation: Any) -> bool:
    """``int``, ``int | None``, ``list[int]``, ``Annotated[int, …]`` and the like; never bool."""
    if annotation is int:
        return True
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType, list, tuple, set, frozenset) or (
        origin is not None and getattr(origin, "__name__", "") == "Annotated"
    ):
        return any(_is_int_annotation(arg) for arg in get_args(annotation))
    return False


def _int_params(route: APIRoute) -> list[tuple[str, str]]:
    """``(where, name)`` of the route's integer path and query parameters, dependencies
    included; cached on the route."""
    cached: list[tuple[str, str]] | None = getattr(route, "_flotilla_int_params", None)
    if cached is None:
        cached = sorted(set(_walk_int_params(route.dependant)))
        route._flotilla_int_params = cached  # type: ignore[attr-defined]
    return cached


def _walk_int_params(dependant: Dependant) -> Iterator[tuple[str, str]]:
    for where, fields in (("path", dependant.path_params), ("query", dependant.query_params)):
        for field in fields:
            if _is_int_annotation(field.field_info.annotation):
                yield where, field.alias
    for sub in dependant.dependencies:
        yield from _walk_int_params(sub)


def check_int_params(conn: HTTPConnection) -> None:
    """App-wide dependency: every integer path or query parameter of the matched route is
    within int64, or the request is a 400 naming it. Values that are not integers at all are
    left to FastAPI's own validation (also a 400)."""
    route = conn.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    for where, name in _int_params(route):
        values = (
            [conn.path_params.get(name)] if where == "path" else conn.query_params.getlist(name)
        )
        for raw in values:
            if raw is None:
                continue
            try:
                number = int(str(raw))
            except ValueError:
                continue
            if not INT64_MIN <= number <= INT64_MAX:
                raise ApiError(
                    400,
                    f"{where} parameter {name}: {raw} is outside the 64-bit integer range "
                    f"[{INT64_MIN}, {INT64_MAX}]",
                )
