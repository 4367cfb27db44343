"""``det experiment`` against the fake master of ``test_cli_experiment_fake``."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from cli import context
from tests.unit.test_cli_experiment_fake import (  # noqa: F401  (fixtures by name)
    CONFIG_YAML,
    ENDED,
    UUID,
    Det,
    ExperimentFake,
    cli_env_fixture,
    det_fixture,
    exp_fake_fixture,
    make_experiment,
    make_trial,
)


@pytest.fixture(name="config_file")
def config_file_fixture(tmp_path: Path) -> Path:
    path = tmp_path / "const.yaml"
    path.write_text(CONFIG_YAML)
    return path


@pytest.fixture(name="model_def")
def model_def_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "data").mkdir(parents=True)
    (root / "model_def.py").write_text("class MnistTrial: ...\n")
    (root / "data" / "big.bin").write_bytes(b"\0" * 10)
    (root / ".detignore").write_text("data/\n")
    return root


def populate(fake: ExperimentFake) -> None:
    """Two experiments (one archived, someone else's) and two trials of the first."""
    fake.experiments[1] = make_experiment(1, labels=["b", "a"])
    fake.experiments[2] = make_experiment(
        2, username="admin", state="STATE_COMPLETED", progress=1.0, endTime=ENDED, archived=True
    )
    fake.trials[1] = make_trial(1, 1, searcherMetricValue=0.5)
    fake.trials[2] = make_trial(
        2, 1, searcherMetricValue=0.25, state="STATE_COMPLETED", bestCheckpoint={"uuid": UUID}
    )


# ---- create ----------------------------------------------------------------------------------


def test_create_sends_yaml_text_and_base64_files(
    exp_fake: ExperimentFake, det: Det, config_file: Path, model_def: Path
) -> None:
    result = det("experiment", "create", str(config_file), str(model_def))
    assert (result.code, result.err) == (0, "")
    assert result.out == (
        f"Preparing files ({model_def}) to send to master... 22.0B and 1 files\n"
        "Created experiment 1\n"
    )
    [body] = exp_fake.calls("POST", "/api/v1/experiments")
    assert body["config"] == CONFIG_YAML  # the user's text, comments and all
    assert (body["activate"], body["validateOnly"]) == (True, False)
    assert "projectId" not in body
    files = {f["path"]: f for f in body["modelDefinition"]}
    assert sorted(files) == ["model_def.py"]
    assert base64.b64decode(files["model_def.py"]["content"]) == b"class MnistTrial: ...\n"
    assert files["model_def.py"]["type"] == 48


def test_create_paused_in_a_project_with_overrides(
    exp_fake: ExperimentFake, det: Det, config_file: Path, model_def: Path
) -> None:
    result = det(
        "e",
        "create",
        str(config_file),
        str(model_def),
        "--paused",
        "--project",
        "5",
        "--config",
        "searcher.max_trials=4",
    )
    assert result.code == 0, result.err
    [body] = exp_fake.calls("POST", "/api/v1/experiments")
    assert (body["activate"], body["projectId"]) == (False, 5)
    sent = yaml.safe_load(body["config"])
    assert sent["searcher"]["max_trials"] == 4
    assert sent["hyperparameters"]["layers"] == {"type": "int", "minval": 1, "maxval": 3}
    assert exp_fake.experiments[1]["state"] == "STATE_PAUSED"


def test_create_without_model_def_sends_no_files(
    exp_fake: ExperimentFake, det: Det, config_file: Path
) -> None:
    assert det("e", "create", str(config_file)).code == 0
    assert exp_fake.calls("POST", "/api/v1/experiments")[0]["modelDefinition"] == []


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("searcher.metric=", "searcher.metric: Input should be a valid string"),
        ("searcher.max_trials=0", "searcher.max_trials: Input should be greater than or equal"),
        ("resources.slots=2", "resources.slots: unknown field"),
        ("searcher.name=bayes", "searcher: unknown kind; allowed: 'single', 'grid'"),
    ],
)
def test_bad_config_names_the_field_path_and_sends_nothing(
    exp_fake: ExperimentFake,
    det: Det,
    config_file: Path,
    model_def: Path,
    override: str,
    expected: str,
) -> None:
    result = det("e", "create", str(config_file), str(model_def), "--config", override)
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith(f"invalid experiment config {config_file}: ")
    assert expected in result.err
    assert len(result.err.splitlines()) == 1
    assert exp_fake.requests == []  # not even a login


