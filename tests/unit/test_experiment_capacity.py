"""An experiment whose trials can never be placed is refused at creation, saying what the pools
can give (an elastic pool: ``max_instances`` × slots per instance)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.experiment_config import parse_experiment_config
from master.api.errors import ApiError
from master.api.experiment_create import check_capacity
from master.config import load_config
from master.scheduler.fit import PoolCapacity

CONFIG = {
    "searcher": {"name": "single", "metric": "loss", "max_length": {"batches": 1}},
    "entrypoint": "model_def:Trial",
}


def state(capacities: dict[str, PoolCapacity]) -> SimpleNamespace:
    config = load_config(
        None,
        environ={},
        resource_pools=[
            {"pool_name": "default", "provider": {"type": "local", "max_instances": 2}},
            {"pool_name": "static"},
        ],
    )
    return SimpleNamespace(config=config, scheduler=SimpleNamespace(capacities=lambda: capacities))


def experiment(slots: int, pool: str | None = None) -> object:
    resources = {"slots_per_trial": slots, **({"resource_pool": pool} if pool else {})}
    return parse_experiment_config({**CONFIG, "resources": resources})


CAPACITIES = {
    "default": PoolCapacity(max_agent_slots=4, max_total_slots=8),
    "static": PoolCapacity(max_agent_slots=2, max_total_slots=2),
}


def test_a_trial_bigger_than_an_elastic_pool_can_grow_is_refused() -> None:
    with pytest.raises(ApiError) as caught:
        check_capacity(experiment(1000), state(CAPACITIES))  # type: ignore[arg-type]
    assert caught.value.status == 400
    assert caught.value.message == (
        "resources.slots_per_trial: each trial needs 1000 slots, but resource pool 'default' "
        "can give at most 8, so the experiment could never run; what the pools can give: "
        "'default' 8 (elastic: up to 2 × 4 slots), 'static' 2"
    )


@pytest.mark.parametrize(("slots", "pool"), [(8, None), (2, "static"), (64, "unknown")])
def test_what_fits_or_is_not_known_yet_is_accepted(slots: int, pool: str | None) -> None:
    check_capacity(experiment(slots, pool), state(CAPACITIES))  # type: ignore[arg-type]
