"""A small synchronous REST client for the Flotilla master.

The master speaks Determined's REST dialect: JSON bodies with camelCase field names under
``/api/v1``, opaque bearer tokens, and errors as non-2xx responses. Error bodies come in several
shapes depending on which layer produced them, and all of them are reduced here to one
:class:`APIError` carrying the HTTP status and one human sentence:

- ``{"code": <grpc code>, "message": "...", "details": []}`` (grpc-gateway style, Determined's);
- ``{"error": {"error": "..."}}`` (Determined's older echo style);
- ``{"detail": "..."}`` or ``{"detail": [{"loc": [...], "msg": "..."}]}`` (FastAPI's defaults);
- plain text (proxies, crashes).

Streams (``/api/v1/tasks/{id}/logs?follow=true``) are newline-delimited JSON, one
``{"result": ...}`` per line; a ``{"error": ...}`` line mid-stream is raised like a non-2xx
response. A follow stream may stay silent for as long as the task prints nothing, so streams have
no read timeout.

Passwords never travel in the clear when we can help it: like Determined's client, we send
``isHashed: true`` with :func:`salted_password` applied, and the master stores a slow hash of that.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib import parse

import httpx

# Determined's client-side salt (determined/common/api/authentication.py, PASSWORD_SALT). The
# master only ever sees sha512(salt + password) hex digests, so the value must match Determined's
# for a Determined CLI and ours to log in to the same accounts.
PASSWORD_SALT = "GubPEmmotfiK9TMD6Zdw"

DEFAULT_MASTER = "localhost:8080"
# Per-request timeout for ordinary calls; log streams set no read timeout (see module docstring).
DEFAULT_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
USER_AGENT = "flotilla-cli"

JSON = dict[str, Any]


def salted_password(password: str) -> str:
    """Return the hex sha512 of Determined's salt + ``password``; a blank password stays blank.

    Identical to Determined's ``salt_and_hash``: the blank password is sent as ``""`` even with
    ``isHashed: true``, so the master must treat ``""`` as "no password", not as a digest.
    """
    if not password:
        return password
    return hashlib.sha512((PASSWORD_SALT + password).encode()).hexdigest()


def canonicalize_master_url(url: str) -> str:
    """Normalise a user-given master address the way Determined does.

    ``host`` and ``host:port`` get ``http://`` (and port 8080 when none is given); ``http://host``
    gets port 80 and ``https://host`` port 443; a trailing ``/`` is dropped. Raises ValueError for
    an empty host, for a path (``host:8080/api/v1``: the API paths are the client's to add), or
    for credentials, a query or a fragment in the URL. The result is the key of
    the token cache, so one master has one spelling.
    """
    url = url.strip()
    if url.startswith("https://"):
        default_port = 443
    elif url.startswith("http://"):
        default_port = 80
    else:
        if "://" in url:
            raise ValueError(f"invalid master url {url!r}: only http:// and https:// are supported")
        url = f"http://{url}"
        default_port = 8080
    parsed = parse.urlparse(url)
    try:
        port = parsed.port or default_port
    except ValueError as e:
        raise ValueError(f"invalid master url {url!r}: {e}") from None
    if not parsed.hostname:
        raise ValueError(f"invalid master url {url!r}: the host is empty")
    if parsed.username or parsed.password or parsed.query or parsed.fragment:
        raise ValueError(
            f"invalid master url {url!r}: it must not contain a username, password, query or "
            "fragment"
        )
    if parsed.path.strip("/"):
        raise ValueError(
            f"invalid master url {url!r}: the master URL must not have a path "
            f"({parsed.path!r}); give only the scheme, host and port, e.g. "
            f"{parsed.scheme}://{parsed.netloc}"
        )
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{parsed.scheme}://{host}:{port}"


class ClientError(Exception):
    """Anything that went wrong talking to the master; ``message`` is one line for a human."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class MasterUnreachableError(ClientError):
    """No HTTP answer at all: refused, unresolvable, timed out or cut off mid-stream."""

    def __init__(self, master: str, reason: str) -> None:
        super().__init__(f"cannot reach the master at {master}: {reason}")
        self.master = master
        self.reason = reason


class APIError(ClientError):
    """The master answered with a non-2xx status (or an error line in a stream)."""

    def __init__(self, status: int, message: str, *, code: int | None = None, path: str = ""):
        super().__init__(message)
        self.status = status
        self.code = code
        self.path = path


class BadRequestError(APIError):
    """400/422: the request was malformed; the message names the offending field."""


class UnauthenticatedError(APIError):
    """401: no token, or an expired/revoked one."""


class ForbiddenError(APIError):
    """403: authenticated, but not allowed; the message says what permission is missing."""


class NotFoundError(APIError):
    """404: the addressed object does not exist (or is hidden from this user)."""


class ConflictError(APIError):
    """409: the object exists already, or is in a state that forbids the change."""


_ERROR_CLASSES: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: UnauthenticatedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    422: BadRequestError,
}