def test_missing_field_and_bad_yaml_are_one_line_errors(
    exp_fake: ExperimentFake, det: Det, tmp_path: Path
) -> None:
    no_searcher = tmp_path / "a.yaml"
    no_searcher.write_text("entrypoint: python3 train.py\n")
    result = det("e", "create", str(no_searcher))
    assert result.err == f"invalid experiment config {no_searcher}: searcher: Field required\n"

    broken = tmp_path / "b.yaml"
    broken.write_text("entrypoint: [unclosed\n")
    result = det("e", "create", str(broken))
    assert result.code == 1 and len(result.err.splitlines()) == 1
    assert result.err.startswith(f"{broken}: not valid YAML: ")

    listed = tmp_path / "c.yaml"
    listed.write_text("- a\n- b\n")
    result = det("e", "create", str(listed))
    assert result.err == f"{listed}: an experiment config must be a YAML mapping of fields\n"
    assert exp_fake.requests == []


def test_oversized_or_missing_model_def_is_refused_before_upload(
    exp_fake: ExperimentFake,
    det: Det,
    config_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "big"
    root.mkdir()
    (root / "weights.bin").write_bytes(b"w" * 3000)
    (root / "train.py").write_bytes(b"t" * 10)
    monkeypatch.setattr(context, "MAX_CONTEXT_BYTES", 2048)
    result = det("e", "create", str(config_file), str(root))
    assert result.code == 1 and len(result.err.splitlines()) == 1
    assert result.err.startswith(f"model definition '{root}' is ")
    assert "biggest files: weights.bin (0.0 MiB), train.py" in result.err

    result = det("e", "create", str(config_file), str(tmp_path / "nope"))
    assert result.err == (
        f"model definition '{tmp_path / 'nope'}' is not a directory; "
        "give the directory of your code\n"
    )
    assert exp_fake.requests == []


def test_create_follow_waits_for_the_first_trial_and_streams_its_logs(
    exp_fake: ExperimentFake, det: Det, config_file: Path
) -> None:
    exp_fake.new_trials = [make_trial(3, 0), make_trial(4, 0)]
    exp_fake.new_trial_logs = ["epoch 1\n", "epoch 2\n"]
    exp_fake.trials_hidden_polls = 2
    exp_fake.state_script[1] = ["STATE_ACTIVE", "STATE_STOPPING_COMPLETED", "STATE_COMPLETED"]
    result = det("e", "create", "-f", str(config_file))
    assert result.code == 0, result.err
    assert result.out == (
        "Created experiment 1\nWaiting for first trial to begin...\n"
        "Following first trial with ID 3\nepoch 1\nepoch 2\n"
    )
    assert result.err.splitlines() == [
        "Trial log stream ended. To reopen log stream, run: det trial logs -f 3",
    ]
    assert exp_fake.query("GET", "/api/v1/trials/3/logs") == {"follow": ["true"]}


def test_create_follow_exits_1_when_the_experiment_errors(
    exp_fake: ExperimentFake, det: Det, config_file: Path
) -> None:
    exp_fake.new_trials = [make_trial(1, 0, state="STATE_ERROR")]
    exp_fake.new_trial_logs = ["Traceback ...\n"]
    exp_fake.state_script[1] = ["STATE_STOPPING_ERROR"]
    result = det("e", "create", "--follow-first-trial", str(config_file))
    assert result.code == 1
    assert result.err.splitlines()[-1] == (
        "experiment 1 ended in STOPPING_ERROR; see det experiment describe 1"
    )


def test_create_follow_leaves_a_running_search_with_a_hint(
    exp_fake: ExperimentFake, det: Det, config_file: Path
) -> None:
    exp_fake.new_trials = [make_trial(1, 0, state="STATE_COMPLETED"), make_trial(2, 0)]
    result = det("e", "create", "-f", str(config_file))
    assert result.code == 0
    assert result.err.splitlines()[-1] == (
        "Experiment 1 is ACTIVE; wait for it to end with: det experiment wait 1"
    )


def test_follow_and_paused_exclude_each_other(
    exp_fake: ExperimentFake, det: Det, config_file: Path
) -> None:
    with pytest.raises(SystemExit) as exc:
        det("e", "create", "-f", "--paused", str(config_file))
    assert exc.value.code == 2


# ---- list and describe -----------------------------------------------------------------------


def test_list_shows_own_unarchived_experiments_like_determined(
    exp_fake: ExperimentFake, det: Det
) -> None:
    populate(exp_fake)
    result = det("experiment", "list")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "   ID | Owner      | Name   | Parent ID   | State   | Progress   | Started        "
        "          | Ended   | Resource Pool",
        "------+------------+--------+-------------+---------+------------+----------------"
        "----------+---------+-----------------",
        "    1 | determined | exp-1  |             | ACTIVE  | 50.0%      | 2024-05-01 12:0"
        "0:00+0000 |         | default",
    ]
    query = exp_fake.query("GET", "/api/v1/experiments")
    assert (query["archived"], query["users"]) == (["false"], ["determined"])


