"""How long ``det e create`` takes to show a first training metric: from the POST that creates an
experiment to the master storing the trial's first training metrics report, on a warm local
agent. Real master (SQLite) and agent processes; the digits example
(``examples/digits_pytorch``, DigitsTrial).

    .venv/bin/python -m bench.first_metric_latency [--rounds 5]

One master and one agent (1 slot) serve the whole run. The agent is warmed first: a command
imports what a trial imports, so those files are in the page cache as after any earlier trial.
Each round creates a new experiment the way the CLI does (the model definition packed by
``cli.context.pack_context``, the config as YAML text): ``const.yaml`` with ``scheduling_unit``
5 and 10 batches, so the first report comes after 5 batches; the round ends when the experiment
completes. The times are the master's and the agent's own timestamps (same machine, same clock),
from our clock's reading just before the POST:

    POST -> experiment created -> trial task created -> process spawned (allocation start)
    -> first training metric stored (its reportTime)

The trial writes no log line before its first validation, after the last batch, so its first
log line marks nothing useful. What happens inside the process is measured on its own instead:

- *inside the trial process*: the same trial (``python -m harness.launch``, the same config and
  hyperparameters, a fresh working directory) against the test suite's fake trial master on
  loopback, which timestamps each call: spawn -> first call (``harness.core.init`` asks about
  preemption: the imports are done) -> searcher operation asked (the trial is built: data,
  model, loaders) -> first training metrics POST (5 batches later);
- *start-up steps*, cumulative, each in a fresh interpreter: ``python -c pass``, ``import
  torch``, + ``harness.pytorch``, + TensorBoard, + scikit-learn and the digits data, + the model
  and its optimizer (whose first construction imports ``torch._dynamo``).

Last, on the same cluster, a Core API trial times 100 training metrics reports and 100 progress
reports to the real master: what the trainer waits for every ``scheduling_unit`` batches
(``bench.harness_overhead`` measures against a fake).

Target: the first training metric within 5 s of the POST.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cli.context import pack_context
from tests.fake_trial_master import (
    Call,
    experiment_config,
    running_fake_trial_master,
    trial_environ,
)
from tests.integration.cluster import Agent, Api, Master, wait_for

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits_pytorch"
TARGET_SECONDS = 5.0
POLL_SECONDS = 0.05
SCHEDULING_UNIT = 5
BATCHES = 10

# The stages of a round on the cluster, in order; each is measured from the POST.
STAGES = (
    "experiment created",
    "trial task created",
    "process spawned",
    "first training metric",
)
# The stages inside the trial process, from its spawn.
PROCESS_STAGES = (
    "first REST call (imports done)",
    "searcher op asked (trial built)",
    "first training metrics POST",
)
# What a trial process does before its first batch, in its order, each step adding to the ones
# before it and run in a fresh interpreter.
_DATA = "sys.path.insert(0, {example!r}); import model_def; model_def.load_digits_datasets()"
_MODEL = (
    "model = model_def.build_model({{'n_filters1': 32, 'n_filters2': 64, 'dropout1': 0.25, "
    "'dropout2': 0.5}}); torch.optim.Adadelta(model.parameters())"
)
STARTUP_STEPS = {
    "python -c pass": "pass",
    "import torch": "import torch",
    "+ import harness.pytorch": "import torch, harness.pytorch",
    "+ torch.utils.tensorboard (trainer)": (
        "import torch, harness.pytorch, torch.utils.tensorboard"
    ),
    "+ sklearn, the digits data (trial)": (
        "import sys, torch, harness.pytorch, torch.utils.tensorboard; " + _DATA
    ),
    "+ model, Adadelta (imports dynamo)": (
        "import sys, torch, harness.pytorch, torch.utils.tensorboard; " + _DATA + "; " + _MODEL
    ),
}

T = TypeVar("T")


def parse_time(text: str) -> datetime:
    """A master timestamp (RFC 3339, ``Z``) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def example_config(
    scheduling_unit: int = SCHEDULING_UNIT, batches: int = BATCHES
) -> dict[str, Any]:
    """``const.yaml``, reporting training metrics every ``scheduling_unit`` batches and stopping
    after ``batches``."""
    config: dict[str, Any] = yaml.safe_load((EXAMPLE / "const.yaml").read_text())
    config["name"] = "first-metric-latency"
    config["scheduling_unit"] = scheduling_unit
    config["searcher"]["max_length"] = {"batches": batches}
    config["max_restarts"] = 0
    return config


def offsets(start: datetime, times: dict[str, datetime], stages: tuple[str, ...]) -> list[float]:
    """Seconds from ``start`` to each of ``stages``."""
    return [(times[stage] - start).total_seconds() for stage in stages]


