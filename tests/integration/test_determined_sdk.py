"""Determined 0.38.1's own Python SDK and CLI against one real master and agent: what a
Determined user does from a notebook (``determined.experimental.client``) and then from the
shell, on SQLite and PostgreSQL.

The SDK part runs tests/integration/data/determined_sdk_session.py in the Determined venv
(``$FLOTILLA_DETERMINED_VENV``; unset, the test skips): log in, find a user, create an
experiment from a config dict and a model directory, wait for it, list its trials and its
checkpoints by the searcher metric (the SDK's default order), download the best one through
the master, stream a trial's validation metrics, list the agents, and use the model registry.
The trials are tests/integration/data/fake_trial.py. The CLI part then downloads a checkpoint
with ``--mode master``, prints a trial's logs, and drives ``det model`` and ``det version``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Agent, Master, running_cluster
from tests.integration.test_determined_client import (
    DeterminedCli,
    determined_det,  # noqa: F401  (the fixture)
)

DATA = Path(__file__).parent / "data"
SDK_TIMEOUT_SECONDS = 240


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=2)


def run_sdk_session(python: Path, master: Master, tmp_path: Path) -> dict[str, object]:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(DATA / "fake_trial.py", model_dir / "fake_trial.py")
    home = tmp_path / "sdk-home"
    home.mkdir()
    result = subprocess.run(
        [
            str(python),
            str(DATA / "determined_sdk_session.py"),
            master.url,
            str(model_dir),
            str(tmp_path / "sdk-downloads"),
        ],
        capture_output=True,
        text=True,
        timeout=SDK_TIMEOUT_SECONDS,
        env={"HOME": str(home), "XDG_CONFIG_HOME": str(home / "xdg"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, (
        f"the SDK session failed:\n{result.stderr[-6000:]}\nmaster log:\n"
        f"{master.log_path.read_text()[-4000:]}"
    )
    found: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def test_determined_sdk_and_cli_session(
    determined_det: Path,  # noqa: F811
    cluster: tuple[Master, list[Agent]],
    tmp_path: Path,
) -> None:
    master, _ = cluster
    sdk = run_sdk_session(determined_det.parent / "python", master, tmp_path)

    assert sdk["user"] == ["admin", True]
    assert sdk["state"] == "STATE_COMPLETED"
    assert len(sdk["trials"]) == 2  # type: ignore[arg-type]
    checkpoints = sdk["checkpoints"]
    assert [metric for _, metric in checkpoints] == [0.5, 1.0]  # type: ignore[union-attr]
    best_uuid = checkpoints[0][0]  # type: ignore[index]
    assert sdk["default_order"] == [uuid for uuid, _ in checkpoints]  # type: ignore[union-attr]
    assert "state.json" in sdk["downloaded"]  # type: ignore[operator]
    assert [steps for steps, _ in sdk["validations"]] == [2]  # type: ignore[union-attr]
    assert sdk["agents"] == ["agent-0"]
    assert sdk["model"] == ["sdk-model", {"framework": "fake"}, ["sdk", "digits"], "from the SDK"]
    assert sdk["version"] == [1, best_uuid]
    assert sdk["latest"] == 1
    assert sdk["models"] == ["sdk-model"]

    det = DeterminedCli(determined_det, master, tmp_path / "home")
    det.login("admin", "")

    out = tmp_path / "cli-download"
    det.ok("checkpoint", "download", best_uuid, "--mode", "master", "-o", str(out))
    assert (out / "state.json").is_file()

    trial_id = min(sdk["trials"])  # type: ignore[type-var]
    logs = det.ok("trial", "logs", str(trial_id))
    assert "searcher: done" in logs

    det.ok("model", "create", "cli-model", "--description", "from the CLI")
    listed = det.ok("model", "list")
    assert "Workspace ID" in listed and "sdk-model" in listed and "cli-model" in listed
    names = [m["name"] for m in json.loads(det.ok("model", "list", "--json"))]
    assert sorted(names) == ["cli-model", "sdk-model"]
    described = det.ok("model", "describe", "sdk-model")
    assert best_uuid in described and "from the SDK" in described
    assert json.loads(det.ok("model", "describe", "cli-model", "--json"))["description"] == (
        "from the CLI"
    )

    version = det.ok("version")
    assert "0.38.1" in version
