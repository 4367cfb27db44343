"""A fake master for ``det experiment|trial|checkpoint``: the "REST used by people" of
``docs/design/experiments.md`` over a real loopback HTTP server.

It extends ``test_cli_fake_master.FakeMaster`` (users, login) with experiments, trials, trial
logs, checkpoints and checkpoint tars, in Determined's wire shapes. Its HTTP handler adds what
the shared one lacks: ``PUT`` (labels) and raw byte bodies (``…/content`` tars). State is plain
dicts a test arranges and inspects; ``requests`` records every call. The experiment tests,
``test_cli_trial.py`` and ``test_cli_checkpoint.py`` share it through the ``exp_fake`` fixture.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest
import yaml

from cli import experiment_create
from tests.unit.test_cli_fake_master import (  # noqa: F401  (fixtures by name)
    FakeMaster,
    Result,
    cli_env_fixture,
    det_fixture,
)

Det = Callable[..., Result]
UUID = "0b3c2f4e-1111-4222-8333-444455556666"
STARTED = "2024-05-01T12:00:00Z"
ENDED = "2024-05-01T12:30:00Z"
CONFIG_YAML = """\
# a comment the master should see
name: mnist
entrypoint: model_def:MnistTrial
hyperparameters:
  lr: 0.1
  layers: {type: int, minval: 1, maxval: 3}
searcher:
  name: random
  metric: validation_loss
  max_trials: 2
  max_length: {batches: 100}
