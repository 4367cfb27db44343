"""Error responses in Determined's shape.

Determined's gRPC gateway answers errors as ``{"code": <grpc code>, "message": …, "details": []}``
and its client reads ``message`` for 403/404 but ``error.error`` for every other status; we send
both, with the HTTP status Determined uses. Validation errors become 400 with the exact field
path in the message.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# gRPC status codes, as Determined's gateway reports them.
GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 412: 9, 500: 13, 501: 12, 503: 14}
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status)


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
        return error_response(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_validation_error(list(exc.errors())))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback by the server; the caller gets one line saying what broke.
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))
