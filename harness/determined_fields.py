"""Determined's config fields that mean something only in Determined's world (Docker images,
Kubernetes pods, Slurm, Horovod tuning, the profiler, workspaces), and why each has no effect
here. They are accepted — so a Determined config runs unchanged — and named in one warning each
(:func:`ineffective_fields`): at creation by the CLI, and for experiments in a line of every
trial's log. Shared by experiment configs and task (command, notebook, shell, TensorBoard)
configs; it imports nothing of theirs.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

_NO_CONTAINERS = "tasks run as processes on the agents, not in containers"

# Dotted path of a field → why setting it changes nothing here.
INERT_FIELDS: dict[str, str] = {
    "environment.image": f"{_NO_CONTAINERS}, so there is no image to run",
    "environment.force_pull_image": f"{_NO_CONTAINERS}, so no image is pulled",
    "environment.registry_auth": f"{_NO_CONTAINERS}, so no registry is logged in to",
    "environment.pod_spec": "there is no Kubernetes: agents are machines that join the master",
    "environment.add_capabilities": f"{_NO_CONTAINERS} (no Linux capabilities to add)",
    "environment.drop_capabilities": f"{_NO_CONTAINERS} (no Linux capabilities to drop)",
    "environment.ports": f"{_NO_CONTAINERS}; a trial's processes may listen on any free port",
    "environment.proxy_ports": "the master proxies notebooks, shells and TensorBoards only",
    "resources.native_parallel": "removed in Determined too; trials use torch.distributed",
    "resources.shm_size": f"{_NO_CONTAINERS}, which share the agent's /dev/shm",
    "resources.devices": f"{_NO_CONTAINERS}; a trial sees the agent's devices",
    "resources.agent_label": "agents have no labels here; choose agents with resource_pool",
    "resources.is_single_node": "a trial spans agents only when no single agent has its slots",
    "debug": "the harness has no debug mode; raise the log level in your code",
    "optimizations": "Horovod tuning; trials here train with torch.distributed (DDP)",
    "profiling": "Determined's profiler is not part of Flotilla",
    "project": "there is one workspace and one project (Uncategorized)",
    "workspace": "there is one workspace and one project (Uncategorized)",
    "checkpoint_policy": (
        "checkpoints are taken at each searcher step and min_checkpoint_period, and kept by "
        "checkpoint_storage's save_* counts (what Determined's default, best, does)"
    ),
    "log_policies": "log lines are stored as printed; no pattern triggers an action",
    "retention_policy": "task logs are kept until the experiment is deleted",
    "integrations": "no Pachyderm or other integration is built in",
    "internal": "Determined's internal settings have no counterpart",
    "pbs": "there is no PBS launcher: agents are machines that join the master",
    "slurm": "there is no Slurm launcher: agents are machines that join the master",
    "checkpoint_storage.container_path": f"{_NO_CONTAINERS}; host_path is used as it is",
    "checkpoint_storage.propagation": f"{_NO_CONTAINERS} (no mount propagation)",
    "checkpoint_storage.checkpoint_path": "checkpoints are written under host_path",
    "checkpoint_storage.tensorboard_path": "TensorBoard files go to the master's tensorboard_dir",
}


def inert(path: str) -> Any:
    """A field accepted from Determined's schema that has no effect (see :data:`INERT_FIELDS`)."""
    return Field(default=None, description=f"Accepted; no effect: {INERT_FIELDS[path]}.")


def ineffective_fields(config: BaseModel) -> list[str]:
    """One line per inert field the user set: ``environment.image: no effect: …``."""
    found = []
    for path, why in INERT_FIELDS.items():
        node: Any = config
        for part in path.split("."):
            if node is None or part not in type(node).model_fields:
                node = None
                break
            node = getattr(node, part)
        if node is not None and not (path == "checkpoint_policy" and node == "best"):
            found.append(f"{path} is accepted but has no effect: {why}")
    return found
