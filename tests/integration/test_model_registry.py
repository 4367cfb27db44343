"""The model registry against a real master, on SQLite and PostgreSQL: Determined's paths and
field names, versions pinning checkpoints (GC spares them), owner/admin rules, and clear errors.

No agent joins: the experiment, its trial and checkpoints are written straight to the database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from master import models
from master.db import Database
from master.experiments.gc import gather
from tests.integration.cluster import Api, Master, running_cluster
from tests.integration.test_cli import Cli

BOB_PASSWORD = "Bob-passw0rd"


def seed_checkpoints(
    db_url: str, states: list[str], storage: Path | None = None
) -> tuple[int, list[str]]:
    """A finished experiment with one trial and a checkpoint per state; its id and the uuids.
    With ``storage``, each checkpoint has a ``model.pt`` in that shared_fs directory."""
    now = datetime.now(UTC)
    config = {"name": "finished", "searcher": {"name": "single", "metric": "loss"}}
    database = Database(db_url)
    try:
        with database.session() as session:
            experiment = models.Experiment(
                owner_id=1,
                name="finished",
                state="STATE_COMPLETED",
                config=config,
                original_config=json.dumps(config),
                checkpoint_storage={
                    "type": "shared_fs",
                    "host_path": str(storage or "/nonexistent"),
                },
                resource_pool="default",
                end_time=now,
            )
            session.add(experiment)
            session.flush()
            trial = models.Trial(
                experiment_id=experiment.id,
                request_id="r1",
                state="STATE_COMPLETED",
                hparams={},
                end_time=now,
            )
            session.add(trial)
            session.flush()
            uuids = [str(uuid.uuid4()) for _ in states]
            for steps, (checkpoint_uuid, state) in enumerate(zip(uuids, states, strict=True)):
                if storage is not None:
                    (storage / checkpoint_uuid).mkdir(parents=True)
                    (storage / checkpoint_uuid / "model.pt").write_bytes(b"weights!")
                session.add(
                    models.Checkpoint(
                        uuid=checkpoint_uuid,
                        trial_id=trial.id,
                        experiment_id=experiment.id,
                        state=state,
                        report_time=now,
                        steps_completed=steps,
                        resources={"model.pt": 8},
                        size=8,
                        metadata_={"steps_completed": steps},
                    )
                )
            return experiment.id, uuids
    finally:
        database.close()


@pytest.fixture
def master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    for master, _ in running_cluster(tmp_path, db_url, agents=0):
        yield master


def test_models_and_versions_on_determined_paths(master: Master, db_url: str) -> None:
    experiment_id, (first, second, deleted) = seed_checkpoints(
        db_url, ["STATE_COMPLETED", "STATE_COMPLETED", "STATE_DELETED"]
    )
    admin = Api(master)
    created = admin.post(
        "/api/v1/models",
        json={
            "name": "digits",
            "description": "Digit classifier",
            "labels": ["cv", "cv"],
            "metadata": {"team": "a"},
            "workspaceName": None,
        },
    )
    assert created.status_code == 200, created.text
    model = created.json()["model"]
    assert model["name"] == "digits" and model["labels"] == ["cv"]
    assert model["username"] == "admin" and model["numVersions"] == 0
    assert model["workspaceId"] == 1 and model["archived"] is False

    assert admin.post("/api/v1/models", json={"name": "digits"}).status_code == 409
    for bad in ("123", "", "a/b", " x"):
        refused = admin.post("/api/v1/models", json={"name": bad})
        assert refused.status_code == 400, (bad, refused.text)
        assert "name" in refused.json()["error"]["error"]

    v1 = admin.post("/api/v1/models/digits/versions", json={"checkpointUuid": first})
    assert v1.status_code == 200, v1.text
    assert v1.json()["modelVersion"]["version"] == 1
    assert v1.json()["modelVersion"]["checkpoint"]["uuid"] == first
    v2 = admin.post(
        f"/api/v1/models/{model['id']}/versions",
        json={"modelName": "digits", "checkpointUuid": second, "comment": "better"},
    )
    assert v2.status_code == 200 and v2.json()["modelVersion"]["version"] == 2
    gone = admin.post("/api/v1/models/digits/versions", json={"checkpointUuid": deleted})
    assert gone.status_code == 409 and "STATE_DELETED" in gone.text
    missing = admin.post("/api/v1/models/digits/versions", json={"checkpointUuid": "nope"})
    assert missing.status_code == 404

    versions = admin.get(
        "/api/v1/models/digits/versions",
        params={"sortBy": "SORT_BY_VERSION", "orderBy": "ORDER_BY_DESC", "limit": 1},
    ).json()
    assert [v["version"] for v in versions["modelVersions"]] == [2]
    assert versions["pagination"]["total"] == 2 and versions["model"]["numVersions"] == 2
    assert admin.get("/api/v1/models/digits/versions/1").json()["modelVersion"]["id"]
    assert admin.get("/api/v1/models/digits/versions/9").status_code == 404
    for unknown in ("²", "99999999999999999999999", "404"):
        assert admin.get(f"/api/v1/models/{unknown}").status_code == 404, unknown

    patched = admin.patch(
        "/api/v1/models/digits", json={"metadata": {"team": "b"}, "labels": ["vision"]}
    )
    assert patched.json()["model"]["metadata"] == {"team": "b"}
    listed = admin.get("/api/v1/models", params={"labels": ["vision"], "name": "DIG"}).json()
    assert [m["name"] for m in listed["models"]] == ["digits"]
    assert admin.get("/api/v1/models", params={"labels": ["nope"]}).json()["models"] == []
    assert admin.get("/api/v1/model/labels").json()["labels"] == ["vision"]
    assert admin.get("/api/v1/models", params={"sortBy": "SORT_BY_BOGUS"}).status_code == 400

    # Pinned checkpoints are never garbage-collected.
    database = Database(db_url)
    try:
        with database.session() as session:
            assert {first, second} <= gather(session, experiment_id).keep
    finally:
        database.close()

    # Neither a registered checkpoint nor its experiment can be deleted by a person.
    kept = admin.http.request("DELETE", "/api/v1/checkpoints", json={"checkpointUuids": [second]})
    assert kept.status_code == 409 and "digits version 2" in kept.text, kept.text
    kept = admin.http.delete(f"/api/v1/experiments/{experiment_id}")
    assert kept.status_code == 409 and "model versions first" in kept.text, kept.text

    # Archived models take no versions.
    assert admin.post("/api/v1/models/digits/archive").status_code == 200
    refused = admin.post("/api/v1/models/digits/versions", json={"checkpointUuid": first})
    assert refused.status_code == 409 and "archived" in refused.text
    assert admin.post("/api/v1/models/digits/unarchive").status_code == 200

    assert admin.http.delete("/api/v1/models/digits/versions/1").status_code == 200
    assert admin.get("/api/v1/models/digits").json()["model"]["numVersions"] == 1
    assert admin.http.delete("/api/v1/models/digits").status_code == 200
    assert admin.get("/api/v1/models/digits").status_code == 404
    # With its versions gone, the experiment may go (its checkpoint files are already absent).
    assert admin.http.delete(f"/api/v1/experiments/{experiment_id}").status_code == 200


def test_owners_and_admins_change_models_everyone_reads(master: Master, db_url: str) -> None:
    _, (checkpoint,) = seed_checkpoints(db_url, ["STATE_COMPLETED"])
    admin = Api(master)
    made = admin.post(
        "/api/v1/users",
        json={"user": {"username": "bob", "active": True}, "password": BOB_PASSWORD},
    )
    assert made.status_code == 200, made.text
    bob = Api(master, "bob", BOB_PASSWORD)
    assert admin.post("/api/v1/models", json={"name": "admins"}).status_code == 200
    assert bob.get("/api/v1/models/admins").status_code == 200
    for call in (
        lambda: bob.patch("/api/v1/models/admins", json={"description": "mine"}),
        lambda: bob.post("/api/v1/models/admins/versions", json={"checkpointUuid": checkpoint}),
        lambda: bob.post("/api/v1/models/admins/archive"),
        lambda: bob.http.delete("/api/v1/models/admins"),
    ):
        response = call()
        assert response.status_code == 403, response.text
        assert "their own models" in response.json()["message"]

    assert bob.post("/api/v1/models", json={"name": "bobs"}).status_code == 200
    version = bob.post("/api/v1/models/bobs/versions", json={"checkpointUuid": checkpoint})
    assert version.status_code == 200, version.text
    assert version.json()["modelVersion"]["username"] == "bob"
    assert admin.patch("/api/v1/models/bobs/versions/1", json={"comment": "ok"}).status_code == 200
    change = admin.patch("/api/v1/models/bobs/versions/1", json={"checkpoint": {"uuid": "x"}})
    assert change.status_code == 400 and "register" in change.text
    assert admin.patch("/api/v1/models/bobs", json={"name": "admins"}).status_code == 409
    assert admin.patch("/api/v1/models/bobs", json={"name": "bobs-2"}).status_code == 200
    assert bob.get("/api/v1/models", params={"users": ["bob"]}).json()["models"][0]["name"] == (
        "bobs-2"
    )

    anonymous = Api(master, username="")
    for path in (
        "/api/v1/models",
        "/api/v1/models/admins",
        "/api/v1/models/admins/versions",
        "/api/v1/model/labels",
    ):
        assert anonymous.get(path).status_code == 401, path
    assert anonymous.post("/api/v1/models", json={"name": "x"}).status_code == 401


def test_det_model_verbs(master: Master, db_url: str, tmp_path: Path) -> None:
    _, (checkpoint,) = seed_checkpoints(db_url, ["STATE_COMPLETED"], tmp_path / "storage")
    det = Cli(tmp_path / "home", master.url)
    det.ok("user", "login", "admin", env={"DET_PASS": ""})

    created = det.ok("model", "create", "digits", "--description", "Digit classifier")
    assert "digits" in created and "Digit classifier" in created and "Workspace ID" in created
    listed = json.loads(det.ok("model", "list", "--json"))
    assert [(m["name"], m["description"]) for m in listed] == [("digits", "Digit classifier")]
    assert "digits" in det.ok("m", "ls")

    registered = det.ok("model", "register-version", "digits", checkpoint)
    assert checkpoint in registered and "Version #" in registered
    versions = json.loads(det.ok("model", "list-versions", "digits", "--json"))
    assert [v["checkpoint"]["uuid"] for v in versions["modelVersions"]] == [checkpoint]
    described = det.ok("model", "describe", "digits")
    assert checkpoint in described

    out = tmp_path / "downloaded"
    path = det.ok(
        "model", "download-version", "digits", "1", "--mode", "master", "-o", str(out), "-q"
    )
    assert path.strip() == str(out)
    assert (out / "model.pt").read_bytes() == b"weights!"

    missing = det("model", "describe", "nope")
    assert missing.returncode != 0 and "nope" in missing.stderr
    det.ok("model", "create", "empty")
    none = det("model", "download-version", "empty")
    assert none.returncode != 0 and "register-version" in none.stderr
    assert "Deleted model digits" in det.ok("model", "delete", "digits")
