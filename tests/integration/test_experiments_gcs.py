"""An experiment whose checkpoints live in GCS (gcp-storage-emulator), with the real trainer.

The trial uploads through google-cloud-storage from the agent, the master streams a download
back from GCS and garbage-collects the checkpoints that `save_trial_latest`/`save_trial_best` no
longer keep. Master and agent find the emulator through ``STORAGE_EMULATOR_HOST``, as Google's
clients do.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.gcs_emulator import admin_client, gcs_emulator
from tests.integration.cluster import Agent, Api, Master, running_cluster, wait_for
from tests.integration.test_experiments_e2e import create, example_config, trials, wait_ended

BUCKET = "checkpoints"


@pytest.fixture
def gcs_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with gcs_emulator(BUCKET) as endpoint:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)  # inherited by master and agent
        monkeypatch.delenv("GOOGLE_OAUTH_ACCESS_TOKEN", raising=False)
        yield endpoint


@pytest.fixture
def cluster(tmp_path: Path, db_url: str, gcs_endpoint: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=1)


def test_checkpoints_go_to_gcs_download_through_the_master_and_are_collected(
    cluster: tuple[Master, list[Agent]], gcs_endpoint: str
) -> None:
    master, _ = cluster
    api = Api(master)
    storage = {
        "type": "gcs",
        "bucket": BUCKET,
        "prefix": "runs",
        "save_trial_latest": 1,
        "save_trial_best": 1,
    }
    config = example_config(
        "const.yaml",
        searcher__max_length={"batches": 20},
        min_checkpoint_period={"batches": 5},
        checkpoint_storage=storage,
    )
    experiment_id = create(api, config)
    ended = wait_ended(api, experiment_id)
    assert ended["state"] == "STATE_COMPLETED", ended.get("stateReason")

    (trial,) = trials(api, experiment_id)
    uuid = trial["latestCheckpoint"]

    def kept() -> set[str]:
        blobs = admin_client(gcs_endpoint).list_blobs(BUCKET, prefix="runs/")
        return {blob.name.split("/")[1] for blob in blobs}

    # Garbage collection runs after the experiment ends, on the master.
    wait_for("GC to keep only the latest checkpoint", lambda: kept() == {uuid}, 60)
    checkpoints = api.get(f"/api/v1/experiments/{experiment_id}/checkpoints").json()
    states = sorted(c["state"] for c in checkpoints["checkpoints"])
    assert states.count("STATE_COMPLETED") == 1 and "STATE_DELETED" in states

    response = api.get(f"/api/v1/checkpoints/{uuid}/content")
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        member = tar.extractfile("state.pt")
        assert member is not None
        state = torch.load(io.BytesIO(member.read()), weights_only=False)
    assert state["trainer"]["batches_trained"] == 20
