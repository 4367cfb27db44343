"""The OpenAPI schema describes the server: Schemathesis against a live master.

Every operation in ``/openapi.json`` is called with generated requests (valid and invalid ones),
as an ordinary user and then as the admin (so the admin's changes to users cannot lock the
ordinary user out mid-run), and every response must pass ``not_a_server_error``,
``status_code_conformance``, ``content_type_conformance`` and
``response_schema_conformance``. Generated ids mostly name nothing, so each ``GET`` is also
called with the ids of objects that exist — a queued command, a queued experiment, a finished
experiment with a trial, metrics, a checkpoint and logs, the users, the default pool and
workspace — and must answer 200 with a body that fits its schema; NDJSON streams are checked
line by line.

No agent joins: commands, shells, notebooks and TensorBoards the generator launches stay queued,
so no generated command line ever runs, and no task is started. Runs on SQLite and PostgreSQL
(about 1.5 minutes of CPU for both).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from master import models
from master.app import create_app
from master.config import MasterConfig
from master.db import Database
from tests.integration.cluster import Api, Master

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Generated requests per operation, per user and generation mode.
EXAMPLES = 5
ORDINARY_USER = "conformance-user"
ORDINARY_PASSWORD = "Conformance-pass-1"

ERROR_REF = "#/components/schemas/ErrorBody"
# What a GET of existing objects answers where that is not 200, and why.
KNOWN_STATUS = {
    # The seeded checkpoint has no files in its storage.
    "GET /api/v1/checkpoints/{uuid}/content": 404,
    "GET /checkpoints/{uuid}": 404,
    # Only the trial's own task token may ask; users get 403.
    "GET /api/v1/trials/{trial_id}/searcher/operation": 403,
}
# Query parameters naming existing objects (by ``_seed``'s keys) for GETs that need them.
KNOWN_QUERY = {
    "/api/v1/trials/metrics/trial_metrics": {"trialIds": "trial_id", "group": "metric_group"},
    "/api/v1/trials/metrics/training_metrics": {"trialIds": "trial_id"},
    "/api/v1/trials/metrics/validation_metrics": {"trialIds": "trial_id"},
}
# Admin-only reads: the ordinary user gets 403 (the admin 200; the schema documents it).
ADMIN_ONLY = {
    "GET /api/v1/instances",
    "GET /api/v1/scale-events",
    "GET /api/v1/master/config",
    "GET /api/v1/master/logs",
    "GET /debug/scheduler",
}
# Operations the generator must not call, and why.
NOT_CALLED = {
    # Ends the very session the rest of the run authenticates with.
    "POST /api/v1/auth/logout": "would revoke the token the test runs as",
}


def _operation_label(operation: Any) -> str:
    return f"{operation.method.upper()} {operation.path}"


@pytest.fixture
def master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    server = Master(tmp_path, db_url)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _seed(master: Master, db_url: str) -> dict[str, str]:
    """Objects for the explicit cases: returns path parameter values by name."""
    admin = Api(master)
    created = admin.post(
        "/api/v1/users",
        json={"user": {"username": ORDINARY_USER, "active": True}, "password": ORDINARY_PASSWORD},
    )
    assert created.status_code == 200, created.text
    user = created.json()["user"]
    command = admin.post("/api/v1/commands", json={"config": {"entrypoint": "true"}})
    assert command.status_code == 200, command.text
    experiment = admin.post(
        "/api/v1/experiments",
        json={
            "config": json.dumps(
                {
                    "name": "conformance",
                    "entrypoint": "python train.py",
                    "searcher": {
                        "name": "single",
                        "metric": "validation_loss",
                        "max_length": {"batches": 1},
                    },
                }
            ),
            "modelDefinition": [{"path": "train.py", "type": 48, "content": "", "mtime": 0}],
        },
    )
    assert experiment.status_code == 200, experiment.text
    shell = admin.post("/api/v1/shells", json={})
    assert shell.status_code == 200, shell.text
    notebook = admin.post("/api/v1/notebooks", json={})
    assert notebook.status_code == 200, notebook.text
    trial_id, trial_task_id, checkpoint_uuid = _seed_finished_experiment(db_url)
    return {
        "trial_id": str(trial_id),
        "uuid": checkpoint_uuid,
        "user_id": str(user["id"]),
        "username": ORDINARY_USER,
        "command_id": command.json()["command"]["id"],
        "tasks.task_id": trial_task_id,
        "shells.task_id": shell.json()["shell"]["id"],
        "notebooks.task_id": notebook.json()["notebook"]["id"],
        "experiment_id": str(experiment.json()["experiment"]["id"]),
        "workspace_id": "1",
        "pool": "default",
        "label": "conformance",
        "metric_group": "validation",
    }


def _seed_finished_experiment(db_url: str) -> tuple[int, str, str]:
    """A completed experiment, written straight to the database (no agent runs anything): one
    trial with training and validation metrics, a completed checkpoint and a run with logs, so
    the trial, checkpoint, metrics, workload and log routes answer with real bodies. The
    running master only reads these rows (its engine holds no finished experiment)."""
    now = datetime.now(UTC)
    config = {
        "name": "finished",
        "entrypoint": "python train.py",
        "searcher": {"name": "single", "metric": "validation_loss", "max_length": {"batches": 4}},
        "hyperparameters": {"lr": 0.1},
    }
    database = Database(db_url)
    try:
        with database.session() as session:
            experiment = models.Experiment(
                owner_id=1,
                name="finished",
                state="STATE_COMPLETED",
                config=config,
                original_config=json.dumps(config),
                checkpoint_storage={"type": "shared_fs", "host_path": "/nonexistent"},
                resource_pool="default",
                progress=1.0,
                end_time=now,
            )
            session.add(experiment)
            session.flush()
            session.add(models.ExperimentLabel(experiment_id=experiment.id, label="finished"))
            trial = models.Trial(
                experiment_id=experiment.id,
                request_id="request-1",
                state="STATE_COMPLETED",
                hparams={"lr": 0.1},
                total_batches=4,
                progress=1.0,
                end_time=now,
            )
            session.add(trial)
            session.flush()
            task_id, allocation_id = f"trial-{trial.id}-run-1", f"trial-{trial.id}-run-1.0"
            session.add_all(
                [
                    models.Task(
                        id=task_id,
                        task_type="TRIAL",
                        owner_id=1,
                        resource_pool="default",
                        slots=1,
                        state="STATE_TERMINATED",
                        ended_at=now,
                    ),
                    models.TrialRun(
                        trial_id=trial.id,
                        run_id=1,
                        task_id=task_id,
                        allocation_id=allocation_id,
                        exit_handled=True,
                    ),
                ]
            )
            session.flush()
            checkpoint_uuid = str(uuid.uuid4())
            trial.latest_checkpoint = checkpoint_uuid
            session.add_all(
                [
                    models.Allocation(
                        id=allocation_id,
                        task_id=task_id,
                        state="STATE_TERMINATED",
                        agent_slots={"gone-agent": [0]},
                        started_at=now,
                        ended_at=now,
                        exit_code=0,
                        exit_reason="finished",
                    ),
                    *(
                        models.TrialMetrics(
                            trial_id=trial.id,
                            trial_run_id=1,
                            group=group,
                            steps_completed=4,
                            metrics={"loss": 0.5, "validation_loss": 0.25},
                            searcher_metric=0.25 if group == "validation" else None,
                            report_time=now,
                        )
                        for group in ("training", "validation")
                    ),
                    models.Checkpoint(
                        uuid=checkpoint_uuid,
                        trial_id=trial.id,
                        experiment_id=experiment.id,
                        task_id=task_id,
                        allocation_id=allocation_id,
                        state="STATE_COMPLETED",
                        report_time=now,
                        steps_completed=4,
                        resources={"model.pt": 128},
                        size=128,
                        metadata_={"steps_completed": 4},
                    ),
                    models.TaskLog(
                        task_id=task_id,
                        allocation_id=allocation_id,
                        agent_id="gone-agent",
                        timestamp=now,
                        stdtype="stdout",
                        log="trained 4 batches",
                    ),
                ]
            )
            return trial.id, task_id, checkpoint_uuid
    finally:
        database.close()


def _run_operation(
    operation: Any, base_url: str, session: requests.Session, failures: list[str]
) -> None:

    def check(case: Any) -> None:
        if case.query and case.query.get("follow") not in (None, False, "false"):
            # A followed log stream ends with its task; the queued command never ends.
            case.query["follow"] = False
        try:
            case.call_and_validate(base_url=base_url, session=session, checks=CHECKS, timeout=30)
        except (Exception, FailureGroup) as exc:  # collected: no failure stops the run
            failures.append(f"{_operation_label(operation)}: {case.as_curl_command()}\n  {exc}")

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @settings(
            max_examples=EXAMPLES,
            phases=[Phase.generate],
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def generated(case: Any) -> None:
            check(case)

        try:
            generated()
        except Unsatisfiable:
            # Nothing to negate (an operation without parameters or body).
            assert mode is GenerationMode.NEGATIVE


def _known_case(operation: Any, known: dict[str, str]) -> Any:
    """A case naming existing objects, or None where ``known`` has none for a parameter;
    ``task_id`` is looked up per collection (``tasks.task_id``, ``shells.task_id`` …)."""
    collection = operation.path.split("/")[3] if operation.path.startswith("/api/v1/") else ""
    values = {}
    for parameter in operation.path_parameters:
        name = parameter.name
        key = f"{collection}.{name}" if name == "task_id" else name
        if key not in known:
            return None
        values[name] = known[key]
    query = {name: known[key] for name, key in KNOWN_QUERY.get(operation.path, {}).items()}
    return operation.Case(path_parameters=values, query=query or None)


def _check_known(
    operation: Any,
    case: Any,
    base_url: str,
    session: requests.Session,
    failures: list[str],
    admin: bool,
) -> None:
    """A ``GET`` of objects that exist: 200 (or the status ``KNOWN_STATUS`` names; 403 for
    the ordinary user on ``ADMIN_ONLY`` reads), the checks, and for NDJSON every line against
    the documented line schema."""
    label = _operation_label(operation)
    try:
        response = case.call_and_validate(
            base_url=base_url, session=session, checks=CHECKS, timeout=30
        )
    except (Exception, FailureGroup) as exc:
        failures.append(f"{label} (known ids): {exc}")
        return
    expected = 403 if label in ADMIN_ONLY and not admin else KNOWN_STATUS.get(label, 200)
    if response.status_code != expected:
        failures.append(f"{label} (known ids): {response.status_code}, not {expected}")
        return
    content = operation.definition.raw["responses"]["200"].get("content", {})
    if expected == 200 and "application/x-ndjson" in content:
        validator = jsonschema_rs.validator_for(content["application/x-ndjson"]["schema"])
        lines = [json.loads(line) for line in response.text.splitlines() if line]
        for line in lines:
            for error in validator.iter_errors(line):
                failures.append(f"{label} (known ids): log line {line}: {error}")


def test_every_operation_conforms_to_the_schema(master: Master, db_url: str) -> None:
    known = _seed(master, db_url)
    schema = schemathesis.openapi.from_url(f"{master.url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the schema has an invalid operation: {result.err()}"
        operations.append(result.ok())
    assert len(operations) >= 70, [_operation_label(op) for op in operations]
    ordinary = Api(master, ORDINARY_USER, ORDINARY_PASSWORD)
    admin = Api(master)
    failures: list[str] = []
    for api in (ordinary, admin):
        # One keep-alive connection per user, as a client would hold it.
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {api.token}"
        for operation in operations:
            if _operation_label(operation) in NOT_CALLED:
                continue
            _run_operation(operation, master.url, session, failures)
            case = _known_case(operation, known)
            if case is not None and operation.method.upper() == "GET":
                _check_known(operation, case, master.url, session, failures, api is admin)
    # The master still answers, and the ordinary user was never locked out.
    assert httpx.get(f"{master.url}/info", timeout=5).status_code == 200
    assert ordinary.get("/api/v1/me").status_code == 200
    summary = Counter(failure.split(": ", 1)[0] for failure in failures)
    assert not failures, (
        "\n".join(failures[:40]) + f"\n{len(failures)} failures, by operation: {dict(summary)}"
    )


def test_every_operation_declares_a_typed_body_and_its_errors() -> None:
    """Without a server: a route added without ``documented(...)`` fails here at once."""
    schema = create_app(MasterConfig()).openapi()
    untyped, wrong_errors = [], []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            responses = operation["responses"]
            content = responses["200"].get("content", {})
            schemas = [media.get("schema", {}) for media in content.values()]
            if not schemas or any(
                s in ({}, {"type": "object", "additionalProperties": True}) for s in schemas
            ):
                untyped.append(label)
            errors = {status for status in responses if status != "200"}
            refs = {
                responses[status]["content"]["application/json"]["schema"].get("$ref")
                for status in errors
            }
            if "422" in errors or not {"400", "500"} <= errors or refs != {ERROR_REF}:
                wrong_errors.append(f"{label}: {sorted(errors)}")
    assert not untyped, f"200 without a typed body: {untyped}"
    assert not wrong_errors, f"error responses not in Determined's shape: {wrong_errors}"
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_experiment_config_text_the_database_cannot_store_is_a_400(master: Master) -> None:
    """Found by Schemathesis on PostgreSQL: YAML escapes turn a clean body into a config with a
    NUL (or a lone surrogate) that the database refuses; the master answers 400 naming where."""
    admin = Api(master)
    for escaped, problem in (('"a\\0b"', "NUL"), ('"a\\ud800b"', "surrogate")):
        text = (
            f"name: {escaped}\nentrypoint: python train.py\n"
            "searcher: {name: single, metric: loss, max_length: {batches: 1}}\n"
        )
        response = admin.post("/api/v1/experiments", json={"config": text, "modelDefinition": []})
        assert response.status_code == 400, response.text
        assert "config.name" in response.json()["message"]
        assert problem in response.json()["message"]