"""


def make_experiment(exp_id: int, **fields: Any) -> dict[str, Any]:
    """A ``v1Experiment`` with the fields the CLI shows."""
    exp: dict[str, Any] = {
        "id": exp_id,
        "name": f"exp-{exp_id}",
        "description": "",
        "username": "determined",
        "state": "STATE_ACTIVE",
        "progress": 0.5,
        "startTime": STARTED,
        "endTime": None,
        "archived": False,
        "labels": [],
        "resourcePool": "default",
        "forkedFrom": None,
        "searcherMetric": "validation_loss",
        "numTrials": 0,
        "projectId": 1,
        "config": yaml.safe_load(CONFIG_YAML),
    }
    exp.update(fields)
    return exp


def make_trial(trial_id: int, exp_id: int, **fields: Any) -> dict[str, Any]:
    """A ``trialv1Trial``."""
    trial: dict[str, Any] = {
        "id": trial_id,
        "experimentId": exp_id,
        "state": "STATE_ACTIVE",
        "hparams": {"lr": 0.1, "layers": trial_id},
        "startTime": STARTED,
        "endTime": None,
        "totalBatchesProcessed": 100 * trial_id,
        "restarts": 0,
        "summaryMetrics": None,
    }
    trial.update(fields)
    return trial


def make_checkpoint(
    uuid: str, trial_id: int, exp_id: int, loss: float | None, *, steps: int = 100, **fields: Any
) -> dict[str, Any]:
    """A ``v1Checkpoint`` of a trial, with its validation loss (if any) and experiment config."""
    ckpt: dict[str, Any] = {
        "uuid": uuid,
        "taskId": f"{exp_id}.{trial_id}",
        "allocationId": f"{exp_id}.{trial_id}.1",
        "reportTime": ENDED,
        "resources": {"state.pt": 2048, "metadata.json": 64},
        "metadata": {"steps_completed": steps, "framework": "torch"},
        "state": "STATE_COMPLETED",
        "training": {
            "trialId": trial_id,
            "experimentId": exp_id,
            "experimentConfig": yaml.safe_load(CONFIG_YAML),
            "hparams": {"lr": 0.1},
            "validationMetrics": (
                {"avgMetrics": {"validation_loss": loss}} if loss is not None else None
            ),
            "searcherMetric": loss,
        },
    }
    ckpt.update(fields)
    return ckpt


@dataclass
class ExperimentFake(FakeMaster):
    """FakeMaster plus experiments, trials and checkpoints (see the module docstring)."""

    experiments: dict[int, dict[str, Any]] = field(default_factory=dict)
    trials: dict[int, dict[str, Any]] = field(default_factory=dict)
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    trial_logs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    # Raw answer of GET /api/v1/checkpoints/{uuid}/content (a tar), or (status, JSON error).
    contents: dict[str, bytes | tuple[int, dict[str, Any]]] = field(default_factory=dict)
    # GET /api/v1/trials/{id}/workloads: None answers 404 (a master without that endpoint).
    workloads: dict[int, list[dict[str, Any]]] | None = None
    # States GET /api/v1/experiments/{id} plays, one per call (the last one repeats).
    state_script: dict[int, list[str]] = field(default_factory=dict)
    # What POST /api/v1/experiments creates besides the experiment: trials shown after N polls.
    new_trials: list[dict[str, Any]] = field(default_factory=list)
    trials_hidden_polls: int = 0
    new_trial_logs: list[str] = field(default_factory=list)
    # Every request's query string, parsed: (method, path, query).
    queries: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any, token: str):
        self.queries.append((method, path, query))
        return super().handle(method, path, query, body, token)

    def route(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, me: str, tok: str
    ):
        parts = [unquote(p) for p in path.strip("/").split("/")[2:]]
        if parts[:1] == ["experiments"]:
            return self._experiments(method, parts[1:], query, body, me)
        if parts[:1] == ["trials"] and len(parts) >= 2:
            return self._trials(method, int(parts[1]), parts[2:], query)
        if parts[:1] == ["checkpoints"] and len(parts) >= 2:
            if parts[1] not in self.checkpoints:
                return 404, {"code": 5, "message": f"checkpoint {parts[1]} not found"}
            if parts[2:] == ["content"]:
                content = self.contents.get(parts[1])
                if isinstance(content, bytes):
                    return 200, content
                return content or (404, {"code": 5, "message": "no content"})
            return 200, {"checkpoint": self.checkpoints[parts[1]]}
        return super().route(method, path, query, body, me, tok)

    # ---- experiments ---------------------------------------------------------------------------

    def _experiments(
        self, method: str, rest: list[str], query: dict[str, list[str]], body: Any, me: str
    ):
        if not rest and method == "POST":
            return self._create(body, me)
        if not rest:
            items = list(self.experiments.values())
            if query.get("archived") == ["false"]:
                items = [e for e in items if not e["archived"]]
            if "users" in query:
                items = [e for e in items if e["username"] in query["users"]]
            return 200, self._page("experiments", items, query)
        exp_id = int(rest[0])
        if exp_id not in self.experiments:
            return 404, {"code": 5, "message": f"experiment {exp_id} not found"}
        exp = self.experiments[exp_id]
        action = rest[1:]
        if not action:
            script = self.state_script.get(exp_id)
            if script:
                exp["state"] = script.pop(0) if len(script) > 1 else script[0]
            return 200, {"experiment": exp, "config": exp["config"], "jobSummary": None}
        if action == ["trials"]:
            trials = [t for t in self.trials.values() if t["experimentId"] == exp_id]
            if self.trials_hidden_polls > 0:
                self.trials_hidden_polls -= 1
                trials = []
            return 200, self._page("trials", trials, query)
        if action == ["checkpoints"]:
            ckpts = [
                c for c in self.checkpoints.values() if c["training"]["experimentId"] == exp_id
            ]
            return 200, {"checkpoints": ckpts, "pagination": {"total": len(ckpts)}}
        if action[0] == "labels" and method in ("PUT", "DELETE"):
            labels = [label for label in exp["labels"] if label != action[1]]
            exp["labels"] = [*labels, action[1]] if method == "PUT" else labels
            return 200, {"labels": exp["labels"]}
        if method == "POST" and len(action) == 1:
            changes = {
                "kill": {"state": "STATE_STOPPING_CANCELED"},
                "pause": {"state": "STATE_PAUSED"},
                "activate": {"state": "STATE_ACTIVE"},
                "archive": {"archived": True},
                "unarchive": {"archived": False},
            }
            if action[0] in changes:
                exp.update(changes[action[0]])
                return 200, {}
        return 404, {"code": 5, "message": f"no route for {method} experiments/{rest}"}

    def _create(self, body: dict[str, Any], me: str):
        config = yaml.safe_load(body["config"])
        exp_id = len(self.experiments) + 1
        state = "STATE_ACTIVE" if body.get("activate") else "STATE_PAUSED"
        exp = make_experiment(exp_id, username=me, state=state, config=config, progress=0.0)
        self.experiments[exp_id] = exp
        for trial in self.new_trials:
            self.trials[trial["id"]] = {**trial, "experimentId": exp_id}
            self.trial_logs[trial["id"]] = [{"message": m} for m in self.new_trial_logs]
        return 200, {"experiment": exp, "config": config}

    @staticmethod
    def _page(key: str, items: list[Any], query: dict[str, list[str]]) -> dict[str, Any]:
        offset = int(query.get("offset", ["0"])[0])
        limit = int(query.get("limit", ["0"])[0]) or len(items)
        page = items[offset : offset + limit]
        end = offset + len(page)
        pagination = {"offset": offset, "limit": limit, "startIndex": offset, "endIndex": end}
        return {key: page, "pagination": {**pagination, "total": len(items)}}

    # ---- trials --------------------------------------------------------------------------------

    def _trials(self, method: str, trial_id: int, rest: list[str], query: dict[str, list[str]]):
        if trial_id not in self.trials:
            return 404, {"code": 5, "message": f"trial {trial_id} not found"}
        trial = self.trials[trial_id]
        if not rest:
            return 200, {"trial": trial}
        if rest == ["logs"]:
            entries = self.trial_logs.get(trial_id, [])
            if "limit" in query:
                entries = entries[: int(query["limit"][0])]
            lines = [{"id": i, "trialId": trial_id, **e} for i, e in enumerate(entries)]
            return 200, [{"result": line} for line in lines]
        if rest == ["kill"] and method == "POST":
            trial["state"] = "STATE_STOPPING_KILLED"
            return 200, {}
        if rest == ["checkpoints"]:
            ckpts = [c for c in self.checkpoints.values() if c["training"]["trialId"] == trial_id]
            return 200, {"checkpoints": ckpts, "pagination": {"total": len(ckpts)}}
        if rest == ["workloads"] and self.workloads is not None:
            return 200, self._page("workloads", self.workloads.get(trial_id, []), query)
        return 404, {"code": 5, "message": f"no route for {method} trials/{trial_id}/{rest}"}

    # ---- inspection helpers ------------------------------------------------------------------

    def calls(self, method: str, path: str) -> list[Any]:
        return [b for m, p, b in self.requests if (m, p) == (method, path)]

    def query(self, method: str, path: str) -> dict[str, list[str]]:
        """The query string of the last ``method path`` request."""
        return [q for m, p, q in self.queries if (m, p) == (method, path)][-1]


def _handler(fake: ExperimentFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            status, payload = fake.handle(self.command, url.path, parse_qs(url.query), body, token)
            if isinstance(payload, bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/x-tar")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            if isinstance(payload, list):  # ndjson, ended by closing the connection
                self.send_response(status)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                for line in payload:
                    self.wfile.write((json.dumps(line) + "\n").encode())
                    self.wfile.flush()
                    time.sleep(0.005)
                return
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(name="exp_fake")
def exp_fake_fixture(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ExperimentFake]:
    fake = ExperimentFake()
    fake.add_user("admin", admin=True)
    fake.add_user("determined")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("DET_MASTER", fake.url)
    monkeypatch.setattr(experiment_create, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(experiment_create, "FOLLOW_END_WAIT_SECONDS", 2.0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
