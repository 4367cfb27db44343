"""``POST /api/v1/experiments/continue`` (Determined's ``ContinueExperiment``, what ``det
experiment continue`` sends): ``{"id", "overrideConfig": "<yaml>"}``.

An ended (completed, canceled or errored) ``single``-searcher experiment goes back to
``STATE_ACTIVE`` under the same id: the override is merged into its config (typically a longer
``searcher.max_length``), and its trial's next run resumes from its latest checkpoint and trains
to the new length (``master.experiments.continuing``). ``hyperparameters`` and the searcher
stay as they are. The owner of the experiment or an admin may do it.
"""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from harness.experiment_config import ConfigError, ExperimentConfig, parse_experiment_config
from master import auth, models
from master.api.errors import ApiError, bad_request
from master.api.experiment_create import check_capacity
from master.api.experiment_schemas import ExperimentCreated
from master.api.experiments import (
    check_owner,
    engine_call,
    engine_of,
    load_experiment,
    master_state,
)
from master.api.openapi import documented
from master.api.wire import WireModel
from master.experiments import views
from master.experiments.continuing import not_ended_message
from master.experiments.live import ContinueExperiment
from master.experiments.states import EXPERIMENT_TERMINAL

router = APIRouter(prefix="/api/v1/experiments")


class ContinueExperimentRequest(WireModel):
    """Determined's ``v1ContinueExperimentRequest``."""

    id: int
    override_config: str | None = None


LENGTH_UNITS = frozenset({"batches", "epochs", "records"})


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``: maps merge key by key, anything else replaces; a
    length (``{batches: N}``) is replaced whole, so its unit may change."""
    out = dict(base)
    for key, value in override.items():
        current = out.get(key)
        if (
            isinstance(value, dict)
            and isinstance(current, dict)
            and not current.keys() <= LENGTH_UNITS
        ):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def _override(text: str | None) -> dict[str, Any]:
    try:
        override = yaml.safe_load(text or "") or {}
    except yaml.YAMLError as exc:
        raise bad_request(f"overrideConfig: not valid YAML: {exc}") from exc
    if not isinstance(override, dict):
        raise bad_request(
            f"overrideConfig: expected a mapping of config fields, got {type(override).__name__}"
        )
    return override


def _continued_config(row: models.Experiment, override: dict[str, Any]) -> ExperimentConfig:
    stored = parse_experiment_config(row.config)
    if stored.searcher.name != "single":
        raise bad_request(
            f"experiment {row.id} uses the {stored.searcher.name!r} searcher; only experiments "
            "with the 'single' searcher can be continued"
        )
    try:
        config = parse_experiment_config(merged(row.config, override))
    except ConfigError as exc:
        raise bad_request(f"invalid experiment config: {exc}") from exc
    if config.searcher.name != "single":
        raise bad_request(
            f"searcher.name: a continued experiment keeps the 'single' searcher (asked for "
            f"{config.searcher.name!r})"
        )
    if config.hyperparameters != stored.hyperparameters:
        raise bad_request(
            "hyperparameters: a continued trial keeps its hyperparameters; to train with other "
            "values, create a new experiment (det experiment create)"
        )
    return config


@router.post("/continue", **documented(ExperimentCreated, 404, 409))
async def continue_experiment(
    body: ContinueExperimentRequest,
    request: Request,
    user: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    state = master_state(request)
    override = _override(body.override_config)

    def check(session: Session) -> ExperimentConfig:
        row = load_experiment(session, body.id)
        check_owner(user, row.owner_id, "experiment")
        config = _continued_config(row, override)
        if row.state not in {s.value for s in EXPERIMENT_TERMINAL}:
            raise ApiError(409, not_ended_message(row.id, row.state))
        return config

    config = await state.db.run(check)
    pools = [p.pool_name for p in state.config.resource_pools]
    pool = config.resources.resource_pool
    if pool is not None and pool not in pools:
        raise bad_request(f"resources.resource_pool: unknown pool '{pool}'; available: {pools}")
    check_capacity(config, state)
    renamed = {k: v for k, v in override.items() if k in ("name", "description")}
    event = ContinueExperiment(
        experiment_id=body.id,
        config=config,
        renamed={k: str(v) for k, v in renamed.items()},
        by=user.username,
    )
    await engine_call(engine_of(request), event)

    def reply(session: Session) -> dict[str, Any]:
        row = load_experiment(session, body.id)
        return {
            "experiment": views.experiments_json(session, [row], state.clock())[0],
            "config": views.public_config(row.config),
        }

    answer: dict[str, Any] = await state.db.run(reply)
    return answer
