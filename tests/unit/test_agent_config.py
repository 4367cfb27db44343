"""AgentConfig: defaults, precedence of file < env < flags, and one-line errors."""

import os
import socket
from pathlib import Path

import pytest

from agent.config import AgentConfig, ConfigError, load_config
from agent.main import main


def test_agent_id_defaults_to_the_hostname():
    config = AgentConfig(join_token="t")
    assert config.agent_id == socket.gethostname()
    assert config.work_path.name == socket.gethostname()


def test_defaults_and_derived_values():
    config = AgentConfig(join_token="t", agent_id="gpu-7")
    assert config.master_url == "http://127.0.0.1:8080"
    assert config.ws_url == "ws://127.0.0.1:8080/agents/ws"
    assert config.work_path == Path.home() / ".flotilla" / "agent" / "gpu-7" or (
        os.geteuid() == 0 and config.work_path == Path("/var/lib/flotilla-agent/gpu-7")
    )
    assert (config.isolation, config.uid_range) == ("auto", (20000, 29999))
    assert (config.resource_pool, config.slots, config.no_gpu) == ("default", 1, False)
    assert config.reconnect_give_up_after == 600
    assert config.kill_grace_period == 10
    assert config.log_batch_interval == 0.2


@pytest.mark.parametrize(
    ("master_url", "ws_url"),
    [
        ("https://det.example.com", "wss://det.example.com/agents/ws"),
        ("http://10.0.0.2:8080/", "ws://10.0.0.2:8080/agents/ws"),
        ("https://example.com/flotilla/", "wss://example.com/flotilla/agents/ws"),
    ],
)
def test_ws_url_follows_the_master_url(master_url, ws_url):
    assert AgentConfig(join_token="t", master_url=master_url).ws_url == ws_url


def test_durations_accept_units():
    config = AgentConfig(
        join_token="t",
        kill_grace_period="500ms",
        reconnect_give_up_after="5m",
        reconnect_max_backoff="1h",
    )
    assert (config.kill_grace_period, config.reconnect_give_up_after) == (0.5, 300)
    assert config.reconnect_max_backoff == 3600


def test_file_then_env_then_flags(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text("join_token: from-file\nresource_pool: file-pool\nslots: 2\nagent_id: a\n")
    environ = {
        "DET_AGENT_RESOURCE_POOL": "env-pool",
        "DET_AGENT_SLOTS": "3",
        "DET_AGENT_NO_GPU": "true",
        "DET_AGENT_ID": "set-by-a-parent-agent-for-its-task",  # not a field: ignored
    }
    config = load_config(path, {"slots": "4", "agent_id": None}, environ)
    assert config.join_token == "from-file"
    assert config.resource_pool == "env-pool"
    assert config.slots == 4
    assert config.no_gpu is True
    assert config.agent_id == "a"


def test_join_token_from_the_environment():
    config = load_config(None, {}, {"DET_AGENT_JOIN_TOKEN": "s3cret"})
    assert config.join_token == "s3cret"


@pytest.mark.parametrize(
    ("file_text", "environ", "flags", "expected"),
    [
        ("", {}, {}, "join_token: required (set join_token in the config file, --join-token"),
        (
            "join_token: t\nslot: 2\n",
            {},
            {},
            "slot (from {path}): unknown field; allowed: master_url",
        ),
        ("join_token: t\n", {}, {"slots": "0"}, "slots (from --slots): Input should be greater"),
        (
            "join_token: t\n",
            {"DET_AGENT_KILL_GRACE_PERIOD": "soon"},
            {},
            "kill_grace_period (from DET_AGENT_KILL_GRACE_PERIOD): invalid duration",
        ),
        (
            "join_token: t\nmaster_url: ftp://x\n",
            {},
            {},
            "master_url (from {path}): expected an http",
        ),
        (
            "join_token: t\nreconnect_initial_backoff: 5\nreconnect_max_backoff: 1\n",
            {},
            {},
            "config: reconnect_max_backoff must be >= reconnect_initial_backoff",
        ),
        (
            "join_token: t\nagent_id: ../etc\n",
            {},
            {},
            "agent_id (from {path}): String should match",
        ),
        ("- a list\n", {}, {}, "config file {path} must be a mapping"),
        ("join_token: [unclosed\n", {}, {}, "config file {path} is not valid YAML"),
    ],
)
def test_bad_config_names_the_field_and_its_source(tmp_path, file_text, environ, flags, expected):
    path = tmp_path / "agent.yaml"
    path.write_text(file_text)
    with pytest.raises(ConfigError) as error:
        load_config(path, flags, environ)
    message = str(error.value)
    assert expected.format(path=path) in message
    assert "\n" not in message


def test_det_agent_exits_2_with_one_line_and_no_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DET_AGENT_JOIN_TOKEN", raising=False)
    path = tmp_path / "agent.yaml"
    path.write_text("join_token: t\nslots: many\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(path), "--work-dir", str(tmp_path / "work")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"det-agent: invalid agent config: slots (from {path}): Input should be a valid "
        "integer, unable to parse string as an integer, got 'many'"
    ]
