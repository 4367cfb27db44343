"""The master's user-data: a MIME multi-part whose cloud-config makes cloud-init run the boot
script on every boot, and the script itself, run (with fake curl, systemctl, sudo and pg_isready
on PATH) in a scratch root: it writes master.yaml that the master's own loader accepts and
starts the master, with local PostgreSQL set up when asked."""

from __future__ import annotations

import email
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from infra.aws.master_config import (
    CLOUD_CONFIG,
    MasterWiring,
    boot_script,
    master_yaml_from_user_data,
    user_data,
)
from master.config import load_config
from tests.infra_plans import settings

TRICKY = "pa$s'\"`x` \\ %s #"
WIRING = MasterWiring(
    image_id="ami-0123456789abcdef0",
    subnet_id="subnet-0aaa",
    agent_security_group_id="sg-0agents",
    agent_instance_profile_arn="arn:aws:iam::123456789012:instance-profile/flotilla-demo-agent",
    bucket="flotilla-demo-123456789012-us-east-1",
    db_host="flotilla-demo.abc.us-east-1.rds.amazonaws.com",
    db_password=TRICKY,
    join_token="join-" + TRICKY,
)
FAKE_CURL = """#!/bin/bash
args="$*"
if [[ "$args" == *"-X PUT"* && "$args" == *"/api/token"* ]]; then echo -n TOKEN; exit 0; fi
if [[ "$args" == *"X-aws-ec2-metadata-token: TOKEN"* && "$args" == *"/local-ipv4" ]]; then
  echo -n 10.40.0.5; exit 0
fi
exit 22
"""


def test_user_data_runs_the_script_on_every_boot_and_is_stable() -> None:
    rendered = user_data(settings("default"), WIRING)
    parts = [p for p in email.message_from_string(rendered).walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/cloud-config", "text/x-shellscript"]
    assert parts[0].get_payload(decode=True).decode() == CLOUD_CONFIG
    assert "[scripts-user, always]" in CLOUD_CONFIG
    assert user_data(settings("default"), WIRING) == rendered  # same inputs, same bytes
    text = master_yaml_from_user_data(rendered, "http://10.40.0.5:8080")
    assert text.endswith("external_url: http://10.40.0.5:8080\n")


def test_a_password_that_spells_the_marker_is_refused() -> None:
    bad = MasterWiring(**{**WIRING.__dict__, "db_password": "FLOTILLA_DB_PASSWORD"})
    with pytest.raises(ValueError, match="FLOTILLA_DB_PASSWORD"):
        boot_script(settings("local-db"), bad)


@pytest.fixture
def instance(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(FAKE_CURL)
    log = tmp_path / "calls.log"
    for tool in ("systemctl", "pg_isready"):
        (bin_dir / tool).write_text(f'#!/bin/bash\necho "{tool} $*" >> {log}\n')
    # sudo -u postgres psql …: record the arguments and the SQL it was fed.
    (bin_dir / "sudo").write_text(f'#!/bin/bash\necho "sudo $*" >> {log}\ncat >> {log}\n')
    for tool in bin_dir.iterdir():
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FLOTILLA_ROOT": str(tmp_path / "root")}
    return tmp_path, env


def run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], env=env, text=True, capture_output=True,
                          timeout=60)  # fmt: skip


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_script_writes_a_valid_master_yaml_and_starts_the_master(instance) -> None:
    tmp_path, env = instance
    done = run(boot_script(settings("default"), WIRING), env)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "root/etc/flotilla/master.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    config = load_config(path, environ={})  # what det-master --config reads
    assert config.external_url == "http://10.40.0.5:8080"
    assert config.db.password == TRICKY and config.agent_join_token == "join-" + TRICKY
    assert config.db.host == WIRING.db_host
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls == [
        "systemctl daemon-reload",
        "systemctl enable flotilla-master.service",
        "systemctl restart flotilla-master.service",
    ]
    assert not (tmp_path / "root/etc/flotilla/db-password").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_local_db_sets_up_postgresql_idempotently_before_the_master(instance) -> None:
    tmp_path, env = instance
    local = MasterWiring(**{**WIRING.__dict__, "db_host": "127.0.0.1"})
    for _ in range(2):  # every boot runs it
        done = run(boot_script(settings("local-db"), local), env)
        assert done.returncode == 0, done.stderr
    password_file = tmp_path / "root/etc/flotilla/db-password"
    assert password_file.read_text() == TRICKY + "\n"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    log = (tmp_path / "calls.log").read_text()
    assert log.index("systemctl enable --now postgresql.service") < log.index(
        "systemctl restart flotilla-master.service"
    )
    assert "WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'flotilla')" in log
    assert "ALTER ROLE flotilla PASSWORD :'pw';" in log
    config = load_config(tmp_path / "root/etc/flotilla/master.yaml", environ={})
    assert config.db.host == "127.0.0.1" and config.db.ssl_mode == "disable"
