"""The agent boot script: what it writes and starts, read back and actually run (with fake
curl and systemctl) in a scratch directory."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from agent.config import load_config
from provisioner.user_data import (
    CONNECTION_LOST_HOOK,
    USER_DATA_MAX_BYTES,
    agent_config_from_user_data,
    render_user_data,
)

TRICKY = "to$ken'\"`x` \\ %s #"  # everything a shell or YAML could trip on

FAKE_CURL = """#!/bin/bash
# IMDSv2: a PUT with a TTL header gives the token; GETs need it.
args="$*"
if [[ "$args" == *"-X PUT"* && "$args" == *"/api/token"* && "$args" == *"ttl-seconds"* ]]; then
  echo -n TOKEN; exit 0
fi
if [[ "$args" == *"X-aws-ec2-metadata-token: TOKEN"* && "$args" == *"/instance-id" ]]; then
  echo -n i-0abc123; exit 0
fi
exit 22
"""


def render(**overrides: object) -> str:
    values: dict = {
        "master_url": "https://det.example.com:8443",
        "pool": "gpu",
        "join_token": TRICKY,
        "startup_script": "echo startup",
        "extra_env": {},
    }
    values.update(overrides)
    return render_user_data(**values)


def test_round_trip_gives_the_agent_config_with_the_instance_id():
    config = agent_config_from_user_data(render(), "i-0abc123")
    assert config == {
        "master_url": "https://det.example.com:8443",
        "join_token": TRICKY,
        "resource_pool": "gpu",
        "connection_lost_hook": CONNECTION_LOST_HOOK,
        "agent_id": "i-0abc123",
    }


def test_a_token_that_spells_the_marker_still_round_trips():
    token = "a\nFLOTILLA_AGENT_YAML\nb  "
    assert agent_config_from_user_data(render(join_token=token), "i-1")["join_token"] == token


def test_script_is_valid_bash():
    script = render(startup_script="if true; then\n  echo 'a $b'\nfi", extra_env={"A": TRICKY})
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert script.startswith("#!/bin/bash\n")


def test_imdsv2_token_is_fetched_before_the_instance_id_and_the_agent_starts_last():
    script = render()
    put = script.index("-X PUT")
    get = script.index("meta-data/instance-id")
    start = script.index("systemctl enable --now flotilla-agent")
    assert put < get < script.index("startup.sh") < start


def test_not_our_user_data_is_refused():
    with pytest.raises(ValueError, match="FLOTILLA_AGENT_YAML"):
        agent_config_from_user_data("#!/bin/bash\necho hi\n", "i-1")


def test_a_startup_script_cannot_end_the_heredoc_early():
    with pytest.raises(ValueError, match="startup_script"):
        render(startup_script="echo a\nFLOTILLA_STARTUP_SCRIPT\nrm -rf /")


@pytest.mark.parametrize(("env", "match"), [({"BAD-NAME": "x"}, "BAD-NAME"), ({"A": "1\n2"}, "A")])
def test_extra_env_must_be_shell_names_and_one_line_values(env, match):
    with pytest.raises(ValueError, match=match):
        render(extra_env=env)


def test_oversized_user_data_names_the_limit_and_the_field():
    with pytest.raises(ValueError) as raised:
        render(startup_script="#" * USER_DATA_MAX_BYTES)
    assert str(USER_DATA_MAX_BYTES) in str(raised.value)
    assert "startup_script" in str(raised.value)


@pytest.fixture
def fake_instance(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A scratch root and an environment whose curl is a metadata service and whose systemctl
    records what it was asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(FAKE_CURL)
    (bin_dir / "systemctl").write_text(f'#!/bin/bash\necho "$*" >> {tmp_path}/systemctl.log\n')
    for tool in bin_dir.iterdir():
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    root = tmp_path / "root"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FLOTILLA_ROOT": str(root)}
    return tmp_path, env


def run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], env=env, text=True, capture_output=True, timeout=60
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_running_the_script_configures_and_starts_the_agent(fake_instance):
    tmp_path, env = fake_instance
    marker = tmp_path / "startup-ran"
    script = render(
        startup_script=f'echo "$GREETING" > {marker}',
        extra_env={"GREETING": "hello $world", "HTTP_PROXY": 'http://p:3128/%"'},
    )
    done = run(script, env)
    assert done.returncode == 0, done.stderr
    etc = tmp_path / "root" / "etc"
    agent_yaml = etc / "flotilla" / "agent.yaml"
    config = load_config(agent_yaml, {}, {})  # what det-agent --config would read
    assert (config.agent_id, config.join_token, config.resource_pool) == (
        "i-0abc123",
        TRICKY,
        "gpu",
    )
    assert config.master_url == "https://det.example.com:8443"
    assert config.connection_lost_hook == "shutdown -h now"
    assert stat.S_IMODE((etc / "flotilla").stat().st_mode) == 0o700
    assert marker.read_text() == "hello $world\n"
    drop_in = etc / "systemd/system/flotilla-agent.service.d/50-flotilla-env.conf"
    assert drop_in.read_text().splitlines() == [
        "[Service]",
        'Environment="GREETING=hello $world"',
        'Environment="HTTP_PROXY=http://p:3128/%%\\""',
    ]
    calls = (tmp_path / "systemctl.log").read_text().splitlines()
    assert calls == ["daemon-reload", "enable --now flotilla-agent.service"]


def test_a_failing_startup_script_leaves_the_agent_stopped(fake_instance):
    tmp_path, env = fake_instance
    done = run(render(startup_script="exit 7"), env)
    assert done.returncode != 0
    assert not (tmp_path / "systemctl.log").exists()


def test_no_metadata_service_no_agent(fake_instance):
    tmp_path, env = fake_instance
    (tmp_path / "bin" / "curl").write_text("#!/bin/bash\nexit 7\n")
    (tmp_path / "bin" / "sleep").write_text("#!/bin/bash\n")
    (tmp_path / "bin" / "sleep").chmod(0o755)
    done = run(render(), env)
    assert done.returncode != 0
    assert "IMDSv2" in done.stderr
    assert not (tmp_path / "systemctl.log").exists()


FAKE_GCE_CURL = """#!/bin/bash
# GCE's metadata server: the Metadata-Flavor header is required.
args="$*"
if [[ "$args" == *"Metadata-Flavor: Google"* && "$args" == *"/computeMetadata/v1/instance/name" ]]
then
  echo -n flotilla-agent-0123456789ab; exit 0
