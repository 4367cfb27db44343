"""What ``POST /api/v1/experiments`` checks before the engine sees a new experiment.

Creating is the one experiment route with real input to judge, so it lives apart from the read
and lifecycle routes of ``master.api.experiments`` (which keeps the thin route itself):

- the request: Determined's fields we do not support (templates, unmanaged experiments, forks,
  projects other than Uncategorized) are refused by name rather than ignored;
- the config: parsed with the harness's own models (:func:`parse_experiment_config`), its
  ``resources.resource_pool`` checked against the master's pools, then offered to the searcher
  (``ExperimentEngine.validate``: grid without ``count`` and the like);
- the warm start: ``searcher.source_*`` resolved to the checkpoint trials will start from
  (``master.experiments.warm_start``);
- the model definition: the uploaded files, kept as base64, with their decoded size.

Every refusal is a 400 (404 for an unknown project) naming the field; nothing is stored here.
"""

from __future__ import annotations

import base64
import binascii
from functools import partial
from typing import Any

import yaml

from harness.experiment_config import ConfigError, ExperimentConfig, parse_experiment_config
from master.api.commands import ContextFile, context_files
from master.api.errors import ApiError, bad_request, not_found
from master.api.wire import WireModel
from master.experiments import views, warm_start
from master.experiments.engine import ExperimentEngine
from master.experiments.live import CreateExperiment, EngineError
from master.state import MasterState


class CreateExperimentRequest(WireModel):
    config: str | dict[str, Any] | None = None
    model_definition: list[ContextFile] = []
    activate: bool | None = True
    validate_only: bool | None = False
    project_id: int | None = None
    parent_id: int | None = None
    template: str | None = None
    unmanaged: bool | None = None


def _config_text(raw: str | dict[str, Any] | None) -> str:
    if raw is None:
        raise bad_request("config: the experiment config (YAML text) is required")
    return raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False)


def _decoded_size(files: dict[str, str]) -> int:
    """Bytes of the model definition once decoded; 400 for content that is not base64."""
    total = 0
    for path, content in files.items():
        try:
            total += len(base64.b64decode(content, validate=True))
        except binascii.Error as exc:
            raise bad_request(f"modelDefinition: {path}: content is not base64 ({exc})") from exc
    return total


def _unstorable_text(value: Any, path: str) -> str | None:
    """Where ``value`` (a parsed config) holds text the database cannot store, and why: a NUL
    (PostgreSQL's text has no U+0000) or a lone UTF-16 surrogate. YAML escapes (``"\\0"``,
    ``"\\ud800"``) make both from a body that is itself clean."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    elif isinstance(value, str):
        if "\x00" in value:
            return f"{path}: holds a NUL character, which cannot be stored"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path}: holds a lone UTF-16 surrogate (not valid Unicode text)"
        return None
    else:
        return None
    for key, item in items:
        problem = _unstorable_text(key, path) or _unstorable_text(item, f"{path}.{key!s}")
        if problem:
            return problem
    return None


def _check_request(body: CreateExperimentRequest, state: MasterState) -> ExperimentConfig:
    if body.template:
        raise bad_request("template: config templates are not supported; send the full config")
    if body.unmanaged:
        raise bad_request("unmanaged: unmanaged experiments are not supported")
    if body.parent_id:
        raise bad_request("parentId: forking an experiment is not supported")
    if body.project_id not in (None, 0, views.DEFAULT_PROJECT_ID):
        raise not_found(f"project {body.project_id} (only project 1, Uncategorized, exists)")
    try:
        config = parse_experiment_config(_config_text(body.config))
    except ConfigError as exc:
        raise bad_request(f"invalid experiment config: {exc}") from exc
    problem = _unstorable_text(config.model_dump(mode="json"), "config")
    if problem:
        raise bad_request(f"invalid experiment config: {problem}")
    pools = [p.pool_name for p in state.config.resource_pools]
    pool = config.resources.resource_pool
    if pool is not None and pool not in pools:
        raise bad_request(f"resources.resource_pool: unknown pool '{pool}'; available: {pools}")
    return config


def check_capacity(config: ExperimentConfig, state: MasterState) -> None:
    """Refuse an experiment whose trials can never be placed: more slots per trial than its
    pool can ever offer (an elastic pool: ``max_instances`` × slots per instance), naming what
    every pool can give. A pool whose capacity is not known yet (no agents) refuses nothing."""
    pool = config.resources.resource_pool or state.config.default_resource_pool
    needed = config.resources.slots_per_trial
    capacities = state.scheduler.capacities()
    capacity = capacities.get(pool)
    if capacity is None or capacity.max_total_slots is None or needed <= capacity.max_total_slots:
        return
    elastic = {p.pool_name: p.provider for p in state.config.resource_pools if p.provider}

    def offer(name: str) -> str:
        total = capacities[name].max_total_slots
        provider = elastic.get(name)
        if provider is not None:
            per = capacities[name].max_agent_slots
            return f"'{name}' {total} (elastic: up to {provider.max_instances} × {per} slots)"
        return f"'{name}' {total}"

    known = [name for name in capacities if capacities[name].max_total_slots is not None]
    raise bad_request(
        f"resources.slots_per_trial: each trial needs {needed} slots, but resource pool "
        f"'{pool}' can give at most {capacity.max_total_slots}, so the experiment could never "
        f"run; what the pools can give: {', '.join(offer(n) for n in known)}"
    )


async def new_experiment(
    body: CreateExperimentRequest,
    state: MasterState,
    engine: ExperimentEngine,
    owner_id: int,
) -> CreateExperiment:
    """The engine's event for ``body``, every check passed (raises :class:`ApiError` first).

    With ``validateOnly`` the caller answers from the event's ``config`` and never posts it.
    """
    config = _check_request(body, state)
    check_capacity(config, state)
    try:
        engine.validate(config)
    except EngineError as exc:
        raise ApiError(exc.status, str(exc)) from exc
    try:
        config = await state.db.run(partial(warm_start.resolve, config=config))
    except warm_start.WarmStartError as exc:
        raise bad_request(str(exc)) from exc
    files = context_files(body.model_definition)
    size = _decoded_size(files)
    storage = config.checkpoint_storage or state.config.resolved_checkpoint_storage
    return CreateExperiment(
        owner_id=owner_id,
        config=config,
        original_config=_config_text(body.config),
        checkpoint_storage=storage.model_dump(mode="json"),
        files=files,
        model_definition_size=size,
        activate=body.activate is not False,
    )
