"""Issue 10, findings 3 and 5: the login guard's rate limits, bounded memory, bounded password
pool, and the same argon2 work for unknown users."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

from master import auth, models
from master.api.errors import ApiError
from master.config import LoginConfig
from master.login_guard import LoginGuard, PasswordPool, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_empties_then_refills_one_attempt_per_window_share() -> None:
    clock = Clock()
    limiter = RateLimiter(capacity=3, window_seconds=60, max_keys=10, clock=clock)
    for _ in range(3):
        assert limiter.wait("alice") == 0
        limiter.take("alice")
    assert limiter.wait("alice") == pytest.approx(20)
    assert limiter.wait("bob") == 0
    clock.now += 20
    assert limiter.wait("alice") == 0


def test_limiter_memory_is_bounded_forgetting_the_least_recent() -> None:
    limiter = RateLimiter(capacity=1, window_seconds=60, max_keys=100, clock=Clock())
    limiter.take("first")
    for i in range(1000):
        limiter.take(f"attacker-{i}")
    assert len(limiter) == 100
    assert limiter.wait("first") == 0  # forgotten, so full again


def test_success_gives_the_attempt_back_and_failures_raise_429_with_retry_after() -> None:
    guard = LoginGuard(LoginConfig(attempts_per_user=2, window=timedelta(minutes=1)), Clock())
    for _ in range(5):
        with guard.attempt("admin", "10.0.0.1") as attempt:
            attempt.succeeded = True
    for _ in range(2):
        with pytest.raises(RuntimeError), guard.attempt("admin", "10.0.0.1"):
            raise RuntimeError("wrong password")
    with pytest.raises(ApiError) as caught, guard.attempt("admin", "10.0.0.2"):
        pass
    assert caught.value.status == 429
    assert caught.value.headers == {"Retry-After": "30"}
    with guard.attempt("other", "10.0.0.1"):
        pass  # the client has attempts left


def test_unknown_and_passwordless_users_cost_one_argon2_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guard = LoginGuard(LoginConfig())
    checked: list[str | None] = []
    real = auth.check_password

    def counting(user: models.User, password: str, *, is_hashed: bool) -> bool:
        checked.append(user.password_hash)
        return real(user, password, is_hashed=is_hashed)

    monkeypatch.setattr(auth, "check_password", counting)
    known = models.User(username="k", password_hash=auth.hash_password("pw", is_hashed=False))
    blank = models.User(username="b", password_hash=None)
    assert guard.verify(known, "pw", is_hashed=False) is True
    assert guard.verify(None, "pw", is_hashed=False) is False
    assert guard.verify(blank, "", is_hashed=False) is True
    assert guard.verify(blank, "pw", is_hashed=False) is False
    argon2_checks = [h for h in checked if h is not None]
    assert len(argon2_checks) == 4  # one per login, whoever asked
    assert argon2_checks[1] == argon2_checks[2] != known.password_hash  # the dummy hash


def test_full_password_pool_refuses_at_once_with_503() -> None:
    pool = PasswordPool(workers=1, queue=1)
    release = threading.Event()

    async def scenario() -> None:
        running = [asyncio.ensure_future(pool.run(release.wait)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(ApiError) as caught:
            await pool.run(lambda: True)
        assert caught.value.status == 503 and caught.value.headers == {"Retry-After": "1"}
        release.set()
        assert await asyncio.gather(*running) == [True, True]
        assert await pool.run(lambda: True) is True

    asyncio.run(scenario())
    pool.close()
