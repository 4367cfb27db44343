"""The commands Determined users try first (the seed documents), run as written on one cluster.

One ``det deploy local cluster-up`` (SQLite, the elastic pool of the default deploy), the digits
example in place of MNIST, and the commands in the order a quickstart runs them: log in, create
a user, create experiments (one followed with ``-f``), label them, list trials and checkpoints,
read a trial's logs through ``grep``, download a checkpoint through the master, start a notebook
with the current directory and a TensorBoard, deactivate the default user. Each step checks the
key lines Determined prints for it. The only change to the commands is the master's port: the
seeds' bare ``localhost`` means port 8080 (see ``tests/unit/test_cli_client.py``), which other
things on a shared machine may hold, so ``DET_MASTER`` and ``-m`` name the cluster's own port.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import free_port
from tests.integration.test_cli import DET_TIMEOUT_SECONDS, Cli, table

REPO = Path(__file__).resolve().parents[2]
DETERMINED_DET = REPO / ".venv-determined" / "bin" / "det"  # Determined 0.38.1's own CLI
# A followed experiment trains the digits model to the end (tens of seconds on a busy machine).
FOLLOW_TIMEOUT_SECONDS = 300
ALICE_PASSWORD = "Alic3Passw0rd"


class Seeds:
    """``det`` run in the copied example directory, with ``DET_MASTER`` set, stdin optional."""

    def __init__(self, cli: Cli, workdir: Path, port: int) -> None:
        self.cli = cli
        self.workdir = workdir
        self.port = port
        self.env = {**cli.env, "DET_MASTER": f"localhost:{port}"}

    def __call__(
        self,
        *args: str,
        stdin: str = "",
        env: dict[str, str] | None = None,
        timeout: float = DET_TIMEOUT_SECONDS,
        program: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(program), *args] if program else self.cli.argv(args),
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.workdir,
            env={**self.env, **(env or {})},
            timeout=timeout,
            start_new_session=True,  # no terminal: prompts read stdin, no browser opens
        )
        assert "Traceback" not in result.stderr, f"det {' '.join(args)}:\n{result.stderr}"
        return result

    def ok(
        self,
        *args: str,
        stdin: str = "",
        env: dict[str, str] | None = None,
        timeout: float = DET_TIMEOUT_SECONDS,
    ) -> str:
        result = self(*args, stdin=stdin, env=env, timeout=timeout)
        assert result.returncode == 0, f"det {' '.join(args)}: {result.stderr}\n{result.stdout}"
        return result.stdout


@pytest.fixture(scope="module")
def det(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeds]:
    root = tmp_path_factory.mktemp("seeds")
    workdir = root / "digits_pytorch"
    shutil.copytree(REPO / "examples" / "digits_pytorch", workdir)
    port = free_port()
    seeds = Seeds(Cli(root / "home"), workdir, port)
    try:
        up = seeds("deploy", "local", "cluster-up", "--no-gpu", "--port", str(port))
        assert up.returncode == 0, up.stderr
        assert f"Cluster is up at http://127.0.0.1:{port} (elastic pool 'default'" in up.stdout
        yield seeds
    finally:
        down = seeds("deploy", "local", "cluster-down")
        assert down.returncode == 0, down.stderr


def test_log_in_create_a_user_and_use_det_user_and_det_pass(det: Seeds) -> None:
    # `det user login admin`: the fresh cluster's admin has a blank password, which Determined
    # accepts with its complexity warning.
    login = det("user", "login", "admin", stdin="\n")
    assert login.returncode == 0, login.stderr
    assert "\u2717 password cannot be blank" in login.stderr
    assert "Please change your password as soon as possible." in login.stderr
    assert det.ok("user", "whoami") == "You are logged in as user 'admin'\n"

    assert det.ok("-u", "admin", "user", "create", "alice", stdin=f"{ALICE_PASSWORD}\n") == ""
    alice = {"DET_USER": "alice", "DET_PASS": ALICE_PASSWORD}
    assert det.ok("user", "whoami", env=alice) == "You are logged in as user 'alice'\n"
    # -u overrides DET_USER, as the seed says.
    as_admin = det("-u", "admin", "user", "whoami", env={"DET_USER": "alice"})
    assert as_admin.stdout == "You are logged in as user 'admin'\n", as_admin.stderr
    users = {row["Username"]: row for row in table(det.ok("user", "list"))}
    assert set(users) == {"admin", "determined", "alice"}
    assert users["alice"]["Admin"] == "False" and users["alice"]["Active"] == "True"
    assert list(users["alice"])[-4:] == ["Agent Uid", "Agent Gid", "Agent User", "Agent Group"]


def test_experiments_labels_trials_logs_and_checkpoints(det: Seeds) -> None:
    # `det -m localhost e create const.yaml . -f`: the first trial's logs on stdout until it
    # ends. It runs first so that it is experiment 1 with trial 1, as the seeds' later commands
    # (`det trial logs 1`, `det tensorboard start 1`) take for granted.
    follow = ("-m", f"localhost:{det.port}", "e", "create", "const.yaml", ".", "-f")
    run = det(*follow, timeout=FOLLOW_TIMEOUT_SECONDS)
    assert run.returncode == 0, run.stderr
    followed = run.stdout
    assert re.match(
        r"Preparing files \(\.\) to send to master\.\.\. [0-9.]+KB and \d+ files\n"
        r"Created experiment 1\nWaiting for first trial to begin\.\.\.\n"
        r"Following first trial with ID 1\n",
        followed,
    ), followed
    assert re.search(r"validation after \d+ batches: accuracy=", followed), followed
    # Determined prints this notice on stdout; ours keeps stdout to the trial's lines.
    ended = "Trial log stream ended. To reopen log stream, run: det trial logs -f 1"
    assert ended in run.stderr, run.stderr

    created = det.ok("experiment", "create", "const.yaml", ".")
    assert re.match(
        r"Preparing files \(\.\) to send to master\.\.\. [0-9.]+KB and \d+ files\n"
        r"Created experiment 2\n$",
        created,
    ), created
    det.ok("experiment", "kill", "2")  # only its creation is the seed's
    for exp_id, config in ((3, "distributed.yaml"), (4, "adaptive.yaml")):
        assert f"Created experiment {exp_id}\n" in det.ok("experiment", "create", config, ".")
        det.ok("experiment", "kill", str(exp_id))

    listed = {row["ID"]: row for row in table(det.ok("experiment"))}
    assert listed["1"]["State"] == "COMPLETED" and listed["1"]["Progress"] == "100.0%"
    assert [listed[i]["Name"] for i in ("2", "3", "4")] == [
        "digits_pytorch_const",
        "digits_pytorch_distributed",
        "digits_pytorch_adaptive_search",
    ]

    assert det.ok("e", "label", "add", "1", "foobar") == "Added label 'foobar' to experiment 1\n"
    missing = det("e", "label", "add", "17", "foobar")
    assert missing.returncode == 1
    assert "Failed to add label: experiment 17 not found" in missing.stderr

    trials = table(det.ok("experiment", "list-trials", "1"))
    assert list(trials[0]) == ["Trial ID", "State", "H-Params", "Started", "Ended", "# of Batches"]
    assert (trials[0]["Trial ID"], trials[0]["State"]) == ("1", "COMPLETED")

    # `det trial logs 1 | grep accuracy`: the trial's lines are on stdout.
    logs = det.ok("trial", "logs", "1")
    assert [line for line in logs.splitlines() if "accuracy" in line], logs

    checkpoints = table(det.ok("experiment", "list-checkpoints", "1"))
    assert list(checkpoints[0]) == [
        "Trial ID", "# of Batches", "State", "Validation Metric", "UUID", "Resources", "Size"
    ]  # fmt: skip
    uuid = checkpoints[0]["UUID"]
    assert checkpoints[0]["State"] == "COMPLETED" and re.fullmatch(r"[0-9a-f-]{36}", uuid)

    downloaded = det.ok("checkpoint", "download", "--mode=master", uuid)
    assert f"Local checkpoint path:\ncheckpoints/{uuid}" in downloaded
    assert (det.workdir / "checkpoints" / uuid / "metadata.json").is_file()


def test_notebook_with_the_current_directory_tensorboard_and_lists(det: Seeds) -> None:
    # Determined prints its notices on stdout; ours go to stderr, the address to stdout.
    started = det("notebook", "start", "-c", ".")
    assert started.returncode == 0, started.stderr
    notices = started.stderr
    assert re.match(r"Preparing files \(\.\) to send to master\.\.\. ", notices), notices
    notebook_id = re.findall(r"^Launched notebook \(id: ([0-9a-f-]{36}),", notices, re.M)[0]
    assert started.stdout.startswith(
        f"Jupyter Notebook is running at: http://localhost:{det.port}/proxy/{notebook_id}/"
    ), started.stdout
    notebooks = table(det.ok("notebook", "list", "-a"))
    assert [(n["id"], n["state"], n["workspaceName"]) for n in notebooks] == [
        (notebook_id, "RUNNING", "Uncategorized")
    ]
    det.ok("notebook", "kill", notebook_id)

    board = det("tensorboard", "start", "1")
    assert board.returncode == 0, board.stderr
    board_id = re.findall(r"^Launched tensorboard \(id: ([0-9a-f-]{36}),", board.stderr, re.M)[0]
    assert board.stdout.startswith(
        f"TensorBoard is running at: http://localhost:{det.port}/proxy/{board_id}/"
    ), board.stdout
    boards = table(det.ok("tensorboard", "list"))
    assert [(b["id"], b["experimentIds"]) for b in boards] == [(board_id, "[1]")]
    det.ok("tensorboard", "kill", board_id)


@pytest.mark.skipif(not DETERMINED_DET.exists(), reason="no .venv-determined (Determined's CLI)")
def test_determineds_own_cli_starts_a_notebook_and_a_tensorboard(det: Seeds) -> None:
    # It sends `preview` and null `trialIds`; the master takes both.
    admin = {"DET_USER": "admin", "DET_PASS": ""}
    for noun, expected in (("notebook", "Jupyter Notebook is running"), ("tensorboard", "")):
        args = (noun, "start", "-c", ".") if noun == "notebook" else (noun, "start", "1")
        started = det(*args, env=admin, program=DETERMINED_DET)
        assert started.returncode == 0, started.stderr + started.stdout
        task_id = re.findall(rf"Launched {noun} \(id: ([0-9a-f-]{{36}})", started.stdout)[0]
        assert expected in started.stdout
        det.ok(noun, "kill", task_id)
    preview = det("notebook", "start", "--preview", env=admin, program=DETERMINED_DET)
    said = preview.stdout + preview.stderr
    assert preview.returncode == 1 and "preview: previews (the merged config" in said, said


def test_version_and_deactivating_the_default_user(det: Seeds) -> None:
    version = det.ok("version")
    assert f"master_address: http://localhost:{det.port}" in version

    assert det.ok("-u", "admin", "user", "deactivate", "determined") == ""
    assert "determined" not in {row["Username"] for row in table(det.ok("user", "list"))}
    everyone = {row["Username"]: row for row in table(det.ok("user", "list", "--all"))}
    assert everyone["determined"]["Active"] == "False"

    # `det -u admin user change-password`, then `det auth login` (Determined's alias of `det
    # user login`) with the new password from DET_PASS.
    assert det.ok("-u", "admin", "user", "change-password", stdin="Adm1nPassw0rd\n") == ""
    assert det.ok("auth", "login", "admin", env={"DET_PASS": "Adm1nPassw0rd"}) == ""
    assert det.ok("user", "whoami") == "You are logged in as user 'admin'\n"
    wrong = det("auth", "login", "admin", env={"DET_PASS": ""})
    assert wrong.returncode == 1
    assert wrong.stderr == "Failed to log in: invalid username or password\n"