def test_list_all_adds_archived_and_csv_and_json(exp_fake: ExperimentFake, det: Det) -> None:
    populate(exp_fake)
    result = det("e", "ls", "--all", "--csv")
    assert result.out.splitlines() == [
        "ID,Owner,Name,Parent ID,State,Progress,Started,Ended,Resource Pool,Archived",
        "1,determined,exp-1,,ACTIVE,50.0%,2024-05-01 12:00:00+0000,,default,False",
        "2,admin,exp-2,,COMPLETED,100.0%,2024-05-01 12:00:00+0000,2024-05-01 12:30:00+0000,"
        "default,True",
    ]
    assert "archived" not in exp_fake.query("GET", "/api/v1/experiments")
    listed = json.loads(det("e", "list", "--json").out)
    assert [e["id"] for e in listed] == [1]
    assert listed[0]["state"] == "STATE_ACTIVE"  # --json is the wire shape


def test_list_reads_every_page(exp_fake: ExperimentFake, det: Det) -> None:
    for i in range(1, 6):
        exp_fake.experiments[i] = make_experiment(i)
    result = det("e", "list", "--limit", "2", "--csv")
    assert [line.split(",")[0] for line in result.out.splitlines()] == [
        "ID",
        "1",
        "2",
        "3",
        "4",
        "5",
    ]
    result = det("e", "list", "--limit", "2", "--pages", "1", "--offset", "2", "--csv")
    assert [line.split(",")[0] for line in result.out.splitlines()] == ["ID", "3", "4"]


def test_describe_prints_experiment_trials_and_best_validation(
    exp_fake: ExperimentFake, det: Det
) -> None:
    populate(exp_fake)
    result = det("e", "describe", "1")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "Experiment:"
    assert lines[1].split("|")[0].strip() == "Experiment ID"
    assert [c.strip() for c in lines[3].split("|")] == [
        "1",
        "ACTIVE",
        "50.0%",
        "2024-05-01 12:00:00+0000",
        "",
        "exp-1",
        "",
        "False",
        "default",
        "a, b",
    ]
    assert lines[5] == "Trials:"
    assert [c.strip() for c in lines[6].split("|")] == [
        "Trial ID",
        "Experiment ID",
        "State",
        "Started",
        "Ended",
        "H-Params",
    ]
    assert [c.strip() for c in lines[8].split("|")][:3] == ["1", "1", "ACTIVE"]
    assert lines[-4:] == [
        "Best validation:",
        "   Experiment ID |   Trial ID | Searcher Metric   |   Value | Best Checkpoint",
        "-----------------+------------+-------------------+---------+--------------------------------------",
        f"               1 |          2 | validation_loss   |    0.25 | {UUID}",
    ]


