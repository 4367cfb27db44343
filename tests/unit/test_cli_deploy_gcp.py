"""``det deploy gcp``: the offline dry run as a user runs it (a subprocess with no credentials
and no Pulumi CLI), flag errors, and ``down``'s agent step against the loopback Compute fake
(tests/fake_gcp_compute.py). The fake has no ``instances.stop``, so stopping the master is
checked against a recording stand-in for the Instances client."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from infra.gcp import agents
from infra.gcp.master_config import DEPLOYMENT_LABEL
from tests.fake_gcp_compute import FakeComputeState, fake_compute

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "flotilla-test"
UP = [
    "deploy",
    "gcp",
    "up",
    "--cluster-id",
    "demo",
    "--project",
    "my-project-1",
    "--inbound-cidr",
    "203.0.113.0/24",
]


def det(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``det`` in a clean environment: no Google or Pulumi credentials, no pulumi on PATH."""
    clean = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "FLOTILLA_HOME": str(tmp_path / "flotilla"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        env=clean,
        cwd=tmp_path,
        timeout=120,
    )


def test_dry_run_prints_the_plan_and_estimate_offline(tmp_path: Path) -> None:
    done = det([*UP, "--spot", "--ssh-cidr", "198.51.100.7/32", "--dry-run"], tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Plan for Flotilla cluster 'demo' in project my-project-1, us-central1" in out
    # The plan labels resources module.Kind, aligned (infra.common.plan.render_plan).
    assert re.search(r"^\+ compute\.Instance +master$", out, re.MULTILINE)
    assert re.search(r"^\+ sql\.DatabaseInstance +db$", out, re.MULTILINE)
    assert "flotilla-demo-master <- 203.0.113.0/24" in out
    assert "<- 198.51.100.7/32" in out and "tcp 22" in out
    assert "custom role flotilla_demo_master: compute.instances.create" in out
    assert "all policies pass" in out
    assert "Estimated monthly cost of the base infrastructure (us-central1, USD" in out
    assert "(Spot)" in out
    assert "dry-run-db-pw" not in out and "dry-run-join-token" not in out  # secrets hidden
    assert not (tmp_path / "flotilla" / "pulumi").exists()  # no state was written


def run_det(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``det`` in this process (faster than a subprocess, for everything but the offline run)."""
    from cli.main import main

    try:
        code = main(args)
    except SystemExit as exit:  # argparse's own errors
        code = int(exit.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bad_flags_are_named_with_what_is_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_det([*UP[:4], "Bad_Id", *UP[5:], "--gpu-num", "-1", "--dry-run"], capsys)
    assert code == 1
    assert "--cluster-id: 'Bad_Id' is not a cluster id" in err
    assert "--gpu-num: Input should be greater than or equal to 0" in err
    code, _, err = run_det([*UP, "--zone", "europe-west1-b", "--dry-run"], capsys)
    assert code == 1
    assert "--zone: 'europe-west1-b' is not a zone of region us-central1" in err
    code, _, err = run_det([*UP, "--db", "local", "--db-tier", "db-g1-small"], capsys)
    assert code == 2 and "not allowed with argument" in err


def test_up_without_the_pulumi_cli_says_how_to_install_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no `pulumi` anywhere
    code, _, err = run_det([*UP, "--yes"], capsys)
    assert code == 1
    assert "the Pulumi CLI is not installed" in err
    assert "--dry-run works without it" in err


# ---- down: the agents first -------------------------------------------------------------------


@pytest.fixture
def compute() -> Iterator[tuple[str, FakeComputeState]]:
    zones = {"us-central1-a", "us-central1-b"}
    with fake_compute(FakeComputeState(project=PROJECT, zones=zones)) as running:
        yield running


def launch(endpoint: str, zone: str, name: str, cluster: str, spot: bool = False) -> None:
    """An agent VM as the master's pool would insert it (labelled for the deployment)."""
    body: dict[str, Any] = {
        "name": name,
        "machineType": f"zones/{zone}/machineTypes/n1-standard-4",
        "disks": [
            {
                "boot": True,
                "autoDelete": True,
                "initializeParams": {"sourceImage": "projects/p/global/images/flotilla"},
            }
        ],
        "networkInterfaces": [{"subnetwork": "regions/us-central1/subnetworks/s"}],
        "labels": {DEPLOYMENT_LABEL: cluster, "flotilla-pool-name": "gcp"},
    }
    if spot:
        body["scheduling"] = {"provisioningModel": "SPOT", "instanceTerminationAction": "DELETE"}
    url = f"{endpoint}/compute/v1/projects/{PROJECT}/zones/{zone}/instances"
    httpx.post(url, json=body, timeout=10).raise_for_status()


def test_down_deletes_the_clusters_agents_in_every_zone_and_nothing_else(
    compute: tuple[str, FakeComputeState], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint, state = compute
    launch(endpoint, "us-central1-a", "flotilla-demo-agent-1", "demo")
    launch(endpoint, "us-central1-b", "flotilla-demo-agent-2", "demo", spot=True)
    launch(endpoint, "us-central1-a", "flotilla-other-agent-1", "other")

    done = det(
        ["deploy", "gcp", "down", "--cluster-id", "demo", "--project", PROJECT, "--agents-only"],
        tmp_path,
        FLOTILLA_COMPUTE_ENDPOINT=endpoint,
    )

    assert done.returncode == 0, done.stderr
    assert "deleted 2 agent VM(s) (1 Spot)" in done.stdout
    assert [vm["name"] for vm in state.live()] == ["flotilla-other-agent-1"]
    deletes = [path for method, path, _ in state.requests if method == "DELETE"]
    assert len(deletes) == 2 and all("requestId=" in path for path in deletes)
    lists = [path for method, path, _ in state.requests if "aggregated/instances" in path]
    assert lists and all("flotilla-deployment" in path for path in lists)

    down = ["deploy", "gcp", "down", "--cluster-id", "demo", "--project", PROJECT]
    code, out, err = run_det([*down, "--agents-only", "--compute-endpoint", endpoint], capsys)
    assert code == 0, err
    assert "no agent VMs were running" in out


def test_down_reports_agents_that_will_not_go_and_destroys_nothing(
    compute: tuple[str, FakeComputeState],
) -> None:
    endpoint, _state = compute
    launch(endpoint, "us-central1-a", "flotilla-demo-agent-1", "demo")
    instances, _ = agents.compute_clients(endpoint)
    stuck = _NoDelete(instances)
    ticks = iter(range(100))
    report = agents.delete_agents(
        PROJECT,
        "demo",
        instances=stuck,
        wait_s=2,
        poll_s=1,
        clock=lambda: float(next(ticks)),
        sleep=lambda s: None,
    )
    assert report.remaining == ["flotilla-demo-agent-1"]
    assert stuck.deletes == ["flotilla-demo-agent-1"]  # asked once, not on every poll
    assert "still not deleted: flotilla-demo-agent-1" in report.lines()


class _NoDelete:
    """The real client, except that deletes are accepted and never carried out (a VM stuck in
    STOPPING)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.deletes: list[str] = []

    def aggregated_list(self, **kw: Any) -> Any:
        return self.real.aggregated_list(**kw)

    def delete(self, request: Any) -> None:
        self.deletes.append(request.instance)


def test_down_stops_a_running_master_before_deleting_agents() -> None:
    calls: list[tuple[str, str]] = []

    def vm(name: str, status: str, role: str | None = None) -> Any:
        labels = {DEPLOYMENT_LABEL: "demo"} | ({"flotilla-role": role} if role else {})
        scheduling = SimpleNamespace(provisioning_model="STANDARD", preemptible=False)
        zone = "https://compute.googleapis.com/compute/v1/projects/p/zones/us-central1-b"
        return SimpleNamespace(
            name=name, status=status, labels=labels, scheduling=scheduling, zone=zone
        )

    master_status = ["RUNNING"]
    agents_left = [vm("flotilla-demo-agent-1", "RUNNING")]

    class Recording:
        def aggregated_list(self, request: Any) -> Any:
            calls.append(("list", request.filter))
            master = vm("flotilla-demo-master", master_status[0], role="master")
            return [("zones/us-central1-b", SimpleNamespace(instances=[master, *agents_left]))]

        def stop(self, request: Any) -> None:
            calls.append(("stop", request.instance))
            master_status[0] = "TERMINATED"

        def delete(self, request: Any) -> None:
            calls.append(("delete", request.instance))
            agents_left.clear()

    report = agents.delete_agents(
        "p", "demo", instances=Recording(), poll_s=0, sleep=lambda s: None
    )
    actions = [call for call in calls if call[0] != "list"]
    assert actions == [("stop", "flotilla-demo-master"), ("delete", "flotilla-demo-agent-1")]
    assert report.stopped_masters == ["flotilla-demo-master"]
    assert report.deleted == ["flotilla-demo-agent-1"]
    assert ("list", 'labels.flotilla-deployment = "demo"') in calls


# ---- up and down through the Automation API seam, with a recording workspace ---------------


class FakeStack:
    """A stack whose ``up`` runs the program under Pulumi's mocks with the stack's config, so
    the secrets ``deploy_up`` generated reach the program as they would on a real ``up``."""

    def __init__(self, name: str, program: Any, log: list[str]) -> None:
        self.name = name
        self.program = program
        self.config: dict[str, tuple[str, bool]] = {}
        self.log = log

    def get_config(self, key: str) -> str | None:
        return self.config[key][0] if key in self.config else None

    def set_config(self, key: str, value: str, *, secret: bool = False) -> None:
        self.config[key] = (value, secret)

    def preview(self, on_output: Any, policy_packs: list[str]) -> dict[str, int]:
        self.log.append(f"preview {policy_packs}")
        return {"create": 23}

    def up(self, on_output: Any, policy_packs: list[str]) -> dict[str, Any]:
        from infra.common.plan import run_program
        from infra.gcp.dry_run import _computed

        self.log.append("up")
        config = {key: value for key, (value, _secret) in self.config.items()}
        result = run_program(
            self.program,
            project="flotilla-gcp",
            stack=self.name,
            config=config,
            computed=_computed(config["gcp:project"]),
        )
        db_user = next(r for r in result.resources if r.name == "db-user")
        assert db_user.inputs["password"] == config["flotilla:dbPassword"]
        return result.outputs

    def destroy(self, on_output: Any) -> None:
        self.log.append("destroy")

    def outputs(self) -> dict[str, Any]:
        return {"project": "my-project-1", "master_url": "http://198.51.100.20:8080"}


class FakeWorkspace:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.stacks: dict[str, FakeStack] = {}

    def select_or_create(self, name: str, program: Any) -> FakeStack:
        stack = self.stacks.get(name) or FakeStack(name, program, self.log)
        stack.program = program
        self.stacks[name] = stack
        return stack

    def select(self, name: str, program: Any) -> FakeStack:
        return self.stacks[name]

    def list_stacks(self) -> list[Any]:
        from infra.common.automation import StackInfo

        return [StackInfo(name) for name in self.stacks]

    def remove(self, name: str) -> None:
        self.log.append(f"remove {name}")
        del self.stacks[name]


@pytest.fixture
def workspace(monkeypatch: pytest.MonkeyPatch) -> FakeWorkspace:
    import cli.deploy_gcp

    fake = FakeWorkspace()
    monkeypatch.setattr(cli.deploy_gcp, "_workspace", lambda args: fake)
    return fake


def test_up_generates_secrets_once_previews_with_the_pack_and_prints_the_url(
    workspace: FakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main
    from infra.policy.pack import PACK_DIR

    assert main(["deploy", "gcp", "up", *UP[3:], "--yes"]) == 0
    out = capsys.readouterr().out
    assert "Preview of demo: 23 to create" in out
    assert "Master: http://198.51.100.20:8080" in out
    assert workspace.log == [f"preview {[str(PACK_DIR)]}", "up"]
    stack = workspace.stacks["demo"]
    assert stack.config["gcp:project"] == ("my-project-1", False)
    token, secret = stack.config["flotilla:joinToken"]
    assert secret and len(token) >= 32
    assert main(["deploy", "gcp", "up", *UP[3:], "--yes", "--max-dynamic-agents", "9"]) == 0
    assert stack.config["flotilla:joinToken"] == (token, True)  # kept across re-runs


def test_up_asks_before_applying(
    workspace: FakeWorkspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)  # asked on a terminal
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["deploy", "gcp", "up", *UP[3:]]) == 0
    assert "Nothing changed." in capsys.readouterr().out
    assert "up" not in workspace.log


def test_down_deletes_agents_before_destroying_the_stack(
    workspace: FakeWorkspace,
    compute: tuple[str, FakeComputeState],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cli.main import main

    endpoint, state = compute
    workspace.select_or_create("demo", lambda: {})
    launch(endpoint, "us-central1-b", "flotilla-demo-agent-1", "demo")

    def destroyed(on_output: Any) -> None:
        assert state.live() == []  # the agents went first
        workspace.log.append("destroy")

    monkeypatch.setattr(workspace.stacks["demo"], "destroy", destroyed)
    args = ["deploy", "gcp", "down", "--cluster-id", "demo", "--project", PROJECT]
    assert main([*args, "--compute-endpoint", endpoint]) == 0
    assert workspace.log == ["destroy", "remove demo"]
    assert "deleted 1 agent VM(s)" in capsys.readouterr().out


def test_list_shows_each_deployment(
    workspace: FakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    workspace.select_or_create("demo", lambda: {})
    assert main(["deploy", "gcp", "list"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "my-project-1" in out and "http://198.51.100.20:8080" in out
