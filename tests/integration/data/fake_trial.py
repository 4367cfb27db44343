"""A stand-in trial for the experiment lifecycle tests: plain REST calls, no trainer.

Uploaded as the experiment's model definition and run as its entrypoint (``python
fake_trial.py``) by ``harness.launch``. It asks the master for searcher operations, "trains" one
batch per step (reporting training metrics), validates, checkpoints through ``harness.storage``
and reports all of it; between steps it checks the preemption signal and, when asked, checkpoints
and exits. Calls that cannot reach the master (it is restarting) are retried.

Environment (from the experiment config's ``environment_variables``):

- ``FAKE_STEP_SECONDS``: sleep per batch (default 0);
- ``FAKE_CRASH_AT``: checkpoint and exit 3 once this many batches are trained in this run;
- ``FAKE_IGNORE_PREEMPTION``: never look at the preemption signal;
- ``FAKE_CHECKPOINT_EVERY``: also checkpoint every this many batches (a machine that vanishes
  mid-operation leaves something to resume from).

With ``DET_WARM_START_CHECKPOINT`` it reads that checkpoint from ``DET_WARM_START_STORAGE`` and
prints what it found, but trains from step 0.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from harness.storage import build_storage

MASTER = os.environ["DET_MASTER"]
TOKEN = os.environ["DET_SESSION_TOKEN"]
TRIAL = int(os.environ["DET_TRIAL_ID"])
RUN = int(os.environ["DET_TRIAL_RUN_ID"])
ALLOCATION = os.environ["DET_ALLOCATION_ID"]
TASK = os.environ["DET_TASK_ID"]
HPARAMS = json.loads(os.environ["DET_HPARAMS"])
LATEST = os.environ.get("DET_LATEST_CHECKPOINT", "")
WARM_START = os.environ.get("DET_WARM_START_CHECKPOINT", "")
STORAGE = build_storage(json.loads(os.environ["DET_CHECKPOINT_STORAGE"]))
STEP_SECONDS = float(os.environ.get("FAKE_STEP_SECONDS", "0"))
CRASH_AT = int(os.environ.get("FAKE_CRASH_AT", "0"))
IGNORE_PREEMPTION = bool(os.environ.get("FAKE_IGNORE_PREEMPTION"))
CHECKPOINT_EVERY = int(os.environ.get("FAKE_CHECKPOINT_EVERY", "0"))


def call(method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        MASTER + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            print(f"{method} {path}: {exc.code} {exc.read().decode()}", flush=True)
            raise
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise
            print(f"{method} {path}: {exc}; retrying", flush=True)
            time.sleep(0.5)


def checkpoint(steps: int) -> str:
    name = str(uuid.uuid4())
    with STORAGE.store_path(name) as path:
        (path / "state.json").write_text(json.dumps({"steps": steps, "trial": TRIAL}))
    call(
        "POST",
        "/api/v1/checkpoints",
        {
            "checkpoint": {
                "uuid": name,
                "taskId": TASK,
                "allocationId": ALLOCATION,
                "resources": STORAGE.files(name),
                "metadata": {"steps_completed": steps, "framework": "fake"},
                "state": "STATE_COMPLETED",
            }
        },
    )
    print(f"checkpoint {name} at {steps}", flush=True)
    return name


def metrics(group: str, steps: int, values: dict[str, float]) -> None:
    body = {
        "metrics": {
            "trialId": TRIAL,
            "trialRunId": RUN,
            "stepsCompleted": steps,
            "avgMetrics": values,
        },
        "group": group,
    }
    call("POST", f"/api/v1/trials/{TRIAL}/metrics", body)


def preempted() -> bool:
    answer = call("GET", f"/api/v1/allocations/{ALLOCATION}/signals/preemption?timeoutSeconds=0")
    return bool(answer.get("preempt"))


def main() -> int:
    steps = 0
    if LATEST:
        with STORAGE.restore_path(LATEST) as path:
            steps = json.loads((path / "state.json").read_text())["steps"]
    print(
        f"run {RUN} latest={LATEST or '-'} steps={steps} hparams={json.dumps(HPARAMS)}", flush=True
    )
    if WARM_START:  # read it where the master says it is, but start counting from 0
        warm_storage = build_storage(json.loads(os.environ["DET_WARM_START_STORAGE"]))
        with warm_storage.restore_path(WARM_START) as path:
            source = json.loads((path / "state.json").read_text())
        print(
            f"warm start from {WARM_START}: trial {source['trial']} at {source['steps']}",
            flush=True,
        )
    trained_here = 0
    while True:
        answer = call("GET", f"/api/v1/trials/{TRIAL}/searcher/operation")
        if answer["op"] is None:
            if answer["completed"]:
                print("searcher: done", flush=True)
                return 0
            time.sleep(0.2)
            continue
        length = int(answer["op"]["validateAfter"]["length"])
        while steps < length:
            steps += 1
            trained_here += 1
            metrics("training", steps, {"loss": 1.0 / steps})
            time.sleep(STEP_SECONDS)
            if CRASH_AT and trained_here >= CRASH_AT:
                checkpoint(steps)
                print(f"crashing at {steps}", flush=True)
                return 3
            if CHECKPOINT_EVERY and steps % CHECKPOINT_EVERY == 0 and steps < length:
                checkpoint(steps)
            if not IGNORE_PREEMPTION and preempted():
                checkpoint(steps)
                call("POST", f"/api/v1/allocations/{ALLOCATION}/signals/ack_preemption")
                print(f"preempted at {steps}", flush=True)
                return 0
        value = float(HPARAMS.get("x", 1)) / steps
        metrics("validation", steps, {"validation_loss": value})
        checkpoint(steps)
        call(
            "POST",
            f"/api/v1/trials/{TRIAL}/searcher/completed_operation",
            {"op": {"validateAfter": {"length": length}}, "searcherMetric": value},
        )
        call("POST", f"/api/v1/trials/{TRIAL}/progress", {"progress": 1.0})


if __name__ == "__main__":
    sys.exit(main())
