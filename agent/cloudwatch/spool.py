"""The on-disk spool: every line to ship is written here first and leaves only once CloudWatch
has accepted it, so a restart of the process or an outage of CloudWatch loses nothing.

How the disk behaves, and what the spool does about it:

- A directory of append-only segment files ``<n>.spool``. Each line of a segment is a frame:
  a JSON object ``{stream: [[timestamp ms, message], ...]}`` (order matters within a stream
  only), written with one ``write()``.
  Data written is in the kernel's page cache, so a process killed with SIGKILL loses none of
  it; a power cut may lose the last seconds (frames are not fsynced one by one).
- A process always writes to a fresh segment, so a frame torn by a crash (a line without its
  ``\\n``, or that does not parse) stays at the end of an old segment, where the reader skips
  and counts it.
- ``cursor.json`` (replaced atomically: temporary file, then rename) says where reading resumes
  and, while a chunk is half shipped, how far each stream of that chunk got, so a stop between
  two batches neither repeats nor loses a line. Segments wholly before the cursor are deleted.
- The spool is bounded (:data:`SPOOL_MAX_BYTES`): when an append would cross the bound, the
  oldest segments are deleted and their unread records counted as lost. That happens only
  after a long CloudWatch outage with heavy logging; the newest lines, which explain how an
  instance ended, are the ones kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

SEGMENT_BYTES = 8 * 1024 * 1024  # a segment takes no more frames past this size
SPOOL_MAX_BYTES = 1024 * 1024 * 1024  # all segments together
CURSOR_FILE = "cursor.json"
SEGMENT_SUFFIX = ".spool"

Line = tuple[int, str]  # timestamp in ms since the epoch, message
Frame = Mapping[str, Sequence[Line]]  # lines by stream


@dataclass(frozen=True, order=True, slots=True)
class Position:
    segment: int
    offset: int


@dataclass(slots=True)
class Chunk:
    """Lines read from ``start`` up to ``end`` (exclusive), by stream, in the order written."""

    streams: dict[str, list[Line]]
    count: int  # lines
    start: Position
    end: Position
    size: int  # bytes read


@dataclass(slots=True)
class Cursor:
    """Where reading resumes; while a chunk is half shipped, its end and, per stream, how many
    of that stream's lines in the chunk are done."""

    position: Position
    chunk_end: Position | None = None
    progress: dict[str, int] = field(default_factory=dict)


