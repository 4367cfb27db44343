"""Determined's provisioning policy, as the simulator's baseline.

What Determined's provisioner does each tick (``master/internal/rm/agentrm/provisioner``):
launch ``ceil(pending slots / slots per instance)`` minus the instances still starting, within
``max_instances``; terminate agents idle for ``max_idle_agent_period`` (straight away, no
drain) and instances that never joined within ``max_agent_starting_period``, never going
below ``min_instances``. It launches the pool's one configured offer (one subnet, one market):
no backoff after a capacity error (it tries again next tick), no other zone, no fallback from
spot to on-demand, no regard for gang jobs that idle agents are waiting for.
"""

from __future__ import annotations

import math
from datetime import datetime

from provisioner.config import ProviderConfig
from provisioner.types import (
    Decision,
    InstanceState,
    Launch,
    Market,
    PoolSnapshot,
    Termination,
)


class DeterminedPolicy:
    """Same signature as ``ScaleDecider.decide``; the simulator drives either."""

    # Determined does not ask again in the same pass after a failed launch.
    retries_after_capacity_error = 0

    def decide(self, snapshot: PoolSnapshot, config: ProviderConfig, now: datetime) -> Decision:
        decision = Decision()
        market = Market.SPOT if config.spot else Market.ON_DEMAND
        offers = [o for o in snapshot.offers if o.market is market]
        live = [
            i
            for i in snapshot.instances
            if i.state in (InstanceState.PENDING, InstanceState.RUNNING)
        ]
        agents = {a.instance_id: a for a in snapshot.agents}
        starting = [i for i in live if i.id not in agents]
        kept = len(live)
        for instance in starting:
            if now - instance.launched_at >= config.max_agent_starting_period:
                decision.terminations.append(Termination(instance.id, "never joined"))
                kept -= 1
        period = config.max_idle_agent_period
        if isinstance(period, str):
            raise ValueError("max_idle_agent_period auto: Determined's policy has a fixed period")
        if period is not None:
            idle = sorted(
                (a.idle_since, a.instance_id)
                for a in snapshot.agents
                if a.idle_since is not None and now - a.idle_since >= period
            )
            for _, instance_id in idle:
                if kept <= config.min_instances or instance_id is None:
                    break
                decision.terminations.append(Termination(instance_id, "idle"))
                kept -= 1
        if not offers:
            return decision
        offer = offers[0]
        pending = sum(d.slots for d in snapshot.pending)
        wanted = math.ceil(pending / offer.slots) - len(starting)
        wanted = max(wanted, config.min_instances - kept)
        count = min(wanted, config.max_instances - len(live))
        if count > 0:
            decision.launches.append(Launch(offer, count, f"{pending} slots pending"))
        return decision
