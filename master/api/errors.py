"""Error responses in Determined's shape.

Determined's gRPC gateway answers errors as ``{"code": <grpc code>, "message": …, "details": []}``
and its client reads ``message`` for 403/404 but ``error.error`` for every other status; we send
both, with the HTTP status Determined uses. Validation errors become 400 with the exact field
path in the message.

An unexpected exception is answered by :class:`UnexpectedErrorMiddleware`, not by Starlette's
``ServerErrorMiddleware``: that one sends its 500 and then re-raises, and the server, seeing an
exception, drops the keep-alive connection without ``Connection: close``, so the client's next
request on it fails. Ours sits below it, answers 500 in Determined's shape with an error id,
logs the traceback once under that id, and returns normally, so the connection stays usable.
A database that could not be reached (the driver's ``OperationalError``: a PostgreSQL restart
ended the transaction, or the server stayed away past ``db_unavailable_wait``) is answered with
503 and ``Retry-After`` instead: nothing is wrong with the request, and repeating it may succeed.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
DATABASE_RETRY_AFTER_SECONDS = 1

# gRPC status codes, as Determined's gateway reports them.
GRPC_CODES = {
    400: 3,
    401: 16,
    403: 7,
    404: 5,
    409: 6,
    412: 9,
    413: 8,
    429: 8,
    500: 13,
    501: 12,
    503: 14,
}
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class ApiError(Exception):
    """An answer in Determined's error shape; ``headers`` go with it (e.g. ``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)


def error_body(status: int, message: str) -> dict[str, Any]:
    """Determined's client reads ``message`` for 403/404 and ``error.error`` for the rest."""
    code = GRPC_CODES.get(status, 2)
    return {
        "code": code,
        "message": message,
        "details": [],
        "error": {"code": code, "reason": _REASONS.get(status, "Error"), "error": message},
    }


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def describe_validation_error(errors: list[Any]) -> str:
    parts = []
    for item in errors:
        loc = [str(p) for p in item.get("loc", ()) if p != "body"]
        path = ".".join(loc) or "body"
        message = item.get("msg", "invalid")
        if item.get("type") == "json_invalid":
            message = f"malformed JSON ({item.get('ctx', {}).get('error', 'invalid')})"
            path = "body"
        parts.append(f"{path}: {message}")
    return "invalid request: " + "; ".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))


class UnexpectedErrorMiddleware:
    """Answers any exception escaping an HTTP route with 500 in Determined's shape.

    The body names an error id (``error <hex>``) and the exception's type; the master logs the
    traceback once under the same id. If the response had already started, nothing can be sent:
    the exception is logged and the response ends where it stopped (the server then closes the
    connection, since the body is incomplete).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            error_id = uuid.uuid4().hex
            log.exception(
                "error %s: %s %s failed: %s: %s",
                error_id,
                scope.get("method"),
                scope.get("path"),
                type(exc).__name__,
                exc,
            )
            if started:
                return
            if isinstance(exc, OperationalError):
                message = f"the database is unavailable (error {error_id}); retry"
                headers = {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
                await error_response(503, message, headers)(scope, receive, send)
                return
            message = f"internal error {error_id}: {type(exc).__name__} (see the master's log)"
            await error_response(500, message)(scope, receive, send)
