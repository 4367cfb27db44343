"""``det trial`` against the fake master of ``test_cli_experiment_fake``."""

from __future__ import annotations

import json

from tests.unit.test_cli_experiment_fake import (  # noqa: F401  (fixtures by name)
    ENDED,
    UUID,
    Det,
    ExperimentFake,
    cli_env_fixture,
    det_fixture,
    exp_fake_fixture,
    make_checkpoint,
    make_experiment,
    make_trial,
)

VALIDATION = {
    "metrics": {"avgMetrics": {"validation_loss": 0.25}},
    "numInputs": 64,
    "totalBatches": 100,
    "endTime": ENDED,
}
WORKLOADS = [
    {
        "training": {
            "metrics": {"avgMetrics": {"loss": 0.5}, "batchMetrics": [{"loss": 0.6}]},
            "numInputs": 6400,
            "totalBatches": 100,
            "endTime": "2024-05-01T12:10:00Z",
        }
    },
    {"validation": VALIDATION},
    {
        "checkpoint": {
            "uuid": UUID,
            "state": "STATE_COMPLETED",
            "totalBatches": 100,
            "endTime": ENDED,
            "metadata": {"steps_completed": 100},
            "resources": {"state.pt": 2048},
        }
    },
]


def setup(fake: ExperimentFake) -> None:
    fake.experiments[1] = make_experiment(1)
    fake.trials[3] = make_trial(
        3,
        1,
        state="STATE_COMPLETED",
        endTime=ENDED,
        hparams={"lr": 0.1},
        summaryMetrics={"validation": {"validation_loss": {"min": 0.25}}},
        latestValidation=VALIDATION,
    )


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.split("|")]


def test_describe_prints_the_trial_and_its_workloads(exp_fake: ExperimentFake, det: Det) -> None:
    setup(exp_fake)
    exp_fake.workloads = {3: WORKLOADS}
    result = det("trial", "describe", "3")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert cells(lines[0]) == [
        "Experiment ID",
        "State",
        "H-Params",
        "Summary Metrics",
        "Started",
        "Ended",
    ]
    assert cells(lines[2])[:3] == ["1", "COMPLETED", "{"]
    at = lines.index("Workloads:")
    assert cells(lines[at + 1]) == [
        "# of Batches",
        "Report Time",
        "Checkpoint",
        "Checkpoint UUID",
        "Checkpoint Metadata",
        "Validation Metrics",
    ]
    body = lines[at + 3 :]
    assert cells(body[0]) == ["100", "2024-05-01 12:10:00+0000", "", "", "", ""]
    assert cells(body[1])[:6] == ["100", "2024-05-01 12:30:00+0000", "", "", "", "{"]
    assert '"validation_loss": 0.25' in "\n".join(body)
    assert any(
        cells(line)[:4] == ["100", "2024-05-01 12:30:00+0000", "COMPLETED", UUID] for line in body
    )
    assert exp_fake.query("GET", "/api/v1/trials/3/workloads")["includeBatchMetrics"] == ["false"]


def test_describe_metrics_adds_the_workload_metrics_column(
    exp_fake: ExperimentFake, det: Det
) -> None:
    setup(exp_fake)
    exp_fake.workloads = {3: WORKLOADS}
    result = det("t", "describe", "3", "--metrics", "--csv")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[lines.index("Workloads:") + 1].endswith(",Validation Metrics,Workload Metrics")
    assert '""batchMetrics"": [' in result.out  # CSV doubles the quotes
    assert exp_fake.query("GET", "/api/v1/trials/3/workloads")["includeBatchMetrics"] == ["true"]


def test_describe_without_a_workloads_endpoint_uses_checkpoints_and_validations(
    exp_fake: ExperimentFake, det: Det
) -> None:
    setup(exp_fake)
    exp_fake.checkpoints[UUID] = make_checkpoint(UUID, 3, 1, 0.4, steps=50)
    result = det("trial", "describe", "3", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["trial"]["id"] == 3
    workloads = data["workloads"]
    assert [sorted(w) for w in workloads] == [["checkpoint", "validation"], ["validation"]]
    assert workloads[0]["checkpoint"]["uuid"] == UUID
    assert workloads[0]["validation"]["metrics"] == {"avgMetrics": {"validation_loss": 0.4}}
    assert workloads[1]["validation"]["totalBatches"] == 100

    table = det("trial", "describe", "3").out.splitlines()
    body = table[table.index("Workloads:") + 3 :]
    assert cells(body[0])[:4] == ["50", "2024-05-01 12:30:00+0000", "COMPLETED", UUID]


def test_describe_unknown_trial(exp_fake: ExperimentFake, det: Det) -> None:
    result = det("trial", "describe", "9")
    assert (result.code, result.err) == (1, "Failed to describe trial: trial 9 not found\n")


def test_logs_print_every_line_to_stdout_as_determined_does(
    exp_fake: ExperimentFake, det: Det
) -> None:
    setup(exp_fake)
    exp_fake.trial_logs[3] = [
        {"message": "queued\n", "source": "master"},
        {"message": "epoch 1\n", "stdtype": "stdout"},
        {"message": "warning: slow\n", "stdtype": "stderr"},
        {"log": "epoch 2"},
    ]
    result = det("trial", "logs", "3")
    assert result.code == 0
    # `det trial logs 3 | grep slow` finds what the trial wrote to stderr.
    assert result.out == "queued\nepoch 1\nwarning: slow\nepoch 2\n"
    assert result.err.splitlines() == [
        "Trial log stream ended. To reopen log stream, run: det trial logs -f 3",
    ]
    assert exp_fake.query("GET", "/api/v1/trials/3/logs") == {"follow": ["false"]}


def test_logs_follow_head_tail_and_json(exp_fake: ExperimentFake, det: Det) -> None:
    setup(exp_fake)
    exp_fake.trial_logs[3] = [{"message": f"line {i}\n"} for i in range(5)]
    result = det("t", "logs", "-f", "3")
    assert result.out == "".join(f"line {i}\n" for i in range(5))
    assert exp_fake.query("GET", "/api/v1/trials/3/logs") == {"follow": ["true"]}

    assert det("t", "logs", "3", "--head", "2").out == "line 0\nline 1\n"
    assert exp_fake.query("GET", "/api/v1/trials/3/logs")["limit"] == ["2"]
    assert det("t", "logs", "3", "--tail", "2").out == "line 3\nline 4\n"

    out = det("t", "logs", "3", "--json", "--head", "1").out
    assert json.loads(out) == {"id": 0, "trialId": 3, "message": "line 0\n"}

    result = det("t", "logs", "3", "-f", "--tail", "2")
    assert (result.code, result.err) == (
        1,
        "at most one of --follow, --head and --tail may be given\n",
    )


def test_kill(exp_fake: ExperimentFake, det: Det) -> None:
    setup(exp_fake)
    exp_fake.trials[3]["state"] = "STATE_ACTIVE"
    result = det("trial", "kill", "3")
    assert (result.code, result.out) == (0, "Killed trial 3\n")
    assert exp_fake.calls("POST", "/api/v1/trials/3/kill") == [None]
    result = det("trial", "kill", "8")
    assert (result.code, result.err) == (
        1,
        "Failed to forcibly terminate a trial: trial 8 not found\n",
    )
