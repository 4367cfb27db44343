"""``det experiment set|delete|download|move`` and ``det checkpoint delete`` against a real
master and agent, with our CLI and (where it applies) Determined's own."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Agent, Api, Master, running_cluster
from tests.integration.test_cli import Cli
from tests.integration.test_experiments_api import (
    checkpoints,
    config,
    create,
    experiment,
    wait_experiment,
)


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=2)


@pytest.fixture
def det(cluster: tuple[Master, list[Agent]], tmp_path: Path) -> Cli:
    master, _ = cluster
    cli = Cli(tmp_path / "home", master.url)
    cli.ok("user", "login", "admin", env={"DET_PASS": ""})
    return cli


def test_set_download_checkpoint_delete_move_and_delete(
    det: Cli, cluster: tuple[Master, list[Agent]], tmp_path: Path
) -> None:
    master, _ = cluster
    api = Api(master)
    experiment_id = create(api, config())
    wait_experiment(api, master, experiment_id, "STATE_COMPLETED")
    eid = str(experiment_id)

    assert det.ok("e", "set", "description", eid, "tuned") == (
        f"Set description of experiment {eid} to 'tuned'\n"
    )
    assert det.ok("e", "set", "name", eid, "renamed").startswith("Set name")
    assert det.ok("e", "set", "priority", eid, "7") == f"Set `priority` of experiment {eid} to 7\n"
    det.ok("e", "set", "max-slots", eid, "4")
    det.ok("e", "set", "weight", eid, "2.5")
    gc = det.ok(
        "e", "set", "gc-policy", eid, "--save-experiment-best", "1", "--save-trial-best", "1",
        "--save-trial-latest", "0", "--yes",
    )  # fmt: skip
    assert gc.startswith(f"Set GC policy of experiment {eid} to\n")
    described = experiment(api, experiment_id)
    assert (described["experiment"]["name"], described["experiment"]["description"]) == (
        "renamed",
        "tuned",
    )
    resources = described["config"]["resources"]
    assert (resources["priority"], resources["max_slots"], resources["weight"]) == (7, 4, 2.5)
    assert described["config"]["checkpoint_storage"]["save_trial_latest"] == 0
    # GC ran under the new policy: the only checkpoint is the best one, so it is kept.
    assert [c["state"] for c in checkpoints(api, experiment_id)] == ["STATE_COMPLETED"]
    bad = det("e", "set", "priority", eid, "500")
    assert bad.returncode == 1 and "resources.priority" in bad.stderr
    unconfirmed = det("e", "delete", eid)
    assert unconfirmed.returncode == 1 and "pass --yes" in unconfirmed.stderr

    # download: the best checkpoint, through the master.
    out = tmp_path / "best"
    paths = det.ok("e", "download", eid, "-o", str(out), "--mode", "master", "-q").split()
    (checkpoint,) = checkpoints(api, experiment_id)
    assert paths == [str(out / checkpoint["uuid"])]
    assert (out / checkpoint["uuid"] / "state.json").is_file()

    # move: one project here.
    moved = det.ok("e", "move", eid, "Uncategorized", "Uncategorized")
    assert moved == f'Moved experiment {eid} to project "Uncategorized"\n'
    elsewhere = det("e", "move", eid, "ws", "proj")
    assert elsewhere.returncode == 1 and "one workspace and one project" in elsewhere.stderr

    # checkpoint delete: the files go, the checkpoint stays listed as DELETED.
    stored = tmp_path / "master-data" / "checkpoints" / checkpoint["uuid"]
    assert stored.is_dir()
    det.ok("checkpoint", "delete", checkpoint["uuid"], "--yes")
    assert not stored.exists()
    assert checkpoints(api, experiment_id)[0]["state"] == "STATE_DELETED"

    # delete: only an ended experiment; then it is gone.
    assert det.ok("e", "delete", eid, "--yes") == f"Deletion of experiment {eid} is in progress\n"
    assert api.get(f"/api/v1/experiments/{experiment_id}").status_code == 404


def test_a_running_experiment_cannot_be_deleted_and_its_priority_changes_live(
    det: Cli, cluster: tuple[Master, list[Agent]]
) -> None:
    master, _ = cluster
    api = Api(master)
    experiment_id = create(
        api, config(searcher={"max_length": {"batches": 1000}}, env={"FAKE_STEP_SECONDS": "1"})
    )
    refused = det("e", "delete", str(experiment_id), "--yes")
    assert refused.returncode == 1
    assert "only ended experiments" in refused.stderr and "det experiment kill" in refused.stderr
    det.ok("e", "set", "priority", str(experiment_id), "10")
    assert experiment(api, experiment_id)["config"]["resources"]["priority"] == 10
    det.ok("e", "kill", str(experiment_id))


def test_determineds_cli_sets_description_and_priority(
    cluster: tuple[Master, list[Agent]], tmp_path: Path
) -> None:
    venv = os.environ.get("FLOTILLA_DETERMINED_VENV")
    if not venv:
        pytest.skip("FLOTILLA_DETERMINED_VENV is not set")
    master, _ = cluster
    api = Api(master)
    experiment_id = create(api, config())
    wait_experiment(api, master, experiment_id, "STATE_COMPLETED")
    home = tmp_path / "det-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DET_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "xdg"))

    def determined(*args: str, stdin: str = "") -> str:
        result = subprocess.run(
            [str(Path(venv) / "bin" / "det"), "-m", master.url, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            start_new_session=True,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    determined("user", "login", "admin", stdin="\n")
    eid = str(experiment_id)
    assert determined("e", "set", "description", eid, "from determined") == (
        f"Set description of experiment {eid} to 'from determined'\n"
    )
    determined("e", "set", "priority", eid, "11")
    described = experiment(api, experiment_id)
    assert described["experiment"]["description"] == "from determined"
    assert described["config"]["resources"]["priority"] == 11
