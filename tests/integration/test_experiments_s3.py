"""An experiment whose checkpoints live in S3 (moto in server mode), with the real trainer.

The trial uploads through boto3 from the agent, the master streams a download back from S3 and
garbage-collects the checkpoints that `save_trial_latest`/`save_trial_best` no longer keep.
"""

from __future__ import annotations

import io
import tarfile
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch

from tests.integration.cluster import Agent, Api, Master, running_cluster, wait_for
from tests.integration.test_experiments_e2e import create, example_config, trials, wait_ended
from tests.moto_logs import REGION, moto_server


@pytest.fixture
def bucket() -> str:
    # moto keeps its state per process, across servers: every test gets its own bucket.
    return f"checkpoints-{uuidlib.uuid4().hex[:12]}"


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch, bucket: str) -> Iterator[str]:
    # The master and agent processes inherit the region; credentials come from the config.
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with moto_server() as endpoint:
        s3(endpoint).create_bucket(Bucket=bucket)
        yield endpoint


def s3(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def cluster(tmp_path: Path, db_url: str, s3_endpoint: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=1)


def test_checkpoints_go_to_s3_download_through_the_master_and_are_collected(
    cluster: tuple[Master, list[Agent]], s3_endpoint: str, bucket: str
) -> None:
    master, _ = cluster
    api = Api(master)
    storage = {
        "type": "s3",
        "bucket": bucket,
        "prefix": "runs",
        "endpoint_url": s3_endpoint,
        "access_key": "testing",
        "secret_key": "testing",
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
    assert ended["config"]["checkpoint_storage"]["secret_key"] != "testing"  # masked

    (trial,) = trials(api, experiment_id)
    uuid = trial["latestCheckpoint"]

    def kept() -> set[str]:
        listed = s3(s3_endpoint).list_objects_v2(Bucket=bucket, Prefix="runs/")
        return {item["Key"].split("/")[1] for item in listed.get("Contents", [])}

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