class Spool:
    """One directory, one writer thread and one reader thread (any number of threads may call
    it; a lock serialises file access). Not for two processes at once."""

    def __init__(
        self, directory: Path, max_bytes: int = SPOOL_MAX_BYTES, segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.torn_frames = 0  # frames skipped because a crash cut them short
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[int, int] = {}
        for path in directory.glob("*" + SEGMENT_SUFFIX):
            with contextlib.suppress(ValueError):
                self._sizes[int(path.stem)] = path.stat().st_size
        self.cursor = self._load_cursor()
        self._handed = self.cursor.position  # the furthest position given to the reader
        self._write_index = max(self._sizes, default=0) + 1
        self._writer: IO[bytes] | None = None

    # ---- writing ------------------------------------------------------------------------------

    def append(self, frame: Frame) -> tuple[int, int]:
        """Write ``frame``; returns its size in bytes and how many unread lines were deleted to
        make room (0 unless the spool is full). Raises ``OSError`` if the disk refuses it."""
        data = (json.dumps(frame, separators=(",", ":")) + "\n").encode("ascii")
        with self._lock:
            lost = self._make_room(len(data))
            if self._writer is None or self._sizes[self._write_index] >= self.segment_bytes:
                self._rotate()
            assert self._writer is not None
            try:
                self._writer.write(data)
                self._writer.flush()
            finally:
                self._sizes[self._write_index] = self._writer.tell()
            return len(data), lost

    def _rotate(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._write_index += 1
        self._writer = self._path(self._write_index).open("ab")
        self._sizes[self._write_index] = self._writer.tell()

    def _make_room(self, needed: int) -> int:
        lost = 0
        while self._sizes and sum(self._sizes.values()) + needed > self.max_bytes:
            oldest = min(self._sizes)
            if oldest == self._write_index and self._writer is not None:
                self._writer.close()
                self._writer = None
                self._write_index += 1
            lost += self._discard(oldest)
        return lost

    def _discard(self, index: int) -> int:
        """Delete segment ``index``; count its lines the reader has not been given."""
        start = self._handed.offset if index == self._handed.segment else 0
        unread = 0
        if index >= self._handed.segment:
            with contextlib.suppress(OSError), self._path(index).open("rb") as segment:
                segment.seek(start)
                for line in segment:
                    with contextlib.suppress(ValueError, AttributeError, TypeError):
                        unread += sum(len(lines) for lines in json.loads(line).values())
        with contextlib.suppress(FileNotFoundError):
            self._path(index).unlink()
        del self._sizes[index]
        return unread

    # ---- reading ------------------------------------------------------------------------------

    def has_unread(self, position: Position) -> bool:
        with self._lock:
            return any(
                size > (position.offset if index == position.segment else 0)
                for index, size in self._sizes.items()
                if index >= position.segment
            )

    def read(
        self,
        start: Position,
        max_lines: int,
        max_bytes: int,
        end: Position | None = None,
    ) -> Chunk:
        """Whole frames from ``start``: until ``end`` if given, else until ``max_lines`` or
        ``max_bytes`` is reached or nothing more is written."""
        streams: dict[str, list[Line]] = {}
        count = read_bytes = 0
        position = start
        with self._lock:
            for index in sorted(i for i in self._sizes if i >= start.segment):
                if end is not None and index > end.segment:
                    break
                offset = start.offset if index == start.segment else 0
                stop = end.offset if end is not None and index == end.segment else None
                with self._path(index).open("rb") as segment:
                    segment.seek(offset)
                    while (stop is None or offset < stop) and (line := segment.readline()):
                        offset += len(line)
                        for stream, lines in self._parse(line, index).items():
                            streams.setdefault(stream, []).extend(lines)
                            count += len(lines)
                        read_bytes += len(line)
                        if end is None and (count >= max_lines or read_bytes >= max_bytes):
                            at = Position(index, offset)
                            return self._hand(Chunk(streams, count, start, at, read_bytes))
                position = Position(index, offset)
                if index != self._write_index and (end is None or index < end.segment):
                    position = Position(index + 1, 0)  # this segment is used up
            return self._hand(Chunk(streams, count, start, end or position, read_bytes))

    def _parse(self, line: bytes, index: int) -> dict[str, Any]:
        try:
            if not line.endswith(b"\n"):
                raise ValueError("no end of line")
            frame = json.loads(line)
            if not isinstance(frame, dict):
                raise ValueError("not an object")
            return frame
        except ValueError as e:
            self.torn_frames += 1
            log.warning("skipping a damaged frame in %s (%s)", self._path(index), e)
            return {}

    def _hand(self, chunk: Chunk) -> Chunk:
        self._handed = max(self._handed, chunk.end)
        return chunk

    # ---- the cursor ---------------------------------------------------------------------------

    def save_progress(self, chunk_end: Position, progress: dict[str, int]) -> None:
        """Record that the chunk ending at ``chunk_end`` is shipped up to ``progress``."""
        with self._lock:
            self.cursor = Cursor(self.cursor.position, chunk_end, dict(progress))
            self._save_cursor()

    def commit(self, position: Position) -> None:
        """Everything before ``position`` is shipped: move the cursor, delete used segments."""
        with self._lock:
            self.cursor = Cursor(position)
            self._save_cursor()
            for index in [i for i in self._sizes if i < position.segment]:
                if index != self._write_index:
                    with contextlib.suppress(FileNotFoundError):
                        self._path(index).unlink()
                    del self._sizes[index]

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def _path(self, index: int) -> Path:
        return self.directory / f"{index:012d}{SEGMENT_SUFFIX}"

    def _save_cursor(self) -> None:
        cursor = self.cursor
        data = {
            "segment": cursor.position.segment,
            "offset": cursor.position.offset,
            "chunk_end": None
            if cursor.chunk_end is None
            else [cursor.chunk_end.segment, cursor.chunk_end.offset],
            "progress": cursor.progress,
        }
        temporary = self.directory / (CURSOR_FILE + ".tmp")
        temporary.write_text(json.dumps(data))
        os.replace(temporary, self.directory / CURSOR_FILE)

    def _load_cursor(self) -> Cursor:
        path = self.directory / CURSOR_FILE
        try:
            data = json.loads(path.read_text())
            chunk_end = data.get("chunk_end")
            return Cursor(
                Position(int(data["segment"]), int(data["offset"])),
                None if chunk_end is None else Position(int(chunk_end[0]), int(chunk_end[1])),
                {str(k): int(v) for k, v in (data.get("progress") or {}).items()},
            )
        except FileNotFoundError:
            return Cursor(Position(0, 0))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            log.warning("unreadable %s (%s); shipping the whole spool again", path, e)
            return Cursor(Position(0, 0))