def error_for(status: int, body: Any, *, path: str = "", text: str = "") -> APIError:
    """Build the :class:`APIError` subclass for ``status`` from any of the known body shapes."""
    message, code = _error_message(body)
    if not message:
        message = text.strip().splitlines()[0] if text.strip() else _reason_phrase(status)
    return _ERROR_CLASSES.get(status, APIError)(status, message, code=code, path=path)


def _error_message(body: Any) -> tuple[str, int | None]:
    if not isinstance(body, Mapping):
        return "", None
    code = body.get("code") if isinstance(body.get("code"), int) else None
    if isinstance(body.get("message"), str) and body["message"]:
        return body["message"], code
    error = body.get("error")
    if isinstance(error, Mapping):
        for key in ("error", "message"):
            if isinstance(error.get(key), str) and error[key]:
                return error[key], code
    if isinstance(error, str) and error:
        return error, code
    detail = body.get("detail")
    if isinstance(detail, str):
        return detail, code
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail:
            if not isinstance(item, Mapping):
                parts.append(str(item))
                continue
            loc = [str(p) for p in item.get("loc", []) if p not in ("body", "query", "path")]
            msg = str(item.get("msg", "invalid value"))
            parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
        return "; ".join(parts), code
    return "", code


def _reason_phrase(status: int) -> str:
    try:
        return f"HTTP {status} {httpx.codes(status).name.replace('_', ' ').lower()}"
    except ValueError:
        return f"HTTP {status}"


_ERRNO_PREFIX = re.compile(r"^\[Errno -?\d+\]\s*")


def _transport_reason(e: httpx.TransportError) -> str:
    if isinstance(e, httpx.ConnectTimeout):
        return "timed out while connecting"
    if isinstance(e, httpx.TimeoutException):
        return "timed out waiting for an answer"
    if isinstance(e, httpx.RemoteProtocolError):
        return "the connection was closed unexpectedly"
    text = str(e).strip() or type(e).__name__
    # "[Errno 111] Connection refused" -> "connection refused"; keep the last (innermost) part.
    text = _ERRNO_PREFIX.sub("", text.split(": ")[-1] if "[Errno" in text else text)
    return text[:1].lower() + text[1:]


def tls_verify(master: str) -> ssl.SSLContext | bool:
    """httpx's ``verify`` for a client of ``master`` (a canonical URL).

    ``https://``: ``True``, httpx's verification against certifi's CA bundle (or
    ``SSL_CERT_FILE``/``SSL_CERT_DIR``). ``http://``: no TLS is ever spoken (requests go to
    ``master``; redirects are not followed), yet httpx would load that bundle at every client's
    creation (20-40 ms). So such a client gets a context that trusts no certificate authority but
    still verifies: were it ever used, every certificate would be refused, none accepted blindly.
    """
    if not master.startswith("http://"):
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname


@dataclass(frozen=True)
class LoginResult:
    """A fresh session token and the user it belongs to (the master's User object)."""

    token: str
    user: JSON


# An upload with progress goes out in pieces of this size.
UPLOAD_CHUNK_BYTES = 256 * 1024


def _chunks(data: bytes, on_sent: Callable[[int], None]) -> Iterator[bytes]:
    for start in range(0, len(data), UPLOAD_CHUNK_BYTES):
        chunk = data[start : start + UPLOAD_CHUNK_BYTES]
        yield chunk
        on_sent(len(chunk))


