"""``det deploy aws``: the issue's dry run on a machine without AWS credentials or the Pulumi CLI,
flag errors naming the flag, and the refusals that come before any change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cli.main import main

REPO = Path(__file__).resolve().parents[2]
DRY_RUN = [
    "deploy", "aws", "up", "--cluster-id", "demo", "--region", "us-east-1",
    "--inbound-cidr", "203.0.113.0/24", "--dry-run",
]  # fmt: skip


def bare_env(home: Path) -> dict[str, str]:
    """No AWS credentials anywhere boto3 looks, and no pulumi on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PULUMI_"))}
    env.update(
        HOME=str(home),
        PATH="/usr/bin:/bin",
        PYTHONPATH=str(REPO),
        AWS_CONFIG_FILE=str(home / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def test_the_issues_dry_run_prints_plan_and_estimate_without_credentials_or_pulumi(
    tmp_path: Path,
) -> None:
    env = bare_env(tmp_path)
    assert subprocess.run(["which", "pulumi"], env=env, capture_output=True).returncode != 0
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *DRY_RUN],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Plan for Flotilla cluster 'demo' in us-east-1" in out
    for resource in ("ec2.Vpc", "ec2.SecurityGroup", "iam.RolePolicy", "s3.Bucket",
                     "cloudwatch.LogGroup", "ec2.Instance", "rds.Instance", "ec2.Eip"):  # fmt: skip
        assert f"+ {resource} " in out
    assert "Security group rules:" in out
    assert "sg-master-sg <- 203.0.113.0/24" in out
    assert "IAM statements:" in out and "TerminateOwnAgents" in out
    assert "all policies pass" in out
    estimate = "Estimated monthly cost of the base infrastructure (us-east-1, USD; list prices"
    assert estimate in out
    assert "master instance t3.medium" in out and "total" in out
    assert "dry-run-join-token" not in out and "dry-run-db-pw" not in out


def test_world_inbound_warns_but_plans(capsys: pytest.CaptureFixture[str]) -> None:
    args = [*DRY_RUN]
    args[args.index("203.0.113.0/24")] = "0.0.0.0/0"
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "WARNING: --inbound-cidr 0.0.0.0/0 opens the master's port" in captured.err
    assert "sg-master-sg <- 0.0.0.0/0" in captured.out


def test_bad_flags_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*DRY_RUN, "--max-dynamic-agents", "-1", "--cluster-id", "Demo"]) == 1
    err = capsys.readouterr().err
    assert "--max-dynamic-agents: Input should be greater than or equal to 0" in err
    assert "--cluster-id: 'Demo' is not a cluster id" in err
    assert main([*DRY_RUN, "--subnet-ids", "subnet-1"]) == 1
    assert "vpc_id and subnet_ids go together" in capsys.readouterr().err


def test_inbound_cidr_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["deploy", "aws", "up", "--cluster-id", "demo", "--region", "us-east-1"])
    assert "--inbound-cidr" in capsys.readouterr().err


