"""Shapes shared by the routers: Determined's JSON (camelCase, RFC 3339 UTC timestamps)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Response
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from master import models

# Determined's protobuf int64: every integer on the wire fits it (the database's BIGINT too).
# Request bodies and integer path/query parameters are already bounded app-wide
# (master.api.body); annotate fields with Int64 so the OpenAPI schema says so.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class WireModel(BaseModel):
    """A request body: camelCase on the wire (snake_case accepted), unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


def json_bytes(content: Any) -> bytes:
    """``content`` as Starlette's JSONResponse writes it, at C speed: FastAPI's
    ``jsonable_encoder`` (run on every dict a route returns, on the event loop) walks each value
    in Python; here only values ``json`` cannot write go through it."""
    return json.dumps(
        content,
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
        default=jsonable_encoder,
    ).encode()


def json_response(content: Any) -> Response:
    """A 200 of ``content`` for the busiest routes (build it in a thread when it is big)."""
    return Response(json_bytes(content), media_type="application/json")


def timestamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def user_json(user: models.User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "admin": user.admin,
        "active": user.active,
        "agentUserGroup": None,
        "displayName": user.display_name or "",
        "modifiedAt": timestamp(user.modified_at),
        "remote": user.remote,
        "lastAuthAt": timestamp(user.last_auth_at),
    }


# Determined's container states (``containerv1State``) for our allocation states; a queued
# allocation has no container.
CONTAINER_STATES = {
    "STATE_STARTING": "STATE_STARTING",
    "STATE_RUNNING": "STATE_RUNNING",
    "STATE_TERMINATING": "STATE_RUNNING",
    "STATE_TERMINATED": "STATE_TERMINATED",
}


def pagination(offset: int, limit: int, total: int) -> dict[str, int]:
    """Determined's v1Pagination; ``limit`` 0 means everything from ``offset``."""
    start = min(max(offset, 0), total)
    end = total if limit <= 0 else min(start + limit, total)
    return {"offset": offset, "limit": limit, "startIndex": start, "endIndex": end, "total": total}
