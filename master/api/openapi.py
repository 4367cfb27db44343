"""How routes describe themselves in the OpenAPI schema: the error body every error answers
with, which errors each operation lists, streamed and binary content types, and dropping
FastAPI's 422 (validation errors are 400 here). The response bodies themselves are in
:mod:`master.api.schemas`.

Every operation lists the errors it can answer, in ``master.api.errors.error_body``'s shape:
the routers get ``API_ERRORS`` (or ``PUBLIC_ERRORS``) where ``master.app`` includes them, and a
route adds the ones only it can send (404 for a path that names something, 409, 429).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

NDJSON = "application/x-ndjson"
TAR = "application/x-tar"


class Shape(BaseModel):
    """A response body as the routes send it: camelCase field names on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


# ---- errors --------------------------------------------------------------------------------------


class ErrorDetail(Shape):
    code: int
    reason: str
    error: str


class ErrorBody(Shape):
    """``master.api.errors.error_body``: Determined's client reads ``message`` for 403/404 and
    ``error.error`` for every other status."""

    code: int
    message: str
    details: list[Any]
    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    400: "The request is invalid: the message names the parameter or field and what is allowed.",
    401: "No valid credentials: log in, or use the task's own token where the route needs it.",
    403: "Authenticated, but not allowed: an admin route, another user's object, a scoped token.",
    404: "What the path names does not exist.",
    409: "The object is not in a state that allows this.",
    413: "The request body is larger than the master accepts.",
    429: "Too many attempts; retry after the seconds in Retry-After.",
    500: "An unexpected error; the message carries an error id the master logged.",
    503: "Not available right now: the password checker is saturated (login, with "
    "Retry-After), or the task's service is not ready yet (the message says what it is doing).",
}

_RETRY_AFTER = {
    "description": "Seconds until the next attempt may succeed.",
    "schema": {"type": "integer", "minimum": 0},
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for ``statuses``, each with the error body's schema."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        responses[status] = {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[status]}
        if status in (429, 503):
            responses[status]["headers"] = {"Retry-After": _RETRY_AFTER}
    return responses


# Every API router: bad parameters or bodies, missing or insufficient credentials, oversized
# bodies, unexpected errors. Routes add 404, 409 and 429 where they can send them.
API_ERRORS = error_responses(400, 401, 403, 413, 500)
# Routers that need no credentials (``/info``): everything but 401 and 403.
PUBLIC_ERRORS = error_responses(400, 413, 500)


def documented(model: type[BaseModel] | None, *statuses: int) -> dict[str, Any]:
    """Route keyword arguments: a JSON 200 described by ``model`` (returned as the route built
    it) and the extra error ``statuses`` this route can answer."""
    ok: dict[str, Any] = {"model": model} if model is not None else {}
    return {"response_model": None, "responses": {200: ok, **error_responses(*statuses)}}


def inline_schema(
    model: type[BaseModel], mode: Literal["validation", "serialization"] = "serialization"
) -> dict[str, Any]:
    """``model``'s JSON schema (camelCase) with its nested models written in place, for bodies
    FastAPI does not register models for (a stream's line, a body a route reads itself)."""
    schema = model.model_json_schema(by_alias=True, mode=mode)
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def streamed(media_type: str, schema: dict[str, Any], *statuses: int) -> dict[str, Any]:
    """Route keyword arguments for a streamed 200 of ``media_type`` whose body (for NDJSON:
    each line) has ``schema``; no ``application/json`` is listed for it."""
    content = {media_type: {"schema": schema}}
    return {
        "response_model": None,
        "response_class": StreamingResponse,
        "responses": {200: {"content": content}, **error_responses(*statuses)},
    }


def without_validation_errors(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that drops FastAPI's 422 responses (and their schemas):
    the master answers validation errors with 400 (``master.api.errors``), never 422."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