def test_up_without_pulumi_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    args = [a for a in DRY_RUN if a != "--dry-run"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "Estimated monthly cost" in captured.out  # stated before anything else happens
    assert "the Pulumi CLI is not installed" in captured.err
    assert "get.pulumi.com" in captured.err
    assert "Traceback" not in captured.err


def test_deploy_local_is_still_there(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["deploy", "local", "cluster-up", "--help"])
    assert "--max-agents" in capsys.readouterr().out


class MockedStack:
    """A stack whose preview and up run the real program under Pulumi's mocks (the Pulumi CLI
    cannot be installed here), with the policy pack applied as the engine would."""

    def __init__(self, name: str, program: Any, record: dict[str, Any]) -> None:
        self.name = name
        self.program = program
        self.record = record
        self.config: dict[str, str] = {}
        self.deployed: dict[str, Any] = {}

    def get_config(self, key: str) -> str | None:
        return self.config.get(key)

    def set_config(self, key: str, value: str, *, secret: bool = False) -> None:
        self.config[key] = value
        self.record.setdefault("secrets", []).extend([key] if secret else [])

    def _run(self) -> Any:
        from infra.aws.dry_run import _calls, _computed
        from infra.common.plan import run_program

        return run_program(self.program, project="flotilla-aws", stack=self.name,
                           config=self.config, computed=_computed,
                           calls=_calls(self.config["aws:region"]))  # fmt: skip

    def preview(self, on_output: Any, policy_packs: list[str]) -> dict[str, int]:
        from infra.policy.pack import all_policies
        from infra.policy.runner import check

        plan = self._run()
        self.record["policy_packs"] = policy_packs
        self.record["violations"] = check(plan.resources, all_policies())
        self.record["resources"] = plan.resources
        return {"create": len(plan.resources)}

    def up(self, on_output: Any, policy_packs: list[str]) -> dict[str, Any]:
        on_output("Updating (demo)")
        self.deployed = self._run().outputs
        return self.deployed

    def destroy(self, on_output: Any) -> None:
        self.deployed = {}

    def outputs(self) -> dict[str, Any]:
        return self.deployed


class MockedWorkspace:
    def __init__(self) -> None:
        self.record: dict[str, Any] = {}
        self.stacks: dict[str, MockedStack] = {}

    def select_or_create(self, name: str, program: Any) -> MockedStack:
        stack = self.stacks.setdefault(name, MockedStack(name, program, self.record))
        stack.program = program
        return stack

    def select(self, name: str, program: Any) -> MockedStack:
        from infra.common.automation import StackNotFound

        if name not in self.stacks:
            raise StackNotFound(name)
        return self.stacks[name]

    def list_stacks(self) -> list[Any]:
        from infra.common.automation import StackInfo

        return [StackInfo(n, resource_count=len(self.record.get("resources", [])))
                for n in self.stacks]  # fmt: skip

    def remove(self, name: str) -> None:
        del self.stacks[name]


def test_up_checks_applies_the_program_and_prints_the_master_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Preflight against moto (in-process), the Pulumi side through the mocked workspace."""
    import boto3
    from moto import mock_aws

    from cli import deploy_aws
    from infra.aws import preflight

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "test")
    workspace = MockedWorkspace()
    waited: list[str] = []
    monkeypatch.setattr("infra.common.automation.require_pulumi_cli", lambda: "pulumi")
    monkeypatch.setattr(deploy_aws, "_workspace", lambda backend, region: workspace)
    monkeypatch.setattr(deploy_aws, "_wait_for_master", lambda url: waited.append(url) or True)
    monkeypatch.setattr(preflight, "check_quota", lambda ec2, quotas, settings: [])
    args = [a for a in DRY_RUN if a != "--dry-run"]
    args += ["--image-id", "ami-12c6146b", "--max-dynamic-agents", "3", "--yes", "--state",
             "file:///tmp/unused"]  # fmt: skip
    with mock_aws():
        boto3.client("ec2", region_name="us-east-1")
        assert main(args) == 0
        captured = capsys.readouterr()
        assert "Estimated monthly cost" in captured.out
        assert "Cluster demo is up: http://198.51.100.10:8080" in captured.out
        assert "export DET_MASTER=http://198.51.100.10:8080" in captured.out
        assert waited == ["http://198.51.100.10:8080"]
        assert sorted(workspace.record["secrets"]) == ["flotilla:dbPassword", "flotilla:joinToken"]
        assert workspace.record["violations"] == []
        assert workspace.record["policy_packs"][0].endswith("infra/policy")
        master = next(r for r in workspace.record["resources"] if r.name == "master")
        assert master.inputs["ami"] == "ami-12c6146b"
        token = workspace.stacks["demo"].config["flotilla:joinToken"]
        assert f"agent_join_token: {token}" in master.inputs["userData"]
        assert "max_instances: 3" in master.inputs["userData"]
        # A re-run keeps the generated secrets.
        assert main(args) == 0
        assert workspace.stacks["demo"].config["flotilla:joinToken"] == token
        assert len(workspace.record["secrets"]) == 2
        # list shows the stack with its URL.
        monkeypatch.setattr("infra.aws.state.backend_url", lambda *a, **k: "file:///tmp/unused")
        capsys.readouterr()
        assert main(["deploy", "aws", "list", "--region", "us-east-1"]) == 0
        listed = capsys.readouterr().out
        assert "demo" in listed and "http://198.51.100.10:8080" in listed and "deployed" in listed


def test_asking_without_a_terminal_points_at_yes(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from cli.deploy_cloud import confirm
    from cli.errors import CliError

    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    with pytest.raises(CliError, match="pass --yes"):
        confirm("Apply these changes?")


def test_self_managed_state_needs_a_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.deploy_cloud import PASSPHRASE_HELP, require_pulumi_and_passphrase
    from cli.errors import CliError

    monkeypatch.setattr("infra.common.automation.require_pulumi_cli", lambda: "pulumi")
    for name in ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CliError) as caught:
        require_pulumi_and_passphrase("file:///tmp/state")
    assert caught.value.message == PASSPHRASE_HELP
    require_pulumi_and_passphrase("https://api.pulumi.com")  # Pulumi Cloud manages secrets
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "x")
    require_pulumi_and_passphrase(None)
