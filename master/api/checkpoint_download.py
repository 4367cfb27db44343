"""``GET /checkpoints/{uuid}``: the checkpoint download Determined's own clients ask for.

Determined's SDK and CLI (``Checkpoint.download(mode=DownloadMode.MASTER)``, ``det checkpoint
download --mode master``) fetch ``/checkpoints/{uuid}`` — outside ``/api/v1`` — with
``Accept: application/gzip`` and open the body with ``tarfile.open``, so it is the checkpoint's
tar, gzip-compressed on the fly. ``Accept: application/x-tar`` gets it uncompressed (what
``/api/v1/checkpoints/{uuid}/content`` sends). The tar itself is streamed as
``master.api.checkpoints`` produces it; nothing is held whole in memory.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse

from master import auth, models
from master.api.checkpoints import checkpoint_content
from master.api.errors import bad_request
from master.api.openapi import TAR, error_responses
from master.api.schemas import BINARY

router = APIRouter()

GZIP = "application/gzip"
# zlib's wbits for a gzip header and trailer around a deflate stream.
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_GZIP_LEVEL = 6


def media_type_for(accept: str) -> str:
    """``application/gzip`` unless the client asks only for ``application/x-tar``."""
    wanted = {part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()}
    if not wanted or wanted & {GZIP, "application/x-gzip", "*/*", "application/*"}:
        return GZIP
    if TAR in wanted:
        return TAR
    raise bad_request(
        f"Accept: {accept!r}; a checkpoint is sent as {GZIP} (a gzipped tar) or {TAR}"
    )


async def gzipped(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    async for chunk in chunks:
        compressed = compressor.compress(chunk)
        if compressed:
            yield compressed
    yield compressor.flush()


@router.get(
    "/checkpoints/{uuid}",
    response_model=None,
    response_class=StreamingResponse,
    responses={
        200: {"content": {GZIP: {"schema": BINARY}, TAR: {"schema": BINARY}}},
        **error_responses(404, 409),
    },
)
async def download_checkpoint(
    uuid: str,
    request: Request,
    accept: str = Header(GZIP),
    user: models.User = Depends(auth.current_user),
) -> StreamingResponse:
    """The checkpoint's files as a tar (gzipped unless ``Accept`` asks for x-tar), paths
    relative to the checkpoint."""
    media_type = media_type_for(accept)
    tar = await checkpoint_content(uuid, request, user)
    if media_type == TAR:
        return tar
    body: Any = tar.body_iterator
    return StreamingResponse(
        gzipped(body),
        media_type=GZIP,
        headers={"Content-Disposition": f'attachment; filename="{uuid}.tar.gz"'},
    )
