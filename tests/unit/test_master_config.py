"""master.yaml < FLOTILLA_* environment < det-master flags, and errors that name the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from master.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "master.yaml"
    path.write_text(text)
    return path


def test_defaults_are_an_embedded_sqlite_cluster_on_8080() -> None:
    config = load_config(None, environ={})
    assert config.port == 8080
    assert config.database_url.startswith("sqlite:///")
    assert [p.pool_name for p in config.resource_pools] == ["default"]


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 7000\ncluster_name: file\ndb: {url: 'sqlite:///f.db'}\n")
    environ = {"FLOTILLA_PORT": "9000", "FLOTILLA_DB__URL": "postgresql://pg/db"}
    config = load_config(path, environ=environ, port=8081)
    assert (config.port, config.cluster_name, config.database_url) == (
        8081,
        "file",
        "postgresql://pg/db",
    )
    assert load_config(path, environ=environ).port == 9000


def test_json_environment_values_set_lists() -> None:
    config = load_config(
        None,
        environ={
            "FLOTILLA_RESOURCE_POOLS": '[{"pool_name": "gpu"}, {"pool_name": "cpu"}]',
            "FLOTILLA_DEFAULT_RESOURCE_POOL": "cpu",
        },
    )
    assert [p.pool_name for p in config.resource_pools] == ["gpu", "cpu"]


def test_durations_accept_shorthands(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "agent_reconnect_wait: 90s\ntoken_lifetime: 2h\n"), {})
    assert config.agent_reconnect_wait == timedelta(seconds=90)
    assert config.token_lifetime == timedelta(hours=2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port: 99999\n", "port: Input should be less than or equal to 65535"),
        ("prot: 1\n", "prot: Extra inputs are not permitted"),
        ("db: {uri: x}\n", "db.uri: Extra inputs are not permitted"),
        ("token_lifetime: soon\n", "token_lifetime: Value error, invalid duration 'soon'"),
        ("default_resource_pool: gpu\n", "default_resource_pool: 'gpu' is not one of"),
        ("resource_pools: [{pool_name: a}, {pool_name: a}]\n", "duplicate pool_name"),
        ("- a list\n", "expected a mapping of settings"),
        ("port: [\n", "is not valid YAML"),
        (
            "resource_pools: [{pool_name: a, provider: {type: gcp, project: p, zone: z, "
            "instance_type: {machine_type: n1-standard-8}, boot_disk_source_image: i, "
            "image_id: ami-1}}]\n",
            "resource_pools.0.provider.image_id: Extra inputs are not permitted",
        ),
        (
            "resource_pools: [{pool_name: a, provider: {type: aws, image_id: ami-1}}]\n",
            "resource_pools.0.provider.instance_type: Field required",
        ),
        (
            "resource_pools: [{pool_name: a, provider: {type: azure}}]\n",
            "resource_pools.0.provider: Input tag 'azure' found using 'type' does not match",
        ),
    ],
)
def test_bad_files_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert expected in str(info.value)


def test_other_tools_flotilla_variables_are_not_settings() -> None:
    config = load_config(None, environ={"FLOTILLA_HOME": "/x", "FLOTILLA_TEST_PG_URL": "y"})
    assert config.port == 8080


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"FLOTILLA_PORT": "eighty"})
    assert "port (from FLOTILLA_PORT): Input should be a valid integer" in str(info.value)


DETERMINED_MASTER_YAML = """
port: 8080
db:
  user: postgres
  password: "p@ss:w/rd"
  host: db.internal
  port: 5433
  name: determined
  ssl_mode: require
resource_manager:
  type: agent
  default_compute_resource_pool: gpu
  default_aux_resource_pool: cpu
resource_pools:
  - pool_name: gpu
  - pool_name: cpu
log:
  level: debug
  color: false
"""


def test_determineds_master_yaml_names_work(tmp_path: Path) -> None:
    path = tmp_path / "master.yaml"
    path.write_text(DETERMINED_MASTER_YAML)
    config = load_config(path, environ={})
    assert config.database_url == (
        "postgresql://postgres:p%40ss%3Aw%2Frd@db.internal:5433/determined?sslmode=require"
    )
    assert (config.default_resource_pool, config.aux_resource_pool) == ("gpu", "cpu")
    assert config.log_level == "DEBUG"


def test_without_an_aux_pool_zero_slot_tasks_use_the_default_pool() -> None:
    config = load_config(None, environ={})
    assert config.aux_resource_pool == config.default_resource_pool == "default"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "default_resource_pool: a\nresource_pools: [{pool_name: a}, {pool_name: b}]\n"
            "resource_manager: {default_compute_resource_pool: b}\n",
            "default_resource_pool is 'a' but resource_manager.default_compute_resource_pool "
            "(Determined's name for it) is 'b'; give one of them",
        ),
        (
            "resource_manager: {default_aux_resource_pool: nope}\n",
            "default_aux_resource_pool: 'nope' is not one of the resource_pools ['default']",
        ),
        ("db: {url: 'sqlite://', host: h}\n", "give either url or Determined's host/port"),
        ("db: {user: u}\n", "host is required with user"),
        ("log: {level: loud}\n", "log.level"),
        ("log_level: INFO\nlog: {level: error}\n", "log_level is 'INFO' but log.level"),
    ],
)
def test_determined_names_that_disagree_are_refused(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "master.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert expected in str(caught.value)