def medians(rows: list[list[float]]) -> list[float]:
    """The median of each column."""
    return [statistics.median(column) for column in zip(*rows, strict=True)]


# ---- on the cluster ----------------------------------------------------------------------------


def _wait(what: str, check: Callable[[], T | None], timeout: float = 120.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"timed out waiting for {what}")


def one_round(api: Api, files: list[Any]) -> list[float]:
    """Create one experiment; seconds from the POST to each of :data:`STAGES`."""
    config = yaml.safe_dump(example_config(), sort_keys=False)
    posted = datetime.now(UTC)
    response = api.post("/api/v1/experiments", json={"config": config, "modelDefinition": files})
    response.raise_for_status()
    experiment = response.json()["experiment"]
    experiment_id = experiment["id"]

    def first_trial() -> dict[str, Any] | None:
        trials = api.get(f"/api/v1/experiments/{experiment_id}/trials").json()["trials"]
        return trials[0] if trials and trials[0].get("taskId") else None

    trial = _wait("the trial", first_trial)
    path = f"/api/v1/trials/{trial['id']}/metrics"
    metrics: list[dict[str, Any]] = _wait(
        "the first training metric",
        lambda: api.get(path, params={"group": "training"}).json()["metrics"],
    )
    _wait("the experiment to complete", lambda: _completed(api, experiment_id))
    task = api.task(trial["taskId"])
    times = {
        "experiment created": parse_time(experiment["startTime"]),
        "trial task created": parse_time(task["startTime"]),
        "process spawned": parse_time(task["allocations"][0]["startTime"]),
        "first training metric": parse_time(metrics[0]["reportTime"]),
    }
    return offsets(posted, times, STAGES)


def _completed(api: Api, experiment_id: int) -> bool:
    state = api.get(f"/api/v1/experiments/{experiment_id}").json()["experiment"]["state"]
    if state in ("STATE_CANCELED", "STATE_ERROR"):
        raise RuntimeError(f"experiment {experiment_id} ended {state}")
    return bool(state == "STATE_COMPLETED")


def warm_agent(api: Api) -> None:
    """Run a command importing what a trial imports, and wait for it to end."""
    code = "import harness.pytorch, torch._dynamo, torch.utils.tensorboard, sklearn.datasets"
    task_id = api.run(["python", "-c", code])
    task = api.wait_ended(task_id, timeout=120)
    if task["allocations"][0]["exitCode"] != 0:
        raise RuntimeError(f"the warm-up command failed: {api.task_output(task_id)}")


# A Core API trial timing the reports the trainer makes every scheduling_unit batches.
REPORT_PROBE = """\
import statistics, time
import harness.core

with harness.core.init() as core:
    for op in core.searcher.operations():
        metrics, progress = [], []
        for step in range(1, {reports} + 1):
            start = time.perf_counter()
            core.train.report_training_metrics(step, {{"loss": 1.0 / step}})
            metrics.append(time.perf_counter() - start)
            start = time.perf_counter()
            core.train.report_progress(step / {reports})
            progress.append(time.perf_counter() - start)
        print("REPORT_MS", statistics.median(metrics) * 1e3, statistics.median(progress) * 1e3)
        core.train.report_validation_metrics(op.length, {{"validation_loss": 0.5}})
        op.report_completed(0.5)
"""


def report_latency(api: Api, workdir: Path, reports: int = 100) -> tuple[float, float]:
    """Median milliseconds of a training metrics report and of a progress report, made by a
    trial (``harness.core``) to this master: what the trainer waits for at every report."""
    context = workdir / "report-probe"
    context.mkdir()
    (context / "probe.py").write_text(REPORT_PROBE.format(reports=reports))
    config = {
        "name": "report-latency",
        "entrypoint": "python probe.py",
        "searcher": {"name": "single", "metric": "validation_loss", "max_length": reports},
        "max_restarts": 0,
    }
    response = api.post(
        "/api/v1/experiments",
        json={"config": yaml.safe_dump(config), "modelDefinition": pack_context(context)},
    )
    response.raise_for_status()
    experiment_id = response.json()["experiment"]["id"]
    _wait("the report probe", lambda: _completed(api, experiment_id))
    (trial,) = api.get(f"/api/v1/experiments/{experiment_id}/trials").json()["trials"]
    for line in api.task_output(trial["taskId"]):
        if line.startswith("REPORT_MS"):
            metrics, progress = line.split()[1:]
            return float(metrics), float(progress)
    raise RuntimeError("the report probe printed no REPORT_MS line")