def test_describe_prefers_the_masters_best_trial_and_honours_larger_is_better(
    exp_fake: ExperimentFake, det: Det
) -> None:
    populate(exp_fake)
    exp_fake.experiments[1]["bestTrialId"] = 1
    exp_fake.experiments[1]["bestTrialSearcherMetric"] = 0.5
    assert det("e", "describe", "1", "--csv").out.splitlines()[-1] == "1,1,validation_loss,0.5,"
    del exp_fake.experiments[1]["bestTrialId"]
    exp_fake.experiments[1]["config"]["searcher"]["smaller_is_better"] = False
    assert det("e", "describe", "1", "--csv").out.splitlines()[-1] == "1,1,validation_loss,0.5,"


def test_describe_json_is_a_list_of_get_experiment_answers(
    exp_fake: ExperimentFake, det: Det
) -> None:
    populate(exp_fake)
    answers = json.loads(det("e", "describe", "1,2", "--json").out)
    assert [a["experiment"]["id"] for a in answers] == [1, 2]
    assert set(answers[0]) == {"experiment", "config", "jobSummary"}


def test_describe_errors(exp_fake: ExperimentFake, det: Det) -> None:
    result = det("e", "describe", "9")
    assert (result.code, result.err) == (
        1,
        "Failed to describe experiment: experiment 9 not found\n",
    )
    result = det("e", "describe", "1,x")
    assert result.err == (
        "invalid experiment IDs '1,x': give an ID or comma-separated IDs, e.g. 3,7\n"
    )


def test_list_trials_table_and_csv(exp_fake: ExperimentFake, det: Det) -> None:
    populate(exp_fake)
    result = det("e", "lt", "1")
    assert result.out.splitlines()[:3] == [
        "   Trial ID | State     | H-Params        | Started                  | Ended   |"
        "   # of Batches",
        "------------+-----------+-----------------+--------------------------+---------+"
        "----------------",
        "          1 | ACTIVE    | {               | 2024-05-01 12:00:00+0000 |         |"
        "            100",
    ]
    csv_lines = det("e", "list-trials", "1", "--csv").out.splitlines()
    assert csv_lines[0] == "Trial ID,State,H-Params,Started,Ended,# of Batches"
    assert csv_lines[1] == '1,ACTIVE,"{'


def test_config_prints_yaml(exp_fake: ExperimentFake, det: Det) -> None:
    populate(exp_fake)
    out = det("e", "config", "1").out
    assert yaml.safe_load(out)["searcher"]["metric"] == "validation_loss"


def test_logs_are_the_first_trials(exp_fake: ExperimentFake, det: Det) -> None:
    populate(exp_fake)
    exp_fake.trial_logs[1] = [{"message": "one\n"}, {"message": "two\n"}, {"message": "three\n"}]
    result = det("e", "logs", "1", "--tail", "2")
    assert result.out == "two\nthree\n"
    assert "det trial logs -f 1" in result.err
    exp_fake.trials.clear()
    assert det("e", "logs", "1").err == "experiment 1 has no trials yet\n"


# ---- acting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "action", "message", "field", "value"),
    [
        ("kill", "kill", "Killed", "state", "STATE_STOPPING_CANCELED"),
        ("pause", "pause", "Paused", "state", "STATE_PAUSED"),
        ("activate", "activate", "Activated", "state", "STATE_ACTIVE"),
        ("unpause", "activate", "Activated", "state", "STATE_ACTIVE"),
        ("archive", "archive", "Archived", "archived", True),
        ("unarchive", "unarchive", "Unarchived", "archived", False),
    ],
)
def test_lifecycle_verbs_post_and_say_so(
    exp_fake: ExperimentFake,
    det: Det,
    verb: str,
    action: str,
    message: str,
    field: str,
    value: object,
) -> None:
    populate(exp_fake)
    exp_fake.experiments[1]["state"] = "STATE_PAUSED" if action == "activate" else "STATE_ACTIVE"
    exp_fake.experiments[1]["archived"] = action == "unarchive"
    result = det("e", verb, "1")
    assert (result.code, result.out) == (0, f"{message} experiment 1\n")
    assert exp_fake.calls("POST", f"/api/v1/experiments/1/{action}") == [None]
    assert exp_fake.experiments[1][field] == value


