"""``logging:`` in master.yaml and agent.yaml: defaults, names, and errors naming the field."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from agent.cloudwatch import faults
from agent.cloudwatch.config import CloudWatchConfig
from agent.config import ConfigError as AgentConfigError
from agent.config import load_config as load_agent_config
from master.config import ConfigError, load_config


def test_defaults_name_the_group_after_the_cluster_and_streams_by_role() -> None:
    config = CloudWatchConfig(type="cloudwatch")
    assert config.group_name("c-1") == "/flotilla/c-1"
    assert config.retention_days == 30
    assert not config.ship_task_logs
    assert (config.master_stream(), config.agent_stream("a"), config.task_stream("t")) == (
        "master",
        "agent/a",
        "task/t",
    )
    prefixed = CloudWatchConfig(type="cloudwatch", stream_prefix="prod/", log_group="/my/logs")
    assert prefixed.group_name("c-1") == "/my/logs"
    assert prefixed.agent_stream("a") == "prod/agent/a"


@pytest.mark.parametrize(
    ("settings", "field", "says"),
    [
        ({"retention_days": 10}, "retention_days", "1, 3, 5, 7, 14, 30"),
        ({"stream_prefix": "a:b/"}, "stream_prefix", "without ':' or '*'"),
        ({"log_group": "/bad group"}, "log_group", "letters, digits"),
        ({"type": "syslog"}, "type", "'cloudwatch'"),
        ({"retention": 7}, "retention", "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_name_the_field_and_what_is_allowed(
    settings: dict[str, object], field: str, says: str
) -> None:
    with pytest.raises(ValidationError) as error:
        CloudWatchConfig.model_validate({"type": "cloudwatch", **settings})
    (item,) = error.value.errors()
    assert item["loc"] == (field,)
    assert says in str(error.value)


def test_master_yaml_logging_section(tmp_path: Path) -> None:
    path = tmp_path / "master.yaml"
    path.write_text("logging: {type: cloudwatch, region: eu-west-1, ship_task_logs: true}\n")
    config = load_config(path, environ={})
    assert config.logging is not None and config.logging.ship_task_logs
    assert load_config(None, environ={}).logging is None
    path.write_text("logging: {type: cloudwatch, retention_days: 2}\n")
    with pytest.raises(ConfigError, match=r"logging\.retention_days: .*CloudWatch accepts only"):
        load_config(path, environ={})


def test_agent_yaml_logging_section(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("join_token: t\nlogging: {type: cloudwatch, endpoint_url: 'http://x:1'}\n")
    config = load_agent_config(path, {}, {})
    assert config.logging is not None and config.logging.endpoint_url == "http://x:1"
    path.write_text("join_token: t\nlogging: {type: cloudwatch, stream_prefix: '*'}\n")
    with pytest.raises(AgentConfigError, match=r"logging\.stream_prefix \(from .*agent\.yaml\)"):
        load_agent_config(path, {}, {})


def test_fault_injection_is_off_unless_its_variable_is_set() -> None:
    registered: list[str] = []
    events = SimpleNamespace(register=lambda name, handler: registered.append(name))
    client = SimpleNamespace(meta=SimpleNamespace(events=events))
    assert faults.install(client, environ={}) == 0
    assert faults.install(client, environ={faults.THROTTLES_ENV: "3"}) == 3
    assert registered == ["before-call.logs.PutLogEvents"]
