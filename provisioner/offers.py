"""Packing pending work onto capacity: onto one instance shape (``pack``), or, with mixed
instance types in one pool (``instance_types: [...]``), onto the type that fits each job
(``fit_mixed``); and the per-pool budget cap (``max_cost_per_hour``).

Fitting is first-fit decreasing like the one-type packing: the largest job first, onto idle
(and, without boot racing, starting) capacity, then onto capacity this pass already launches,
then onto new instances of the type that holds it for the least money per hour:

- a single-agent job of ``s`` slots takes the cheapest instance with at least ``s`` slots (a
  2-slot command gets a 4-slot instance rather than being refused);
- a multi-agent job needing ``n`` more slots takes ``ceil(n / slots)`` instances of the type
  for which that costs least (fewer instances on a tie: fewer boots to wait for).

The offers given are the best usable one per type (market, zone and backoffs already decided
by ``decider._choose_offer``), so a type whose offers are all backed off is not fitted to and
its work falls through to the next type in the same pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from provisioner.markets import plural
from provisioner.types import Demand, Instance, Launch, Offer


@dataclass
class Fit:
    offer: Offer
    count: int = 0
    uncovered: list[tuple[str, int]] = field(default_factory=list)
    why: set[str] = field(default_factory=set)


@dataclass
class MixedPacking:
    fits: dict[str, Fit] = field(default_factory=dict)  # instance type → what it gets
    never_fit: list[Demand] = field(default_factory=list)


def fit_mixed(
    pending: tuple[Demand, ...], free: list[int], offers: list[Offer], gang_spare: float = 0.0
) -> MixedPacking:
    packing = MixedPacking()
    if not offers:
        return packing
    cheapest = min(offers, key=lambda o: (o.price_per_hour / o.slots, o.price_per_hour))
    bins = sorted(free, reverse=True)
    fresh: list[int] = []

    def add(offer: Offer, count: int, demand: Demand, need: int, why: str) -> None:
        fit = packing.fits.setdefault(offer.instance_type, Fit(offer))
        fit.count += count
        fit.uncovered.append((demand.job_id, need))
        if offer is not cheapest:
            fit.why.add(why)

    for demand in sorted(pending, key=lambda d: -d.slots):
        if demand.single_agent:
            placed = False
            for slots in (bins, fresh):
                index = next((i for i, s in enumerate(slots) if s >= demand.slots), None)
                if index is not None:
                    slots[index] -= demand.slots
                    placed = True
                    break
            if placed:
                continue
            holding = [o for o in offers if o.slots >= demand.slots]
            if not holding:
                packing.never_fit.append(demand)
                continue
            offer = min(holding, key=lambda o: (o.price_per_hour, o.slots))
            fresh.append(offer.slots - demand.slots)
            add(offer, 1, demand, demand.slots, _why_single(offer, demand.slots))
            continue
        need = demand.slots
        for slots in (bins, fresh):
            for i, available in enumerate(slots):
                take = min(available, need)
                slots[i] -= take
                need -= take
        if not need:
            continue
        offer = min(
            offers,
            key=lambda o: (math.ceil(need / o.slots) * o.price_per_hour, math.ceil(need / o.slots)),
        )
        count = math.ceil(need / offer.slots)
        spares = math.ceil(count * gang_spare) if count >= 2 else 0
        fresh += [count * offer.slots - need] + [offer.slots] * spares
        add(offer, count + spares, demand, need, _why_gang(offer, count, need))
    return packing


def _why_single(offer: Offer, slots: int) -> str:
    return (
        f"{offer.instance_type}: the cheapest type that holds {slots} slots on one agent "
        f"(${offer.price_per_hour:.3f}/h)"
    )


def _why_gang(offer: Offer, count: int, need: int) -> str:
    return (
        f"{offer.instance_type}: {need} slots cost least as {count} × {offer.slots} slots "
        f"(${count * offer.price_per_hour:.3f}/h)"
    )


def within_budget(
    launches: list[Launch], running: list[Instance], cap: float | None
) -> tuple[list[Launch], str]:
    """Trim launches so that the pool's instances never cost more than ``cap`` $/hour together
    (spot at its current price); return the kept launches and, when any was cut, the note
    "budget cap $X/h reached ($Y/h running)"."""
    if cap is None:
        return launches, ""
    spend = sum(i.price_per_hour for i in running)
    kept, cut = [], False
    for launch in launches:
        price = launch.offer.price_per_hour
        affordable = math.floor((cap - spend) / price + 1e-9) if price > 0 else launch.count
        count = max(0, min(launch.count, affordable))
        cut = cut or count < launch.count
        if count:
            kept.append(Launch(launch.offer, count, launch.reason))
            spend += count * price
    note = f"budget cap ${cap:g}/h reached (${spend:.2f}/h running)" if cut else ""
    return kept, note


@dataclass
class Packing:
    new_instances: int = 0
    uncovered: list[tuple[str, int]] = field(default_factory=list)  # (job, slots) needing more
    never_fit: list[Demand] = field(default_factory=list)


def pack(
    pending: tuple[Demand, ...], free: list[int], shape: int, gang_spare: float = 0.0
) -> Packing:
    """First-fit decreasing of the pending demand onto free slots, then onto new instances."""
    packing = Packing()
    bins = sorted(free, reverse=True)  # free slots per existing or starting instance
    fresh: list[int] = []  # free slots left on instances this pass launches
    for demand in sorted(pending, key=lambda d: -d.slots):
        if demand.single_agent and demand.slots > shape:
            packing.never_fit.append(demand)
            continue
        if demand.single_agent:
            for slots in (bins, fresh):
                index = next((i for i, s in enumerate(slots) if s >= demand.slots), None)
                if index is not None:
                    slots[index] -= demand.slots
                    break
            else:
                fresh.append(shape - demand.slots)
                packing.new_instances += 1
                packing.uncovered.append((demand.job_id, demand.slots))
            continue
        need = demand.slots
        for slots in (bins, fresh):
            for i, available in enumerate(slots):
                take = min(available, need)
                slots[i] -= take
                need -= take
        if need:
            count = math.ceil(need / shape)
            spares = math.ceil(count * gang_spare) if count >= 2 else 0
            packing.new_instances += count + spares
            fresh += [count * shape - need] + [shape] * spares
            packing.uncovered.append((demand.job_id, need))
    return packing


def demand_reason(uncovered: list[tuple[str, int]], free: int) -> str:
    slots = sum(s for _, s in uncovered)
    jobs = [job for job, _ in uncovered]
    if len(jobs) == 1:
        who = f"job {jobs[0]}"
    else:
        shown = ", ".join(jobs[:3])
        who = f"jobs {shown}" + (f" and {len(jobs) - 3} more" if len(jobs) > 3 else "")
    capacity = f"{plural(free, 'slot')} idle or starting" if free else "no idle capacity"
    return f"{plural(slots, 'slot')} pending for {who}; {capacity}"
