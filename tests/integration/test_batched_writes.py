"""The writes the master batches for scale, on SQLite and PostgreSQL: cached token checks that
forget exactly what a change makes stale, log batches of many agents sharing a transaction
without sharing a failure, and many agents' sequence numbers stored in one statement."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select, update

from agent.protocol import Hello
from master import auth, models, token_cache
from master.agent_sequences import AgentSequences
from master.db import Database, GroupCommit, migrate
from master.logs import LogStore, read_logs

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def db(db_url: str):
    database = Database(db_url)
    migrate(database.engine)
    token_cache.clear_all()
    yield database
    token_cache.clear_all()
    database.close()


def _user(db: Database, name: str) -> int:
    with db.session() as session:
        user = models.User(username=name)
        session.add(user)
        session.flush()
        return user.id


def _cached_check(db: Database, token: str) -> auth.Caller | None:
    """What ``auth.current_caller`` does on a miss: read, then remember."""
    generation = token_cache.CALLERS.generation
    with db.session() as session:
        found = auth.caller_for_token(session, token, NOW)
    if found is not None:
        token_cache.CALLERS.put(auth.token_digest(token), found, generation)
    return found


def _cached(token: str) -> auth.Caller | None:
    return token_cache.CALLERS.get(auth.token_digest(token), NOW)


def test_an_ended_allocation_forgets_only_its_own_tokens(db: Database) -> None:
    owner = _user(db, "alice")
    with db.session() as session:
        login = auth.issue_token(session, owner, timedelta(days=1), NOW)
        task_a = auth.issue_token(session, owner, timedelta(days=1), NOW, allocation_id="a.1")
        task_b = auth.issue_token(session, owner, timedelta(days=1), NOW, allocation_id="b.1")
    for token in (login, task_a, task_b):
        assert _cached_check(db, token) is not None
        assert _cached(token) is not None

    with db.session() as session:
        auth.revoke_allocation_tokens(session, ["a.1"])
    assert _cached(task_a) is None
    assert _cached(login) is not None and _cached(task_b) is not None
    assert _cached_check(db, task_a) is None  # gone from the database too


def test_a_check_racing_a_revocation_is_not_remembered(db: Database) -> None:
    owner = _user(db, "bob")
    with db.session() as session:
        task_a = auth.issue_token(session, owner, timedelta(days=1), NOW, allocation_id="a.1")
        task_b = auth.issue_token(session, owner, timedelta(days=1), NOW, allocation_id="b.1")
    generation = token_cache.CALLERS.generation  # a check began...
    with db.session() as session:
        found_a = auth.caller_for_token(session, task_a, NOW)
        found_b = auth.caller_for_token(session, task_b, NOW)
    with db.session() as session:  # ...then a.1 was revoked before it stored its answer
        auth.revoke_allocation_tokens(session, "a.1")
    assert found_a is not None and found_b is not None
    token_cache.CALLERS.put(auth.token_digest(task_a), found_a, generation)
    token_cache.CALLERS.put(auth.token_digest(task_b), found_b, generation)
    assert _cached(task_a) is None
    assert _cached(task_b) is not None  # another allocation's answer is still good


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda user: setattr(user, "active", False), id="deactivated"),
        pytest.param(lambda user: setattr(user, "admin", True), id="made-admin"),
        pytest.param(lambda user: setattr(user, "username", "renamed"), id="renamed"),
    ],
)
def test_any_change_of_a_user_forgets_every_cached_check(db: Database, change) -> None:
    owner = _user(db, "carol")
    with db.session() as session:
        login = auth.issue_token(session, owner, timedelta(days=1), NOW)
    assert _cached_check(db, login) is not None
    with db.session() as session:
        change(session.get_one(models.User, owner))
    assert _cached(login) is None
    again = _cached_check(db, login)
    assert again is None or (again.user.admin or again.user.username == "renamed")


def test_a_bulk_statement_on_the_token_table_forgets_every_cached_check(db: Database) -> None:
    owner = _user(db, "dave")
    with db.session() as session:
        login = auth.issue_token(session, owner, timedelta(days=1), NOW)
    assert _cached_check(db, login) is not None
    with db.session() as session:
        session.execute(update(models.UserSession).values(expires_at=NOW))
    assert _cached(login) is None
    assert _cached_check(db, login) is None  # expired now


def test_log_batches_share_a_transaction_but_not_a_failure(db: Database) -> None:
    store = LogStore(db)
    line = {"timestamp": NOW, "stdtype": "stdout", "line": "hello"}

    def failing(_session: object) -> None:
        raise RuntimeError("this batch is bad")

    async def scenario() -> list[object]:
        return await asyncio.gather(
            *(store.append(f"t{i}", f"t{i}.1", f"agent-{i}", [line]) for i in range(20)),
            store.append("bad", "bad.1", "agent-x", [line], also=failing),
            *(store.append(f"t{i}", f"t{i}.1", f"agent-{i}", [line]) for i in range(20, 40)),
            return_exceptions=True,
        )

    results = asyncio.run(scenario())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and "this batch is bad" in str(failures[0])
    with db.session() as session:
        stored = read_logs(session, [f"t{i}" for i in range(40)] + ["bad"], 0, None)
    assert sorted(r.task_id for r in stored) == sorted(f"t{i}" for i in range(40))


def test_group_commit_runs_writes_in_order_in_few_transactions(db: Database) -> None:
    writes = GroupCommit(db)
    owner = _user(db, "erin")
    transactions: list[int] = []
    event.listen(db.engine, "commit", lambda _connection: transactions.append(1))

    def rename(name: str):
        return lambda session: session.execute(
            update(models.User).where(models.User.id == owner).values(display_name=name)
        )

    async def scenario() -> None:
        await asyncio.gather(*(writes.run(rename(f"name-{i}")) for i in range(50)))

    asyncio.run(scenario())
    assert len(transactions) <= 3  # the first alone, the rest queued behind it
    with db.session() as session:
        assert session.get_one(models.User, owner).display_name == "name-49"


def test_many_agents_sequence_numbers_stored_together_and_never_lowered(db: Database) -> None:
    sequences = AgentSequences(db)

    def hello(i: int) -> Hello:
        return Hello(
            agent_id=f"agent-{i}",
            boot_id=f"boot-{i}",
            booted_at=NOW,
            version="test",
            resource_pool="default",
            slots=[],
        )

    async def scenario() -> list[int]:
        for i in range(30):
            await sequences.open(hello(i), link=object())
            entry = sequences.get(f"agent-{i}")
            assert entry is not None
            entry.applied = 100 + i
        return await asyncio.gather(*(sequences.stored_applied(f"agent-{i}") for i in range(30)))

    assert asyncio.run(scenario()) == [100 + i for i in range(30)]
    with db.session() as session:
        rows = session.execute(
            select(models.AgentSequence.agent_id, models.AgentSequence.last_seq)
        ).all()
        stored = {agent_id: last_seq for agent_id, last_seq in rows}
    assert stored == {f"agent-{i}": 100 + i for i in range(30)}

    async def lower() -> None:
        entry = sequences.get("agent-0")
        assert entry is not None
        entry.applied, entry.stored = 5, 0
        await sequences.stored_applied("agent-0")

    asyncio.run(lower())
    with db.session() as session:
        assert session.get_one(models.AgentSequence, "agent-0").last_seq == 100
