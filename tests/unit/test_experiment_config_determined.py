"""Every field of Determined's experiment config is accepted: it works, or it is named in one
warning saying why it has no effect here. Never refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.core.context import TrialInfo
from harness.experiment_config import parse_experiment_config
from harness.experiment_config_determined import INERT_FIELDS, ineffective_fields
from master.experiments.launch import RunRequest, trial_spec

# Determined's mnist_pytorch const.yaml, with every section a Determined user might bring.
DETERMINED_CONFIG = """
name: mnist_pytorch_const
description: everything Determined's schema has
labels: [tutorial]
data:
  url: https://example.com/mnist.tar.gz
  worker: 4
hyperparameters:
  learning_rate: 1.0
  n_filters1: 32
  global_batch_size: 64
records_per_epoch: 60000
searcher:
  name: single
  metric: validation_loss
  max_length: {batches: 937}
  smaller_is_better: true
entrypoint: [python3, -m, determined.launch.torch_distributed, python3, train.py]
max_restarts: 2
min_validation_period: {batches: 100}
min_checkpoint_period: {batches: 500}
scheduling_unit: 100
perform_initial_validation: false
checkpoint_policy: all
checkpoint_storage:
  type: shared_fs
  host_path: /tmp
  storage_path: determined-checkpoint
  container_path: /determined_shared_fs
  propagation: rprivate
  save_experiment_best: 0
  save_trial_best: 1
  save_trial_latest: 1
environment:
  image:
    cpu: determinedai/pytorch-ngc-dev:0.38.1
    cuda: determinedai/pytorch-ngc-dev:0.38.1
  environment_variables: [NCCL_DEBUG=INFO]
  force_pull_image: false
  registry_auth: {username: u, password: p}
  add_capabilities: [SYS_ADMIN]
  drop_capabilities: []
  pod_spec: {spec: {}}
  ports: {tensorboard: 6006}
  proxy_ports: [{proxy_port: 8000, proxy_tcp: false, unauthenticated: false}]
resources:
  slots_per_trial: 1
  max_slots: 4
  priority: 42
  weight: 1
  native_parallel: false
  shm_size: 4294967296
  devices: [{host_path: /dev/fuse, container_path: /dev/fuse, mode: mrw}]
  agent_label: ""
  is_single_node: false
bind_mounts:
  - host_path: /data
    container_path: /data
    read_only: true
    propagation: rprivate
reproducibility: {experiment_seed: 1234}
debug: false
optimizations: {aggregation_frequency: 1, mixed_precision: O0}
profiling: {enabled: false, begin_on_batch: 0, end_after_batch: null, sync_timings: true}
project: Uncategorized
workspace: Uncategorized
log_policies: [{pattern: ".*CUDA out of memory.*", action: {type: cancel_retries}}]
retention_policy: {log_retention_days: 30}
preemption_timeout: 60
"""


def test_a_config_with_every_determined_section_is_accepted() -> None:
    config = parse_experiment_config(DETERMINED_CONFIG)
    assert config.data == {"url": "https://example.com/mnist.tar.gz", "worker": 4}
    assert config.entrypoint == ("python3 -m determined.launch.torch_distributed python3 train.py")
    assert config.reproducibility.experiment_seed == 1234
    [mount] = config.bind_mounts
    assert (mount.host_path, mount.container_path, mount.read_only) == ("/data", "/data", True)
    assert config.environment.environment_variables == {"NCCL_DEBUG": "INFO"}


def test_each_inert_field_is_named_once_with_why() -> None:
    warnings = ineffective_fields(parse_experiment_config(DETERMINED_CONFIG))
    named = [w.split(" is accepted")[0] for w in warnings]
    assert len(named) == len(set(named))
    assert set(named) == {
        "environment.image",
        "environment.force_pull_image",
        "environment.registry_auth",
        "environment.pod_spec",
        "environment.add_capabilities",
        "environment.drop_capabilities",
        "environment.ports",
        "environment.proxy_ports",
        "resources.native_parallel",
        "resources.shm_size",
        "resources.devices",
        "resources.agent_label",
        "resources.is_single_node",
        "debug",
        "optimizations",
        "profiling",
        "project",
        "workspace",
        "checkpoint_policy",
        "log_policies",
        "retention_policy",
        "checkpoint_storage.container_path",
        "checkpoint_storage.propagation",
    }
    image = next(w for w in warnings if w.startswith("environment.image"))
    assert image == (
        "environment.image is accepted but has no effect: tasks run as processes on the "
        "agents, not in containers, so there is no image to run"
    )
    assert set(INERT_FIELDS) >= set(named)


def test_a_plain_config_gets_no_warning_and_checkpoint_policy_best_is_what_happens() -> None:
    plain: dict[str, Any] = yaml.safe_load(DETERMINED_CONFIG)
    for key in ("environment", "resources", "debug", "optimizations", "profiling", "project"):
        plain.pop(key)
    for key in ("workspace", "log_policies", "retention_policy", "checkpoint_storage"):
        plain.pop(key)
    plain["checkpoint_policy"] = "best"
    assert ineffective_fields(parse_experiment_config(plain)) == []


def test_data_reaches_the_trial_as_determined_hands_it_over() -> None:
    config = parse_experiment_config(DETERMINED_CONFIG).model_dump(mode="json")
    info = TrialInfo(
        experiment_id=1,
        trial_id=1,
        trial_run_id=1,
        latest_checkpoint=None,
        hparams={},
        config=config,
        task_id="t",
        allocation_id="t.1",
        tensorboard_dir=None,
    )
    assert info.user_data == {"url": "https://example.com/mnist.tar.gz", "worker": 4}


def test_bind_mounts_travel_with_each_trial_run() -> None:
    config = parse_experiment_config(DETERMINED_CONFIG)
    run = RunRequest(
        experiment_id=1,
        trial_id=2,
        run_id=1,
        owner_id=1,
        hparams={},
        latest_checkpoint=None,
        checkpoint_storage={},
        files={},
    )
    spec = trial_spec(config, run, Path("/tb"))
    assert spec.bind_mounts == [{"host_path": "/data", "container_path": "/data"}]
