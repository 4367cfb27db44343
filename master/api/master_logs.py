"""``GET /api/v1/master/config`` and ``GET /api/v1/master/logs``: what ``det master config``
and ``det master logs`` read, on Determined's paths and shapes, for administrators.

The config is the one the master runs with, every default filled in, with secrets replaced by
``********`` (passwords, keys, tokens, a database URL's password). The logs are the master's
recent log records (:mod:`master.log_buffer`), as Determined's ``v1LogEntry`` lines of
newline-delimited JSON; ``offset`` negative is the last N, ``follow`` keeps the stream open.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import make_url

from master import auth, models
from master.api.openapi import NDJSON, documented, inline_schema, streamed
from master.api.schemas import MasterConfigReply, MasterLogLine
from master.api.wire import timestamp
from master.log_buffer import MasterLogBuffer, MasterLogEntry
from master.state import MasterState

router = APIRouter(prefix="/api/v1/master")

REDACTED = "********"
SECRET_KEYS = frozenset(
    {"password", "secret_key", "access_key", "agent_join_token", "token", "session_token"}
)
FOLLOW_POLL_SECONDS = 0.5


def redacted(value: Any, key: str = "") -> Any:
    """``value`` with every secret replaced (see the module docstring)."""
    if isinstance(value, dict):
        return {k: redacted(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    if key in SECRET_KEYS and value not in (None, ""):
        return REDACTED
    if key == "url" and isinstance(value, str) and "@" in value:
        try:
            return make_url(value).render_as_string(hide_password=True)
        except Exception:
            return REDACTED
    return value


@router.get("/config", **documented(MasterConfigReply, 403))
def master_config(request: Request, _: models.User = Depends(auth.admin_user)) -> dict[str, Any]:
    state: MasterState = request.app.state.master
    return {"config": redacted(state.config.model_dump(mode="json"))}


@router.get("/logs", **streamed(NDJSON, inline_schema(MasterLogLine), 403))
async def master_logs(
    request: Request,
    follow: bool = False,
    offset: int = Query(0),
    limit: int = Query(0, ge=0),
    _: models.User = Depends(auth.admin_user),
) -> StreamingResponse:
    buffer: MasterLogBuffer = request.app.state.master_logs
    tail = -offset if offset < 0 else None
    first = buffer.entries(tail=tail)
    if offset > 0:
        first = first[offset:]
    if limit:
        first = first[:limit]

    # Following goes on after what was shown, or after everything there was if nothing was.
    start_after = first[-1].id if first else buffer.last_id()

    async def lines() -> AsyncIterator[bytes]:
        last = start_after
        for entry in first:
            yield _line(entry)
        while follow and not await request.is_disconnected():
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
            for entry in buffer.entries(after_id=last):
                yield _line(entry)
                last = entry.id

    return StreamingResponse(lines(), media_type=NDJSON)


def _line(entry: MasterLogEntry) -> bytes:
    log_entry = {
        "id": entry.id,
        "timestamp": timestamp(entry.timestamp),
        "level": entry.level,
        "message": entry.message,
    }
    return (json.dumps({"result": {"logEntry": log_entry}}) + "\n").encode()