def test_lifecycle_errors_name_the_action(exp_fake: ExperimentFake, det: Det) -> None:
    result = det("e", "kill", "7")
    assert (result.code, result.err) == (1, "Failed to kill experiment: experiment 7 not found\n")


def test_label_add_and_remove(exp_fake: ExperimentFake, det: Det) -> None:
    populate(exp_fake)
    result = det("e", "label", "add", "1", "needs review/2")
    assert (result.code, result.out) == (0, "Added label 'needs review/2' to experiment 1\n")
    assert exp_fake.experiments[1]["labels"] == ["b", "a", "needs review/2"]
    assert exp_fake.calls("PUT", "/api/v1/experiments/1/labels/needs%20review%2F2") == [None]
    result = det("e", "label", "remove", "1", "b")
    assert (result.code, result.out) == (0, "Removed label 'b' from experiment 1\n")
    assert exp_fake.calls("DELETE", "/api/v1/experiments/1/labels/b") == [None]
    assert exp_fake.experiments[1]["labels"] == ["a", "needs review/2"]


@pytest.mark.parametrize(
    ("states", "code", "err"),
    [
        (["STATE_ACTIVE", "STATE_STOPPING_COMPLETED", "STATE_COMPLETED"], 0, ""),
        (["STATE_ACTIVE", "STATE_ERROR"], 1, "Experiment 1 ended in ERROR\n"),
        (["STATE_CANCELED"], 1, "Experiment 1 ended in CANCELED\n"),
        (
            ["STATE_PAUSED"],
            1,
            "Experiment 1 is in paused state. Make sure the experiment is active.\n",
        ),
    ],
)
def test_wait_exits_0_only_for_completed(
    exp_fake: ExperimentFake, det: Det, states: list[str], code: int, err: str
) -> None:
    populate(exp_fake)
    exp_fake.state_script[1] = list(states)
    result = det("e", "wait", "1", "--polling-interval", "0")
    assert (result.code, result.err) == (code, err)
    polls = len(exp_fake.calls("GET", "/api/v1/experiments/1"))
    assert polls == len(states)


def test_a_binary_config_file_is_named_and_nothing_is_sent(
    exp_fake: ExperimentFake, det: Det, tmp_path: Path
) -> None:
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00\x00")
    result = det("experiment", "create", str(binary))
    assert result.code == 1
    assert result.err == (
        f"{binary}: not a UTF-8 text file (byte 0xff at offset 4); "
        "a config file must be YAML text in UTF-8\n"
    )
    assert exp_fake.calls("POST", "/api/v1/experiments") == []


def test_determined_only_fields_are_sent_with_one_warning_each(
    exp_fake: ExperimentFake, det: Det, tmp_path: Path
) -> None:
    path = tmp_path / "det.yaml"
    path.write_text(
        CONFIG_YAML
        + "environment:\n  image: determinedai/pytorch-ngc:0.38.1\n"
        + "data:\n  url: s3://bucket/mnist\n"
    )
    result = det("experiment", "create", str(path))
    assert result.code == 0
    assert result.err.splitlines() == [
        f"Warning: {path}: environment.image is accepted but has no effect: tasks run as "
        "processes on the agents, not in containers, so there is no image to run"
    ]
    [body] = exp_fake.calls("POST", "/api/v1/experiments")
    assert yaml.safe_load(body["config"])["data"] == {"url": "s3://bucket/mnist"}
