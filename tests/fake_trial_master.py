"""A loopback stand-in for the master's side of a trial, for testing ``harness.core``, the trainer
and ``python -m harness.launch`` without a master.

It serves the REST calls a trial makes (docs/design/experiments.md, "REST used by the harness"),
checks the allocation token, and records every call. A test scripts it:

- ``ops``: the ``ValidateAfter`` lengths the searcher hands out, one after another; when all are
  completed, the searcher is done (``completed: true``). ``hold`` answers "no operation yet".
- preemption: :meth:`FakeTrialMaster.preempt` now, or ``preempt_when(call)`` — a predicate over
  each recorded call, e.g. "training metrics at step >= 20 arrived".
- ``rendezvous_agents``: the agents (id → slots) of a trial spread over several agents, whose
  launchers meet through ``POST /api/v1/allocations/{id}/rendezvous`` (the master's own
  ``master.rendezvous.group_view`` computes the answer).

Also here: :func:`trial_environ`, the variables the agent would give a trial running against
this fake, with checkpoints in a shared_fs directory.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from harness.experiment_config import parse_experiment_config
from master.rendezvous import Arrival, group_view

REPO = Path(__file__).resolve().parents[1]
TASK_ID = "trial-task-3"
ALLOCATION_ID = "trial-task-3.1"
SESSION_TOKEN = "trial-allocation-token"


@dataclass(frozen=True)
class Call:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None


class FakeTrialMaster:
    """State, controls and recorded calls; build it with :func:`running_fake_trial_master`."""

    def __init__(self, ops: list[int], trial_id: int, allocation_id: str) -> None:
        self.url = ""
        self.trial_id = trial_id
        self.allocation_id = allocation_id
        self.ops = list(ops)  # lengths still to complete; ops[0] is the current one
        self.hold = False  # answer "no operation yet, not completed"
        self.preempt_when: Callable[[Call], bool] | None = None
        self.calls: list[Call] = []
        self.batches: list[int] = []  # reports per POST /reports, in order
        self.preempted = False
        self.closing = False
        self.rendezvous_agents: dict[str, int] = {}
        self.arrivals: dict[str, Arrival] = {}
        self.changed = threading.Condition()

    # ---- controls ---------------------------------------------------------------------------

    def preempt(self) -> None:
        with self.changed:
            self.preempted = True
            self.changed.notify_all()

    # ---- what the trial did -----------------------------------------------------------------

    def posts(self, suffix: str) -> list[Any]:
        """Bodies of the POSTs whose path ends with ``suffix``, in order."""
        with self.changed:
            return [c.body for c in self.calls if c.method == "POST" and c.path.endswith(suffix)]

    def metrics(self, group: str) -> list[dict[str, Any]]:
        """The ``metrics`` objects of the reports of ``group`` (training | validation)."""
        return [b["metrics"] for b in self.posts("/metrics") if b["group"] == group]

    def checkpoints(self) -> list[dict[str, Any]]:
        return [b["checkpoint"] for b in self.posts("/api/v1/checkpoints")]

    def completed_ops(self) -> list[tuple[int, float]]:
        return [
            (b["op"]["validateAfter"]["length"], b["searcherMetric"])
            for b in self.posts("/searcher/completed_operation")
        ]

    def progress(self) -> list[float]:
        return [b["progress"] for b in self.posts("/progress")]

    def acks(self) -> int:
        return len(self.posts("/signals/ack_preemption"))

    def early_exits(self) -> list[str]:
        return [b["reason"] for b in self.posts("/early_exit")]

    def latest_checkpoint(self) -> str | None:
        checkpoints = self.checkpoints()
        return checkpoints[-1]["uuid"] if checkpoints else None

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("condition not reached")
                self.changed.wait(remaining)

    # ---- serving ----------------------------------------------------------------------------

    def handle(self, call: Call) -> tuple[int, Any]:
        """The answer to ``call`` (status, JSON body); long polls block here."""
        if call.authorization != f"Bearer {SESSION_TOKEN}":
            return 401, {"code": 16, "message": "bad allocation token", "details": []}
        trial = f"/api/v1/trials/{self.trial_id}"
        allocation = f"/api/v1/allocations/{self.allocation_id}/signals"
        with self.changed:
            if call.method == "POST" and call.path == f"{trial}/reports":
                # The reporter's batch: recorded as the single reports it carries, in order.
                self.batches.append(len(call.body["reports"]))
                for report in call.body["reports"]:
                    if "checkpoint" in report:
                        path, body = "/api/v1/checkpoints", {"checkpoint": report["checkpoint"]}
                    elif "metrics" in report:
                        path, body = f"{trial}/metrics", report["metrics"]
                    else:
                        path, body = f"{trial}/progress", report
                    single = Call("POST", path, {}, body, call.authorization)
                    self.calls.append(single)
                    if self.preempt_when is not None and self.preempt_when(single):
                        self.preempted = True
                self.changed.notify_all()
                return 200, {"stored": len(call.body["reports"]), "repeated": 0}
            if call.method == "POST":
                self.calls.append(call)
                if self.preempt_when is not None and self.preempt_when(call):
                    self.preempted = True
                self.changed.notify_all()
            route = (call.method, call.path)
            if route == ("GET", f"{trial}/searcher/operation"):
                if self.hold:
                    return 200, {"op": None, "completed": False}
                if not self.ops:
                    return 200, {"op": None, "completed": True}
                return 200, {"op": {"validateAfter": {"length": self.ops[0]}}, "completed": False}
            if route == ("POST", f"{trial}/searcher/completed_operation"):
                length = call.body["op"]["validateAfter"]["length"]
                if not self.ops or self.ops[0] != length:
                    return 400, {"code": 3, "message": f"no operation of length {length}"}
                self.ops.pop(0)
                return 200, {}
            if route == ("POST", f"/api/v1/allocations/{self.allocation_id}/rendezvous"):
                body = call.body
                if body["agentId"] not in self.rendezvous_agents:
                    message = f"agent '{body['agentId']}' holds no slots of this allocation"
                    return 400, {"code": 3, "message": message, "details": []}
                self.arrivals[body["agentId"]] = Arrival(
                    body["agentId"], body["address"], body["slots"], body.get("port")
                )
                self.changed.notify_all()
                deadline = time.monotonic() + float(call.query.get("timeoutSeconds", "0"))
                view = group_view(self.rendezvous_agents, self.arrivals)
                while not (view.ready or self.closing):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self.changed.wait(remaining)
                    view = group_view(self.rendezvous_agents, self.arrivals)
                return 200, view.to_json()
            if route == ("GET", f"{allocation}/preemption"):
                deadline = time.monotonic() + float(call.query.get("timeoutSeconds", "0"))
                while not (self.preempted or self.closing):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self.changed.wait(remaining)
                return 200, {"preempt": self.preempted}
            if call.method == "POST" and call.path in (
                f"{trial}/metrics",
                f"{trial}/progress",
                f"{trial}/early_exit",
                "/api/v1/checkpoints",
                f"{allocation}/ack_preemption",
            ):
                return 200, {}
        return 404, {"code": 5, "message": f"no route {call.method} {call.path}", "details": []}


def _handler_for(master: FakeTrialMaster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real master behind uvicorn
        # TCP_NODELAY, as uvicorn sets: an answer goes out in two writes (headers, body), and
        # with Nagle's algorithm the body would wait for the client's delayed ACK (~40 ms).
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            body = json.loads(raw) if raw.strip() else None
            call = Call(method, parts.path, query, body, self.headers.get("Authorization"))
            status, answer = master.handle(call)
            data = json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the trial exited during a long poll, as trials do

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_fake_trial_master(
    ops: list[int], *, trial_id: int = 1, allocation_id: str = ALLOCATION_ID
) -> Iterator[FakeTrialMaster]:
    """A fake serving on 127.0.0.1 (a free port) for the ``with`` block."""
    master = FakeTrialMaster(ops, trial_id, allocation_id)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(master))
    server.daemon_threads = True
    server.block_on_close = False
    master.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield master
    finally:
        with master.changed:
            master.closing = True  # long polls answer now
            master.changed.notify_all()
        server.shutdown()
        server.server_close()
        thread.join()


def experiment_config(**fields: Any) -> dict[str, Any]:
    """A validated experiment config as the master passes it (``model_dump(mode="json")``)."""
    base: dict[str, Any] = {
        "entrypoint": "model_def:Trial",
        "searcher": {"name": "single", "metric": "validation_loss", "max_length": {"batches": 8}},
    }
    base.update(fields)
    return parse_experiment_config(base).model_dump(mode="json")


def trial_environ(
    master: FakeTrialMaster,
    *,
    config: dict[str, Any],
    hparams: dict[str, Any],
    storage_dir: Path,
    latest_checkpoint: str | None = None,
    experiment_id: int = 1,
    trial_run_id: int = 1,
    base: dict[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """The variables of a trial run against ``master`` (on top of ``base``, default ours)."""
    storage_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if base is None else base)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "DET_TENSORBOARD_DIR"):
        env.pop(name, None)
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        DET_MASTER=master.url,
        DET_TASK_ID=TASK_ID,
        DET_ALLOCATION_ID=master.allocation_id,
        DET_SESSION_TOKEN=SESSION_TOKEN,
        DET_EXPERIMENT_ID=str(experiment_id),
        DET_TRIAL_ID=str(master.trial_id),
        DET_TRIAL_RUN_ID=str(trial_run_id),
        DET_HPARAMS=json.dumps(hparams),
        DET_EXPERIMENT_CONFIG=json.dumps(config),
        DET_LATEST_CHECKPOINT=latest_checkpoint or "",
        DET_CHECKPOINT_STORAGE=json.dumps({"type": "shared_fs", "host_path": str(storage_dir)}),
        **extra,
    )
    return env
