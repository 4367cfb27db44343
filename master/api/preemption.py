"""``/api/v1/allocations/{id}/signals/…``: whether a running task should checkpoint and exit.

The harness long-polls ``preemption``; the experiment engine raises the signal when it pauses an
experiment or the scheduler wants a trial's slots. Only the allocation's own token may ask.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from master.api.allocations import require_task_token
from master.api.experiments import engine_of
from master.api.openapi import documented
from master.api.schemas import Empty, Preemption

router = APIRouter(prefix="/api/v1/allocations")

# Longest a single long poll is held open; the harness asks again.
MAX_WAIT_SECONDS = 60


@router.get("/{allocation_id}/signals/preemption", **documented(Preemption, 404))
async def preemption_signal(
    allocation_id: str,
    request: Request,
    timeout_seconds: int = Query(0, alias="timeoutSeconds", ge=0),
) -> dict[str, Any]:
    """``{"preempt": bool}``, waiting up to ``timeoutSeconds`` (at most 60) for a signal."""
    await require_task_token(request, allocation_id)
    signals = engine_of(request).signals
    wait = min(timeout_seconds, MAX_WAIT_SECONDS)
    return {"preempt": await signals.wait(allocation_id, wait)}


@router.post("/{allocation_id}/signals/ack_preemption", **documented(Empty, 404))
async def ack_preemption(allocation_id: str, request: Request) -> dict[str, Any]:
    """The task heard the signal and is checkpointing on its way out."""
    await require_task_token(request, allocation_id)
    engine_of(request).signals.ack(allocation_id)
    return {}