fi
exit 22
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_on_gcp_the_agent_is_named_after_the_instance(fake_instance):
    tmp_path, env = fake_instance
    (tmp_path / "bin" / "curl").write_text(FAKE_GCE_CURL)
    script = render(cloud="gcp")
    assert "169.254.169.254" not in script
    done = run(script, env)
    assert done.returncode == 0, done.stderr
    config = load_config(tmp_path / "root" / "etc" / "flotilla" / "agent.yaml", {}, {})
    assert config.agent_id == "flotilla-agent-0123456789ab"
    calls = (tmp_path / "systemctl.log").read_text().splitlines()
    assert calls == ["daemon-reload", "enable --now flotilla-agent.service"]


def test_gcp_takes_a_longer_startup_script_than_ec2():
    script = render(cloud="gcp", startup_script="#" * USER_DATA_MAX_BYTES)
    assert len(script) > USER_DATA_MAX_BYTES
    with pytest.raises(ValueError, match="GCE's metadata value limit"):
        render(cloud="gcp", startup_script="#" * (256 * 1024))


def test_the_masters_logging_section_reaches_the_agent_config():
    from master.config import MasterConfig
    from master.provisioning import agent_logging

    master = MasterConfig.model_validate(
        {
            "logging": {
                "type": "cloudwatch",
                "log_group": "/flotilla/demo",
                "region": "us-east-1",
                "ship_task_logs": True,
            }
        }
    )
    config = agent_config_from_user_data(render(logging=agent_logging(master)), "i-0abc123")
    assert config["logging"] == {
        "type": "cloudwatch",
        "log_group": "/flotilla/demo",
        "region": "us-east-1",
        "endpoint_url": None,
        "retention_days": 30,
        "stream_prefix": "",
    }
    assert "logging" not in agent_config_from_user_data(render(), "i-0abc123")
    assert agent_logging(MasterConfig()) is None
