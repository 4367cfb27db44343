"""``python -m harness.tensorboard`` against a fake master, with event files written the way a
trial writes them (``torch.utils.tensorboard.SummaryWriter``).

Requests go straight to TensorBoard (the master's proxy is tested elsewhere), under the
``/proxy/<task-id>`` prefix it serves at.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.tensorboard import LogDir, check_logdirs, logdir_spec, parse_logdir
from tests.fake_master import (
    FakeMaster,
    Program,
    port_is_closed,
    running_fake_master,
    task_environ,
)
from tests.tensorboard_helpers import fetch_tags, wait_for_scalars, write_scalars

TASK_ID = "tensorboard-3"


@pytest.fixture
def master() -> Iterator[FakeMaster]:
    with running_fake_master() as fake:
        yield fake


def test_tensorboard_serves_the_runs_of_each_named_directory(
    master: FakeMaster, tmp_path: Path
) -> None:
    losses = [1.0 / (step + 1) for step in range(10)]
    write_scalars(tmp_path / "experiment" / "1" / "trial" / "1", "loss", losses)
    write_scalars(tmp_path / "experiment" / "2" / "trial" / "5", "accuracy", [0.5, 0.75])
    program = Program(
        [
            "-m",
            "harness.tensorboard",
            f"experiment-1={tmp_path / 'experiment' / '1'}",
            # A relative path is taken from the working directory.
            "experiment-2=experiment/2",
        ],
        task_environ(master, DET_TASK_ID=TASK_ID),
        tmp_path,
    )
    try:
        ready = master.wait_for_ready(timeout=60)
    except TimeoutError:
        program.kill()
        pytest.fail(f"never ready: {program.wait()}")
    try:
        host, port = ready.body["proxyAddress"], ready.body["proxyPort"]
        assert host == "127.0.0.1"
        base = f"http://{host}:{port}/proxy/{TASK_ID}/"

        values = wait_for_scalars(base, "experiment-1/trial/1", "loss", count=10)
        assert values == pytest.approx(losses)
        assert fetch_tags(base) == {
            "experiment-1/trial/1": ["loss"],
            "experiment-2/trial/5": ["accuracy"],
        }
        logdir = httpx.get(f"{base}data/logdir", trust_env=False)
        assert logdir.status_code == 200
        index = httpx.get(base, trust_env=False)
        assert index.status_code == 200
        assert "<html" in index.text.lower()
        # Served only under the prefix.
        assert httpx.get(f"http://{host}:{port}/data/logdir", trust_env=False).status_code == 404
    finally:
        code, out, err = program.stop()

    assert code == 0, err
    assert f"TensorBoard ready at /proxy/{TASK_ID}/" in out
    assert port_is_closed(host, port)


def test_missing_directories_fail_before_tensorboard_starts(
    master: FakeMaster, tmp_path: Path
) -> None:
    (tmp_path / "present").mkdir()
    program = Program(
        ["-m", "harness.tensorboard", "a=present", "b=gone", f"c={tmp_path / 'also-gone'}"],
        task_environ(master, DET_TASK_ID=TASK_ID),
        tmp_path,
    )
    code, _, err = program.wait()
    assert code == 1
    assert "TensorBoard log directories not found:" in err
    assert f"b={tmp_path / 'gone'}" in err
    assert f"c={tmp_path / 'also-gone'}" in err
    assert "a=" not in err
    assert "TensorBoard 2." not in err  # never started
    assert not master.ready_calls


def test_malformed_arguments_are_usage_errors(master: FakeMaster, tmp_path: Path) -> None:
    program = Program(
        ["-m", "harness.tensorboard", "no-equals-sign"],
        task_environ(master, DET_TASK_ID=TASK_ID),
        tmp_path,
    )
    code, _, err = program.wait()
    assert code == 2
    assert "'no-equals-sign' is not NAME=PATH" in err


def test_parse_logdir(tmp_path: Path) -> None:
    assert parse_logdir(f"x={tmp_path}") == LogDir("x", str(tmp_path))
    assert parse_logdir("x=rel/dir") == LogDir("x", os.path.abspath("rel/dir"))
    # Only the first "=" separates; a colon in the path is fine for --logdir_spec.
    assert parse_logdir("x=/a=b:c") == LogDir("x", "/a=b:c")
    for bad in ("x", "=/p", "x=", "a:b=/p", "a,b=/p", "x=/a,b"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_logdir(bad)


def test_logdir_spec_and_checks(tmp_path: Path) -> None:
    dirs = [LogDir("experiment-1", str(tmp_path)), LogDir("trial-4", str(tmp_path))]
    assert logdir_spec(dirs) == f"experiment-1:{tmp_path},trial-4:{tmp_path}"
    assert check_logdirs(dirs) is None
    repeated = [*dirs, LogDir("trial-4", str(tmp_path))]
    assert check_logdirs(repeated) == "run names given more than once: trial-4"
