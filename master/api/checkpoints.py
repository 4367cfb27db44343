"""``/api/v1/checkpoints``: a trial reports a checkpoint it stored; people describe one and
download it through the master (``det checkpoint download --mode master``) as a tar stream.

The master reads checkpoints with the same storage managers trials write with
(``harness.storage``): a shared_fs checkpoint is read in place, S3 and GCS ones are fetched to
a temporary directory first. The tar is produced on a worker thread and streamed as it is
written, so a large checkpoint never sits in the master's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tarfile
import threading
from collections.abc import AsyncIterator
from functools import partial
from typing import IO, Any, cast

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from harness.storage import CheckpointNotFound, build_storage
from master import auth, models
from master.api.errors import ApiError, not_found
from master.api.experiment_schemas import CheckpointReply
from master.api.experiments import master_state
from master.api.openapi import TAR, documented, streamed
from master.api.schemas import BINARY, Empty
from master.api.trial_reports import (
    COMPLETED,
    IDEMPOTENCY_HEADER,
    ReportCheckpointRequest,
    check_checkpoint,
    idempotency_key,
    store_checkpoint,
    trial_token_for,
)
from master.experiments import views

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/checkpoints")

CHUNK_BYTES = 1 << 20
_QUEUE_CHUNKS = 8


def load_checkpoint(session: Session, uuid: str) -> models.Checkpoint:
    row = session.get(models.Checkpoint, uuid)
    if row is None:
        raise not_found(f"checkpoint {uuid}")
    return row


# ---- reporting -----------------------------------------------------------------------------------


@router.post("", **documented(Empty, 404, 409))
async def report_checkpoint(
    body: ReportCheckpointRequest,
    request: Request,
    key: str | None = Header(None, alias=IDEMPOTENCY_HEADER),
) -> dict[str, Any]:
    """A running trial stored a checkpoint; the next run of the trial resumes from it. Reporting
    it again (same uuid, or same ``Idempotency-Key``) changes nothing."""
    allocation_id, trial_id = await trial_token_for(request, None)
    checkpoint = body.checkpoint
    check_checkpoint(checkpoint, allocation_id, "checkpoint")
    state = master_state(request)
    await state.db.run(
        partial(
            store_checkpoint,
            body=checkpoint,
            trial_id=trial_id,
            allocation_id=allocation_id,
            now=state.clock(),
            key=idempotency_key(key),
        )
    )
    return {}


# ---- reading -------------------------------------------------------------------------------------


@router.get("/{uuid}", **documented(CheckpointReply, 404))
def get_checkpoint(
    uuid: str, request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    with master_state(request).db.session() as session:
        return {"checkpoint": views.checkpoints_json(session, [load_checkpoint(session, uuid)])[0]}


class _QueueWriter:
    """A write-only file handing chunks to the event loop; blocks while the reader lags."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[bytes | BaseException | None],
        stop: threading.Event,
    ) -> None:
        self.loop = loop
        self.queue = queue
        self.stop = stop
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= CHUNK_BYTES:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buffer:
            self.put(bytes(self.buffer))
            self.buffer.clear()

    def put(self, item: bytes | BaseException | None) -> None:
        while not self.stop.is_set():
            future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
            try:
                future.result(timeout=1.0)
                return
            except TimeoutError:
                future.cancel()
        raise ConnectionAbortedError("the download was abandoned")


def _write_tar(storage: dict[str, Any], uuid: str, writer: _QueueWriter) -> None:
    try:
        manager = build_storage(storage)
        stream = cast(IO[bytes], writer)
        with manager.restore_path(uuid) as root, tarfile.open(fileobj=stream, mode="w|") as tar:
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
        writer.flush()
        writer.put(None)
    except ConnectionAbortedError:
        return
    except BaseException as exc:
        with contextlib.suppress(ConnectionAbortedError):
            writer.put(exc)


@router.get("/{uuid}/content", **streamed(TAR, BINARY, 404, 409))
async def checkpoint_content(
    uuid: str, request: Request, _: models.User = Depends(auth.current_user)
) -> StreamingResponse:
    """The checkpoint's files as an uncompressed tar, paths relative to the checkpoint."""
    state = master_state(request)

    def read(session: Session) -> tuple[str, dict[str, Any]]:
        row = load_checkpoint(session, uuid)
        experiment = session.get_one(models.Experiment, row.experiment_id)
        return row.state, experiment.checkpoint_storage

    checkpoint_state, storage = await state.db.run(read)
    if checkpoint_state != COMPLETED:
        raise ApiError(
            409, f"checkpoint {uuid} is {checkpoint_state}: only {COMPLETED} ones have files"
        )
    try:
        await asyncio.to_thread(lambda: build_storage(storage).files(uuid))
    except CheckpointNotFound as exc:
        # Not the storage path: it is a place on the master's (or a bucket's) side.
        kind = storage.get("type", "its storage") if isinstance(storage, dict) else "its storage"
        raise ApiError(
            404, f"checkpoint {uuid}'s files are not in its checkpoint storage ({kind})"
        ) from exc

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=_QUEUE_CHUNKS)
    stop = threading.Event()
    writer = _QueueWriter(loop, queue, stop)
    producer = loop.run_in_executor(None, _write_tar, storage, uuid, writer)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    log.error("streaming checkpoint %s failed: %s", uuid, item)
                    raise item
                yield item
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await producer

    return StreamingResponse(
        chunks(),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{uuid}.tar"'},
    )
