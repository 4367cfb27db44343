"""``det deploy aws``: the issue's dry run on a machine without AWS credentials or the Pulumi CLI,
flag errors naming the flag, and the refusals that come before any change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    for resource in ("Vpc", "SecurityGroup", "RolePolicy", "Bucket", "LogGroup", "Instance"):
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