class MasterClient:
    """Sync client for one master. Threads may share it (its ``httpx.Client`` may be shared
    between threads) as long as none of them changes ``token`` meanwhile.

    ``token`` may be set or replaced at any time; it is sent as ``Authorization: Bearer``.
    Every method raises :class:`MasterUnreachableError` or an :class:`APIError` subclass, never a
    raw httpx exception. ``transport`` exists for tests (``httpx.MockTransport``).
    """

    def __init__(
        self,
        master: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.master = canonicalize_master_url(master)
        self.token = token
        self._http = httpx.Client(
            base_url=self.master,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_SECONDS)),
            transport=transport,
            headers={"User-Agent": USER_AGENT},
            verify=tls_verify(self.master),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MasterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- generic JSON helpers -----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        on_sent: Callable[[int], None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request and return its decoded JSON body (``{}`` for an empty body).

        With ``on_sent``, the body goes out in chunks of :data:`UPLOAD_CHUNK_BYTES` and
        ``on_sent(n)`` is called as each leaves (a progress bar of an upload). ``headers`` are
        sent besides the token's (e.g. ``Idempotency-Key``)."""
        extra = dict(headers or {})
        if on_sent is not None and json_body is not None:
            data = json.dumps(json_body).encode()
            sent_headers = {
                **self._auth_headers(),
                **extra,
                "Content-Type": "application/json",
                "Content-Length": str(len(data)),
            }
            content: Any = _chunks(data, on_sent)
            json_body = None
        else:
            sent_headers, content = {**self._auth_headers(), **extra}, None
        with self._translate_transport_errors():
            response = self._http.request(
                method,
                path,
                params=_clean_params(params),
                json=json_body,
                content=content,
                headers=sent_headers,
            )
        self._raise_for_status(response)
        if not response.content.strip():
            return {}
        try:
            return response.json()
        except ValueError:
            raise APIError(
                response.status_code,
                f"the master sent a response that is not JSON for {method} {path}",
                path=path,
            ) from None

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(
        self,
        path: str,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        on_sent: Callable[[int], None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        return self.request(
            "POST", path, params=params, json_body=body, on_sent=on_sent, headers=headers
        )

    def patch(self, path: str, body: Any = None) -> Any:
        return self.request("PATCH", path, json_body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def stream_lines(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Yield each ndjson line's ``result`` (or the whole line if it has none) until EOF."""
        timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT_SECONDS)
        with (
            self._translate_transport_errors(),
            self._http.stream(
                "GET",
                path,
                params=_clean_params(params),
                headers=self._auth_headers(),
                timeout=timeout,
            ) as response,
        ):
            if response.status_code >= 400:
                response.read()
                self._raise_for_status(response)
            for line in response.iter_lines():
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    raise APIError(
                        response.status_code, f"malformed line in the stream from {path}: {line!r}"
                    ) from None
                if isinstance(item, dict) and "result" in item:
                    yield item["result"]
                elif isinstance(item, dict) and "error" in item:
                    raise error_for(_stream_error_status(item["error"]), item, path=path)
                else:
                    yield item

    # ---- typed endpoints the CLI and harness share --------------------------------------------

    def info(self) -> JSON:
        """``GET /info``: version, masterId, clusterId, clusterName; needs no token."""
        result: JSON = self.get("/info")
        return result

    def login(self, username: str, password: str) -> LoginResult:
        """Exchange a username and a clear-text password for a token (sent salted and hashed).

        Does not store the token on this client; callers decide whether to use or cache it.
        """
        body = {"username": username, "password": salted_password(password), "isHashed": True}
        resp = self.post("/api/v1/auth/login", body)
        return LoginResult(token=str(resp["token"]), user=dict(resp.get("user") or {}))

    def logout(self) -> None:
        self.post("/api/v1/auth/logout")

    def me(self) -> JSON:
        user: JSON = self.get("/api/v1/me")["user"]
        return user

    # ---- internals ----------------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            body = response.json()
        except ValueError:
            body = None
        raise error_for(response.status_code, body, path=response.url.path, text=response.text)

    @contextmanager
    def _translate_transport_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.TransportError as e:
            raise MasterUnreachableError(self.master, _transport_reason(e)) from e


def _clean_params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Drop None values and spell booleans as Determined's gateway expects (``true``/``false``)."""
    if params is None:
        return None
    cleaned: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        cleaned[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return cleaned


def _stream_error_status(error: Any) -> int:
    """Map an in-stream error's grpc code (if any) to the HTTP status the gateway would use."""
    if not isinstance(error, Mapping):
        return 500
    if isinstance(error.get("httpCode"), int):
        return int(error["httpCode"])
    grpc_to_http = {3: 400, 5: 404, 6: 409, 7: 403, 9: 400, 16: 401}
    code = error.get("grpcCode", error.get("code"))
    return grpc_to_http.get(code, 500) if isinstance(code, int) else 500