def cluster_rounds(rounds: int) -> tuple[list[list[float]], tuple[float, float]]:
    """``rounds`` experiments on a fresh master and warm agent (one row of offsets each), then
    the trial's report latency to that master (:func:`report_latency`)."""
    files = pack_context(EXAMPLE)
    rows: list[list[float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        master = Master(workdir, f"sqlite:///{workdir / 'flotilla.db'}")
        master.start()
        agent = Agent(workdir, master, "bench-agent", slots=1)
        try:
            agent.start()
            api = Api(master)
            wait_for("the agent to join", api.agents, logs=[master.log_path, agent.log_path])
            warm_agent(api)
            for round_ in range(1, rounds + 1):
                row = one_round(api, files)
                rows.append(row)
                steps = ", ".join(f"{s} {t:.3f} s" for s, t in zip(STAGES, row, strict=True))
                print(f"round {round_}: {steps}", flush=True)
            latency = report_latency(api, workdir)
        finally:
            agent.stop()
            master.stop()
    return rows, latency


# ---- inside the trial process -------------------------------------------------------------------


def trial_process(workdir: Path) -> list[float]:
    """One run of the trial as its agent would start it, against the loopback fake master;
    seconds from the spawn to each of :data:`PROCESS_STAGES`."""
    config = example_config()
    cwd = workdir / "context"
    shutil.copytree(EXAMPLE, cwd)
    with running_fake_trial_master([BATCHES]) as master:
        stamps: list[tuple[float, Call]] = []
        handle = master.handle

        def stamped(call: Call) -> tuple[int, Any]:
            stamps.append((time.time(), call))
            return handle(call)

        master.handle = stamped  # type: ignore[method-assign]
        env = trial_environ(
            master,
            config=experiment_config(**config),
            hparams=config["hyperparameters"],
            storage_dir=workdir / "checkpoints",
            DET_TENSORBOARD_DIR=str(workdir / "tensorboard"),
        )
        spawned = time.time()
        subprocess.run(
            [sys.executable, "-m", "harness.launch"],
            cwd=cwd,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    first_call = stamps[0][0]
    operation = next(t for t, c in stamps if c.path.endswith("/searcher/operation"))
    metric = next(
        t
        for t, c in stamps
        if c.path.endswith("/metrics") and c.body and c.body["group"] == "training"
    )
    return [first_call - spawned, operation - spawned, metric - spawned]


def startup_times(repeats: int = 3) -> dict[str, float]:
    """Median wall seconds of each of :data:`STARTUP_STEPS` in a fresh interpreter."""
    found = {}
    for name, code in STARTUP_STEPS.items():
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", code.format(example=str(EXAMPLE))], check=True, cwd=REPO
            )
            runs.append(time.perf_counter() - start)
        found[name] = statistics.median(runs)
    return found


# ---- main --------------------------------------------------------------------------------------


def _table(title: str, stages: tuple[str, ...], rows: list[list[float]]) -> None:
    print(f"\n{title}")
    previous = 0.0
    tops = [max(column) for column in zip(*rows, strict=True)]
    for stage, median, top in zip(stages, medians(rows), tops, strict=True):
        print(f"  {stage:<36} {median:6.3f} s  (step {median - previous:+.3f} s)  max {top:.3f} s")
        previous = median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="experiments on the cluster")
    parser.add_argument("--process-runs", type=int, default=3, help="trial runs on the fake")
    args = parser.parse_args()

    rows, (metrics_ms, progress_ms) = cluster_rounds(args.rounds)
    process_rows = []
    for _ in range(args.process_runs):
        with tempfile.TemporaryDirectory() as tmp:
            process_rows.append(trial_process(Path(tmp)))
    startup = startup_times()

    _table(f"on the cluster, medians of {args.rounds} rounds (seconds from the POST)", STAGES, rows)
    _table(
        f"inside the trial process, medians of {args.process_runs} runs (seconds from the spawn)",
        PROCESS_STAGES,
        process_rows,
    )
    print("\ntrial start-up steps, each in a fresh interpreter (median of 3):")
    for name, seconds in startup.items():
        print(f"  {name:<36} {seconds:6.3f} s")
    print(
        f"\na trial's reports to this master (median of 100): metrics {metrics_ms:.2f} ms, "
        f"progress {progress_ms:.2f} ms"
    )
    worst = max(row[-1] for row in rows)
    verdict = "met" if worst <= TARGET_SECONDS else "MISSED"
    print(f"\ntarget (first training metric <= {TARGET_SECONDS:g} s after the POST): {verdict}")


if __name__ == "__main__":
    main()
