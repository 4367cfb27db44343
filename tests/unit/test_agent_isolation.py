"""agent.isolation: the uid range, when per-task uids can work, shared checkpoint directories."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from agent import isolation
from agent.config import AgentConfig, ConfigError, load_config
from agent.isolation import IsolationError, UidPool, UidsExhausted, parse_uid_range
from harness.pytorch.tensorboard import trial_log_dir

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def test_uid_ranges_parse_and_bad_ones_say_what_is_allowed():
    assert parse_uid_range(" 20000-29999 ") == (20000, 29999)
    assert parse_uid_range("5-5") == (5, 5)
    for bad in ("20000", "a-b", "10-5", "0-10", "-5-10", f"1-{2**31}"):
        with pytest.raises(ValueError, match="expected"):
            parse_uid_range(bad)


def test_config_validates_isolation_and_the_uid_range():
    config = load_config(
        None, {"join_token": "t", "isolation": "uid", "task_uid_range": "30000-30009"}, {}
    )
    assert (config.isolation, config.uid_range) == ("uid", (30000, 30009))
    with pytest.raises(ConfigError, match=r"isolation \(from --isolation\): Input should be"):
        load_config(None, {"join_token": "t", "isolation": "maybe"}, {})
    with pytest.raises(ConfigError, match=r"task_uid_range \(from DET_AGENT_TASK_UID_RANGE\)"):
        load_config(None, {"join_token": "t"}, {"DET_AGENT_TASK_UID_RANGE": "9-1"})
    own = os.getuid() or 1  # uid 0 is refused by the range check itself
    if own == os.getuid():
        with pytest.raises(ConfigError, match="holds the agent's own uid"):
            AgentConfig(join_token="t", task_uid_range=f"{own}-{own + 1}")


def test_pool_hands_out_free_uids_and_reports_exhaustion(tmp_path):
    pool = UidPool(43000, 43001, reserved=(43000,), lock_dir=tmp_path)
    assert pool.acquire("a") == 43001
    with pytest.raises(UidsExhausted, match="no free task uid in 43000-43001"):
        pool.acquire("b")
    pool.release("a")
    assert pool.acquire("b") == 43001


def test_agents_on_one_machine_never_share_a_uid(tmp_path):
    """Two agents with the same range (det deploy local, tests): the second gets the next uid,
    and the first one's uid once it is released."""
    one, two = (UidPool(43010, 43011, lock_dir=tmp_path) for _ in range(2))
    assert (one.acquire("a"), two.acquire("b")) == (43010, 43011)
    with pytest.raises(UidsExhausted):
        two.acquire("c")
    one.release("a")
    assert two.acquire("c") == 43010


def test_isolation_none_is_none_everywhere(tmp_path):
    assert isolation.resolve("none", tmp_path / "work") == ("none", "")


@pytest.mark.skipif(os.geteuid() == 0, reason="as root, uid isolation may work")
def test_without_root_auto_falls_back_and_uid_refuses(tmp_path):
    mode, why = isolation.resolve("auto", tmp_path / "work")
    assert mode == "none" and "not root" in why
    with pytest.raises(IsolationError, match="isolation: uid is required but the agent runs as"):
        isolation.resolve("uid", tmp_path / "work")


@as_root
def test_an_unreachable_work_dir_or_python_blocks_uid_isolation(tmp_path):
    """tmp_path is 0711 (tests/conftest.py) and this Python reachable (scripts/test), so uid
    works; below a 0700 directory it does not, and the message names the directory."""
    assert isolation.resolve("auto", tmp_path / "work") == ("uid", "")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    mode, why = isolation.resolve("auto", closed / "work")
    assert mode == "none"
    assert f"task uids cannot reach the agent's Python or work dir: {closed} (no o+x)" in why
    assert f"chmod o+x {closed}" in why
    with pytest.raises(IsolationError, match=f"isolation: uid is required but .*{closed}"):
        isolation.resolve("uid", closed / "work")


def test_unreachable_directories_checks_every_ancestor(tmp_path):
    inner = tmp_path / "a" / "b" / "c"
    inner.mkdir(parents=True)
    (tmp_path / "a").chmod(0o750)
    (tmp_path / "a" / "b").chmod(0o751)
    assert isolation.unreachable_directories([inner, inner / "missing"]) == [tmp_path / "a"]


def test_shared_checkpoint_and_tensorboard_directories_come_from_the_task_env(tmp_path):
    env = {
        "DET_CHECKPOINT_STORAGE": json.dumps(
            {"type": "shared_fs", "host_path": str(tmp_path), "storage_path": "ckpt"}
        ),
        "DET_TENSORBOARD_DIR": str(tmp_path / "tb"),
        "DET_EXPERIMENT_ID": "3",
        "DET_TRIAL_ID": "7",
    }
    assert isolation.shared_directories(env) == [(tmp_path / "ckpt", tmp_path)]
    expected = trial_log_dir(tmp_path / "tb", 3, 7)  # where the trainer writes
    assert isolation.tensorboard_directory(env) == expected
    s3 = {"DET_CHECKPOINT_STORAGE": json.dumps({"type": "s3", "bucket": "b"})}
    assert isolation.shared_directories(s3) == []
    assert isolation.tensorboard_directory({"DET_TENSORBOARD_DIR": "/tb"}) is None  # no trial


def test_shared_directories_become_sticky_and_writable_by_all(tmp_path):
    host = tmp_path / "host"
    host.mkdir(mode=0o755)
    isolation.prepare_shared(host / "exp" / "ckpt", host)
    assert stat.S_IMODE((host / "exp").stat().st_mode) == 0o755
    assert stat.S_IMODE((host / "exp" / "ckpt").stat().st_mode) == 0o1757
    isolation.prepare_shared(host, host)  # storage_path empty: the host path itself
    assert stat.S_IMODE(host.stat().st_mode) == 0o1757
    # An unmounted host_path is not created: the harness must say it is missing.
    isolation.prepare_shared(tmp_path / "absent" / "ckpt", tmp_path / "absent")
    assert not (tmp_path / "absent").exists()


@as_root
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_work_dir_is_given_to_the_uid_and_taken_back(tmp_path):
    directory = tmp_path / "alloc"
    (directory / "pkg").mkdir(parents=True)
    (directory / "pkg" / "m.py").write_text("x")
    (directory / "link").symlink_to("/etc/passwd")
    isolation.give_to(directory, 43005)
    owners = {p.name: p.lstat().st_uid for p in [directory, *directory.rglob("*")]}
    assert set(owners.values()) == {43005}
    assert Path("/etc/passwd").stat().st_uid == 0  # the link's target is untouched
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    isolation.take_back(directory)
    assert (directory.stat().st_uid, stat.S_IMODE(directory.stat().st_mode)) == (0, 0o700)


def test_a_trials_tensorboard_directory_is_created_by_root_and_writable_by_task_uids(tmp_path):
    trial_dir = tmp_path / "tb" / "experiment" / "1" / "trial" / "2"
    isolation.prepare_shared(trial_dir, Path("/"))
    assert stat.S_IMODE(trial_dir.stat().st_mode) == 0o1757
    assert stat.S_IMODE((tmp_path / "tb" / "experiment").stat().st_mode) == 0o755


@as_root
def test_an_agent_required_to_isolate_refuses_to_start_when_it_cannot(tmp_path, capsys):
    from agent.main import main

    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(SystemExit) as exit_info:
        main(["--join-token", "t", "--isolation", "uid", "--work-dir", str(closed / "work")])
    assert exit_info.value.code == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("det-agent: isolation: uid is required but task uids cannot reach")
    assert f"chmod o+x {closed}" in err
