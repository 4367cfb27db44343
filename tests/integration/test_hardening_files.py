"""Issue 10, finding 8: what the master and ``det deploy local`` keep on disk is private."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.deploy_local import ClusterState, ProcessRecord, prepare_state_dir, private_log
from tests.integration.cluster import Api, Master, running_cluster


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    # Shared directories outside the data dir: nothing in it needs to be reachable by tasks.
    for master, _ in running_cluster(
        tmp_path,
        db_url,
        agents=0,
        tensorboard_dir=str(tmp_path / "shared" / "tensorboard"),
        checkpoint_storage={"type": "shared_fs", "host_path": str(tmp_path / "shared" / "ckpt")},
    ):
        yield master


def test_data_dir_and_database_are_private(master: Master, tmp_path: Path, db_url: str) -> None:
    Api(master).post("/api/v1/users", json={"user": {"username": "alice"}, "password": "x!Y3z"})
    assert mode(tmp_path / "master-data") == 0o700
    if db_url.startswith("sqlite"):
        database = Path(db_url.split("///", 1)[1])
        companions = [database.with_name(database.name + s) for s in ("-wal", "-shm")]
        assert all(p.exists() for p in companions)
        assert {p.name: mode(p) for p in [database, *companions]} == {
            p.name: 0o600 for p in [database, *companions]
        }


def test_data_dir_holding_shared_storage_is_only_traversable(tmp_path: Path) -> None:
    database = tmp_path / "data" / "flotilla.db"
    database.parent.mkdir()
    database.touch(mode=0o644)
    database.with_name("flotilla.db-wal").touch(mode=0o644)
    for master, _ in running_cluster(tmp_path, f"sqlite:///{database}", agents=0):
        assert mode(tmp_path / "master-data") == 0o711  # default checkpoints live inside
        assert mode(database) == 0o600
        assert mode(database.with_name("flotilla.db-wal")) == 0o600
        assert master.answers()


def test_deploy_local_state_files_are_private(tmp_path: Path) -> None:
    state = tmp_path / "local"
    (state / "logs").mkdir(parents=True, mode=0o755)
    prepare_state_dir(state)
    assert {p: mode(state / p) for p in ("", "logs", "data", "agents")} == {
        "": 0o711,
        "logs": 0o700,
        "data": 0o700,
        "agents": 0o711,
    }
    log = tmp_path / "master.log"
    log.write_text("old\n")
    log.chmod(0o644)
    assert mode(private_log(log)) == 0o600 and log.read_text() == "old\n"
    assert mode(private_log(tmp_path / "agent-0.log")) == 0o600
    state = ClusterState(
        url="http://127.0.0.1:1",
        port=1,
        cluster_name="",
        master=ProcessRecord("master", 1, ""),
        slots_per_agent=1,
        db_url="",
    )
    state.save(tmp_path / "cluster.json")
    assert mode(tmp_path / "cluster.json") == 0o600
    assert ClusterState.load(tmp_path / "cluster.json") == state
