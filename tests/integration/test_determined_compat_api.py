"""The REST calls Determined's SDK makes that Flotilla's own clients do not, checked at the edges
its happy path (tests/integration/test_determined_sdk.py) does not reach: checkpoint orders by
any validation metric, ``GET /checkpoints/{uuid}`` by ``Accept``, and the metric streams' errors.
On SQLite and PostgreSQL; the rows are written straight to the database, no agent runs.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from master import models
from master.db import Database
from tests.integration.cluster import Api, Master, running_cluster
from tests.integration.test_model_registry import seed_checkpoints


@pytest.fixture
def master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    for master, _ in running_cluster(tmp_path, db_url, agents=0):
        yield master


def add_validations(db_url: str, experiment_id: int, values: list[dict[str, float]]) -> int:
    """A validation at each checkpoint's step count (0, 1, …); returns the trial id."""
    database = Database(db_url)
    try:
        with database.session() as session:
            trial = session.query(models.Trial).filter_by(experiment_id=experiment_id).one()
            for steps, metrics in enumerate(values):
                session.add(
                    models.TrialMetrics(
                        trial_id=trial.id,
                        trial_run_id=1,
                        group="validation",
                        steps_completed=steps,
                        metrics=metrics,
                        searcher_metric=metrics.get("loss"),
                        report_time=datetime.now(UTC),
                    )
                )
            return trial.id
    finally:
        database.close()


def test_checkpoints_sort_by_metrics_and_download_by_accept(
    master: Master, db_url: str, tmp_path: Path
) -> None:
    experiment_id, uuids = seed_checkpoints(db_url, ["STATE_COMPLETED"] * 4, tmp_path / "store")
    # Checkpoint 3 has no validation: last in either direction.
    trial_id = add_validations(
        db_url,
        experiment_id,
        [{"loss": 0.3, "acc": 0.7}, {"loss": 0.1, "acc": 0.9}, {"loss": 0.2, "acc": 0.8}],
    )
    api = Api(master)
    path = f"/api/v1/experiments/{experiment_id}/checkpoints"

    def order(**params: str) -> list[str]:
        response = api.get(path, params=params)
        assert response.status_code == 200, response.text
        return [c["uuid"] for c in response.json()["checkpoints"]]

    a, b, c, unvalidated = uuids
    assert order(sortByAttr="SORT_BY_SEARCHER_METRIC") == [b, c, a, unvalidated]
    assert order(sortByAttr="SORT_BY_SEARCHER_METRIC", orderBy="ORDER_BY_DESC") == [
        a,
        c,
        b,
        unvalidated,
    ]
    assert order(sortByMetric="acc", orderBy="ORDER_BY_DESC") == [b, c, a, unvalidated]
    assert order(sortByAttr="SORT_BY_BATCH_NUMBER") == uuids
    trial_order = api.get(
        f"/api/v1/trials/{trial_id}/checkpoints", params={"sortByAttr": "SORT_BY_SEARCHER_METRIC"}
    )
    assert [x["uuid"] for x in trial_order.json()["checkpoints"]] == [b, c, a, unvalidated]
    bad = api.get(path, params={"sortByAttr": "SORT_BY_COLOR"})
    assert bad.status_code == 400 and "SORT_BY_SEARCHER_METRIC" in bad.text

    gz = api.get(f"/checkpoints/{a}", headers={"Accept": "application/gzip"})
    assert gz.status_code == 200 and gz.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(gz.content))) as tar:
        assert tar.getnames() == ["model.pt"]
    plain = api.get(f"/checkpoints/{a}", headers={"Accept": "application/x-tar"})
    assert plain.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(plain.content)) as tar:
        assert tar.extractfile("model.pt").read() == b"weights!"  # type: ignore[union-attr]
    refused = api.get(f"/checkpoints/{a}", headers={"Accept": "application/zip"})
    assert refused.status_code == 400 and "application/gzip" in refused.text
    assert api.get("/checkpoints/no-such-uuid").status_code == 404
    assert Api(master, username="").get(f"/checkpoints/{a}").status_code == 401

    stream = api.get(
        "/api/v1/trials/metrics/trial_metrics", params={"trialIds": trial_id, "group": "validation"}
    )
    assert stream.status_code == 200, stream.text
    lines = [json.loads(line) for line in stream.text.splitlines()]
    reports = [r for line in lines for r in line["result"]["metrics"]]
    assert [r["metrics"]["validation_metrics"]["loss"] for r in reports] == [0.3, 0.1, 0.2]
    assert [r["totalBatches"] for r in reports] == [0, 1, 2]
    training = api.get("/api/v1/trials/metrics/training_metrics", params={"trialIds": trial_id})
    assert training.status_code == 200 and training.text == ""
    missing = api.get("/api/v1/trials/metrics/validation_metrics", params={"trialIds": 999})
    assert missing.status_code == 404 and "trial 999" in missing.text
    no_ids = api.get("/api/v1/trials/metrics/trial_metrics", params={"group": "validation"})
    assert no_ids.status_code == 400 and "trialIds" in no_ids.text
    no_group = api.get("/api/v1/trials/metrics/trial_metrics", params={"trialIds": trial_id})
    assert no_group.status_code == 400 and "group" in no_group.text
