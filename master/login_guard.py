"""What stands between ``/api/v1/auth/login`` and a password guesser or a login flood.

argon2 is deliberately slow (hundreds of milliseconds of CPU per check), which makes the login
route the cheapest way to load the master. Three defences:

- **Rate limits.** Every attempt takes a token from its username's bucket and from its client
  address's bucket; a success gives both back, so only failures count. An empty bucket answers
  429 with ``Retry-After``. Buckets refill continuously (a full bucket per ``window``), and at
  most ``tracked_keys`` of each kind are remembered, least recently used forgotten first, so the
  limiter's memory is bounded whatever the attacker sends (keys are hashes, so a long username
  costs no more than a short one). Usernames are counted in their canonical form.
- **A bounded pool.** Password checks run on their own few threads, at a lower CPU priority,
  never on the thread pool that serves the synchronous routes, with a bounded number of waiting
  checks; beyond it a login is refused with 503 at once instead of queueing.
- **Equal work.** An unknown user, or one without a password, costs one argon2 verification
  against a dummy hash made at start, like a known user with a wrong password, so response
  times do not tell which usernames exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from master import auth, models
from master.api.errors import ApiError
from master.config import LoginConfig


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by key: ``capacity`` tokens each, refilled at ``capacity`` per ``window``.

    At most ``max_keys`` buckets are kept; the least recently used is dropped first (a dropped
    key starts again full). Not thread-safe: call it from the event loop only.
    """

    def __init__(
        self,
        capacity: int,
        window_seconds: float,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.refill_per_second = capacity / window_seconds
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: str) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.pop(key, None) or _Bucket(float(self.capacity), now)
        elapsed = max(now - bucket.updated, 0.0)
        bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.refill_per_second)
        bucket.updated = now
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return bucket

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token (0: it has one now)."""
        bucket = self._bucket(key)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.refill_per_second

    def take(self, key: str) -> None:
        self._bucket(key).tokens -= 1

    def give_back(self, key: str) -> None:
        bucket = self._bucket(key)
        bucket.tokens = min(self.capacity, bucket.tokens + 1)


def _key(text: str) -> str:
    """A fixed-size key for ``text`` (a username may be up to a request body long)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Attempt:
    """One login attempt holding a token of its username and of its client."""

    def __init__(self) -> None:
        self.succeeded = False


# Password threads run at this niceness (Linux: per thread), so the event loop and the threads
# serving other requests win the CPU when logins pile up.
PASSWORD_THREAD_NICENESS = 10


def _lower_priority() -> None:
    # Not Linux, or not permitted: the default priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PASSWORD_THREAD_NICENESS)


class PasswordPool:
    """Runs password checks on ``workers`` dedicated threads, at most ``queue`` more waiting."""

    def __init__(self, workers: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(
            workers, thread_name_prefix="password-check", initializer=_lower_priority
        )
        self._slots = threading.BoundedSemaphore(workers + queue)

    async def run(self, check: Callable[[], bool]) -> bool:
        """``check()`` on a pool thread; 503 with ``Retry-After`` when the pool is full.

        The slot is held until the check itself ends, even if the caller stops waiting."""
        if not self._slots.acquire(blocking=False):
            raise ApiError(
                503,
                "too many logins in progress; try again in a second",
                headers={"Retry-After": "1"},
            )
        try:
            future = self._executor.submit(check)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class LoginGuard:
    """The rate limits, the password pool and the dummy hash of one master."""

    def __init__(self, config: LoginConfig, clock: Callable[[], float] = time.monotonic) -> None:
        window = config.window.total_seconds()
        self.users = RateLimiter(config.attempts_per_user, window, config.tracked_keys, clock)
        self.clients = RateLimiter(config.attempts_per_client, window, config.tracked_keys, clock)
        self.pool = PasswordPool(config.password_workers, config.password_queue)
        # Made once, with the same hasher (and so the same cost) as real passwords.
        self._dummy = models.User(
            username="", password_hash=auth.hash_password(secrets.token_hex(16), is_hashed=False)
        )

    @contextmanager
    def attempt(self, username: str, client: str) -> Iterator[Attempt]:
        """Take a token from ``username``'s and ``client``'s buckets, or raise 429 with
        ``Retry-After``; both come back if the attempt is marked ``succeeded``."""
        user_key, client_key = _key(username), _key(client)
        wait = max(self.users.wait(user_key), self.clients.wait(client_key))
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429,
                f"too many failed logins for this user or from this address; retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        self.users.take(user_key)
        self.clients.take(client_key)
        attempt = Attempt()
        try:
            yield attempt
        finally:
            if attempt.succeeded:
                self.users.give_back(user_key)
                self.clients.give_back(client_key)

    def verify(self, user: models.User | None, password: str, *, is_hashed: bool) -> bool:
        """Whether ``password`` is ``user``'s, at the cost of one argon2 check in every case."""
        if user is None or user.password_hash is None:
            auth.check_password(self._dummy, password, is_hashed=is_hashed)
            return user is not None and auth.check_password(user, password, is_hashed=is_hashed)
        return auth.check_password(user, password, is_hashed=is_hashed)

    async def check(self, user: models.User | None, password: str, *, is_hashed: bool) -> bool:
        """:meth:`verify` on the password pool (503 when it is full)."""
        return await self.pool.run(lambda: self.verify(user, password, is_hashed=is_hashed))

    def close(self) -> None:
        self.pool.close()
