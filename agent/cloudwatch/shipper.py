"""The shipper: a bounded in-memory queue, a thread that writes it to the spool, and a thread
that sends the spool to CloudWatch Logs in batches.

Why two threads: the spool writer never waits for the network, so lines reach the disk
within milliseconds even while the sender backs off from a throttled or unreachable
CloudWatch for minutes. The queue in front of the writer is bounded
(:data:`MAX_QUEUE_EVENTS`, :data:`MAX_QUEUE_CHARS`): producers that find it full wait for the
writer (backpressure) for as long as they said they could, then the line is counted as lost.

When the sender sends: as soon as a full batch is waiting (10,000 lines or 1 MiB), else when
the oldest waiting line is :data:`FLUSH_INTERVAL` old, or at once for :meth:`Shipper.flush` and
:meth:`Shipper.stop`. It reads a chunk of the spool, groups it by stream, lets the batcher cut
it into batches, puts them one by one, records per-stream progress in the spool's cursor after
each and commits the chunk at the end, so a stop or crash between batches repeats nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from agent.cloudwatch.batcher import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, Batch, assemble, max_age_ms
from agent.cloudwatch.sender import RETRY_MAX_DELAY, Abandoned, Counters, Sender, Stop
from agent.cloudwatch.spool import Chunk, Line, Spool

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 5.0  # seconds a line may wait for its batch to fill
CHUNK_MAX_LINES = 4 * MAX_BATCH_EVENTS  # lines read from the spool at once
CHUNK_MAX_BYTES = 4 * MAX_BATCH_BYTES
MAX_QUEUE_EVENTS = 100_000  # the in-memory queue in front of the spool
MAX_QUEUE_CHARS = 64 * 1024 * 1024
WRITE_COALESCE = 0.01  # seconds the spool writer waits after the first line of a frame
MAX_DROP_LOGS = 20  # dropped events logged one by one per chunk, then summed up
REPORT_INTERVAL = 600.0  # seconds between counter lines while lines are shipped
STOP_TIMEOUT = 10.0  # seconds stop() spends shipping what is left before leaving it spooled


class Shipper:
    """Ships ``(stream, timestamp ms, message)`` lines to one log group, in order per stream.

    :meth:`submit` never blocks longer than its ``wait``; a line it accepts is on disk within
    milliseconds and stays there until CloudWatch took it. ``log_group`` may be a callable,
    asked (and retried) on the sending thread until it answers, for names not known at start.
    """

    def __init__(
        self,
        spool: Spool,
        client: Any,
        log_group: str | Callable[[], str],
        retention_days: int | None,
        owns_group: bool,
        flush_interval: float = FLUSH_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = spool
        self.client = client
        self.counters = Counters()
        self.retention_days = retention_days
        self._stop = Stop()
        self.sender = Sender(
            client, log_group, retention_days, owns_group, self.counters, self._stop
        )
        self._flush_interval = flush_interval
        self._clock = clock
        self._queue: dict[str, list[Line]] = {}
        self._queued = 0
        self._queued_chars = 0
        self._queue_lock = threading.Lock()
        self._has_items = threading.Condition(self._queue_lock)
        self._has_room = threading.Condition(self._queue_lock)
        self._writing = False
        self._stalled = False  # a wait for room timed out; later lines do not wait
        self._work = threading.Condition()
        self._unread = 1 if spool.has_unread(spool.cursor.position) else 0
        self._unread_bytes = 0
        self._unread_since: float | None = float("-inf") if self._unread else None
        self._flushing = 0
        self._reported = time.monotonic()
        self._writer = threading.Thread(target=self._write_loop, name="cloudwatch-spool")
        self._sender = threading.Thread(target=self._send_loop, name="cloudwatch-ship")
        self._writer.daemon = self._sender.daemon = True

    # ---- producers ----------------------------------------------------------------------------

    def submit(self, stream: str, timestamp_ms: int, message: str, wait: float = 0.0) -> bool:
        """Queue one line; if the queue is full, wait up to ``wait`` seconds for room, else
        count the line as lost and return False."""
        with self._queue_lock:
            if self._full() and not self._wait_for_room(wait):
                self.counters.lost += 1
                return False
            lines = self._queue.get(stream)
            if lines is None:
                lines = self._queue[stream] = []
            lines.append((timestamp_ms, message))
            self._queued += 1
            self._queued_chars += len(message)
            if self._queued == 1:
                self._has_items.notify()
        return True

    def submit_many(self, stream: str, lines: Iterable[tuple[int, str]]) -> int:
        """Queue lines without waiting; returns how many were accepted."""
        return sum(self.submit(stream, timestamp, message) for timestamp, message in lines)

    def _full(self) -> bool:
        return self._queued >= MAX_QUEUE_EVENTS or self._queued_chars >= MAX_QUEUE_CHARS

    def _wait_for_room(self, wait: float) -> bool:
        if wait <= 0 or self._stalled or self.is_own_thread():
            return False
        deadline = time.monotonic() + wait
        while self._full():
            left = deadline - time.monotonic()
            if left <= 0:
                self._stalled = True
                return False
            self._has_room.wait(left)
        return True

    def is_own_thread(self) -> bool:
        return threading.current_thread() in (self._writer, self._sender)

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._writer.start()
        self._sender.start()

    def flush(self, timeout: float) -> bool:
        """Ship everything submitted so far now; True once it is all accepted (or dropped)."""
        deadline = time.monotonic() + timeout
        with self._work:
            self._flushing += 1
            self._work.notify_all()
        try:
            while time.monotonic() < deadline:
                if self._idle():
                    return True
                time.sleep(0.01)
            return self._idle()
        finally:
            with self._work:
                self._flushing -= 1

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Write the queue to the spool, ship for up to ``timeout`` seconds, then stop; what is
        left is shipped by the next process that opens the same spool."""
        if not self._sender.is_alive():
            self.spool.close()
            return
        self._stop.request(timeout)
        with self._queue_lock:
            self._has_items.notify_all()
        with self._work:
            self._work.notify_all()
        self._writer.join(timeout)
        self._sender.join(max(0.0, self._stop.deadline - time.monotonic()) + 1.0)
        self.spool.close()
        log.info("CloudWatch shipping stopped: %s", self.describe())

    def describe(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in asdict(self.counters).items())

    def _idle(self) -> bool:
        with self._queue_lock:
            if self._queue or self._writing:
                return False
        return not self.spool.has_unread(self.spool.cursor.position)

    # ---- queue → spool ------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._queue_lock:
                while not self._queue and not self._stop.requested():
                    self._has_items.wait()
                if not self._queue:
                    return
            self._stop.event.wait(WRITE_COALESCE)  # let the lines logged meanwhile join the frame
            with self._queue_lock:
                frame, count = self._queue, self._queued
                self._queue, self._queued, self._queued_chars = {}, 0, 0
                self._writing = True
                self._stalled = False
                self._has_room.notify_all()
            written = 0
            try:
                written, lost = self.spool.append(frame)
                self.counters.lost += lost
            except OSError as e:
                self.counters.lost += count
                log.error("cannot write %d line(s) to the spool: %s", count, e)
            with self._work:
                self._unread += count
                self._unread_bytes += written
                if self._unread_since is None:
                    self._unread_since = time.monotonic()
                self._work.notify_all()
            with self._queue_lock:
                self._writing = False

    # ---- spool → CloudWatch -------------------------------------------------------------------

    def _send_loop(self) -> None:
        try:
            self.sender.ensure_group()  # the owner creates the group at once, lines or not
            while self._wait_for_work():
                try:
                    self.sender.ensure_group()
                    self._ship_chunk()
                except Abandoned:
                    raise
                except Exception:  # a bug must not end shipping silently
                    log.exception("CloudWatch shipping failed; retrying")
                    self._stop.pause(RETRY_MAX_DELAY)
        except Abandoned:
            pass

    def _wait_for_work(self) -> bool:
        """Block until a batch is worth sending; False when stopping with nothing left."""
        with self._work:
            while True:
                now = time.monotonic()
                if self._stop.requested():
                    if self._unread or now >= self._stop.deadline:
                        return bool(self._unread) and now < self._stop.deadline
                    if not self._writer.is_alive():
                        return False
                    self._work.wait(0.05)  # the writer is still emptying the queue
                    continue
                if self._unread and (
                    self._flushing
                    or self._unread >= MAX_BATCH_EVENTS
                    or self._unread_bytes >= MAX_BATCH_BYTES
                    or now - (self._unread_since or now) >= self._flush_interval
                ):
                    return True
                since = self._unread_since
                self._work.wait(None if since is None else since + self._flush_interval - now)

    def _ship_chunk(self) -> None:
        cursor = self.spool.cursor
        if cursor.chunk_end is not None:  # a chunk half shipped before a stop or crash
            chunk = self.spool.read(cursor.position, 1 << 62, 1 << 62, end=cursor.chunk_end)
        else:
            chunk = self.spool.read(cursor.position, CHUNK_MAX_LINES, CHUNK_MAX_BYTES)
        progress = dict(cursor.progress)
        work = self._batches(chunk, progress)
        for number, (stream, done, batch) in enumerate(work, 1):
            self.sender.put(batch)
            progress[stream] = done + batch.consumed
            if number < len(work):
                self.spool.save_progress(chunk.end, progress)
        self.spool.commit(chunk.end)
        if time.monotonic() - self._reported >= REPORT_INTERVAL:
            self._reported = time.monotonic()
            log.info("CloudWatch shipping: %s", self.describe())
        capped = chunk.count >= CHUNK_MAX_LINES or chunk.size >= CHUNK_MAX_BYTES
        with self._work:
            if self.spool.has_unread(chunk.end):
                self._unread = max(1, self._unread - chunk.count)
                self._unread_bytes = max(0, self._unread_bytes - chunk.size)
                # a backlog goes on at once; lines written while this chunk shipped may wait
                self._unread_since = float("-inf") if capped else time.monotonic()
            else:
                self._unread = self._unread_bytes = 0
                self._unread_since = None

    def _batches(self, chunk: Chunk, progress: dict[str, int]) -> list[tuple[str, int, Batch]]:
        now_ms = int(self._clock() * 1000)
        work: list[tuple[str, int, Batch]] = []
        logged = 0
        for stream, events in chunk.streams.items():
            done = progress.get(stream, 0)
            assembly = assemble(stream, events[done:], now_ms, max_age_ms(self.retention_days))
            self.counters.truncated += assembly.truncated
            self.counters.dropped += len(assembly.rejected)
            for rejected in assembly.rejected:
                if logged < MAX_DROP_LOGS:
                    line = events[done + rejected.index][1][:200]
                    log.warning(
                        "dropped a line for %s that CloudWatch can never accept (%s, "
                        "timestamp %d): %r",
                        stream,
                        rejected.reason,
                        rejected.timestamp,
                        line,
                    )
                logged += 1
            work += [(stream, done, batch) for batch in assembly.batches]
        if logged > MAX_DROP_LOGS:
            log.warning("… and %d more dropped line(s)", logged - MAX_DROP_LOGS)
        return work
