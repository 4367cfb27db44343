"""Which offer a pool launches on (spot first, fallback to on-demand, backoffs), and the
wording the decider's reasons share. Pure, like the decider (``provisioner/decider.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from provisioner.config import ProviderConfig, SpotFallbackPolicy
from provisioner.types import Backoff, Market, Offer, OfferKey, PoolSnapshot


def human_duration(value: timedelta) -> str:
    """``20m``, ``1h5m``, ``45s``, ``21m30s``: the way people write a period."""
    seconds = max(0, round(value.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts) or "0s"


def clock(at: datetime) -> str:
    """``12:04`` (UTC wall clock), with seconds only when they are not zero."""
    return at.strftime("%H:%M:%S" if at.second else "%H:%M")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class OfferChoice:
    offer: Offer | None
    note: str = ""  # why spot or on-demand was (not) chosen, for the status line
    spot_unavailable: bool = False


def choose_offer(snapshot: PoolSnapshot, config: ProviderConfig, now: datetime) -> OfferChoice:
    """The cheapest usable offer the market policy allows, and why others were not used."""
    backoffs = {b.key: b for b in snapshot.backoffs if b.until > now}
    on_demand = _cheapest_first(o for o in snapshot.offers if o.market is Market.ON_DEMAND)
    usable_od = [o for o in on_demand if o.key not in backoffs]
    od_note = "" if usable_od else _unavailable("on-demand", on_demand, backoffs)
    policy = config.spot_fallback.policy
    if not config.spot or policy is SpotFallbackPolicy.ON_DEMAND:
        return OfferChoice(usable_od[0] if usable_od else None, od_note)

    spot = _cheapest_first(o for o in snapshot.offers if o.market is Market.SPOT)
    od_price = {o.instance_type: o.price_per_hour for o in reversed(on_demand)}  # cheapest
    notes = []
    priced = []
    for offer in spot:
        cap = config.spot_max_price or od_price.get(offer.instance_type)
        if cap is not None and offer.price_per_hour > cap:
            notes.append(f"{offer.key} at ${offer.price_per_hour:.3f}/h is over ${cap:.3f}/h")
        else:
            priced.append(offer)
    usable = [o for o in priced if o.key not in backoffs]
    if usable:
        return OfferChoice(usable[0])
    notes.insert(0, _unavailable("spot", priced, backoffs) if priced else "no spot offer")
    why = ", ".join(notes)
    if policy is SpotFallbackPolicy.SPOT_ONLY:
        return OfferChoice(None, f"{why} (spot_only)", spot_unavailable=True)
    since = snapshot.spot_unavailable_since
    fallback_at = (since or now) + config.spot_fallback.delay
    if since is None or now < fallback_at:
        note = f"{why}, trying on-demand at {clock(fallback_at)}"
        return OfferChoice(None, note, spot_unavailable=True)
    if not usable_od:
        return OfferChoice(None, f"{why}; {od_note}", spot_unavailable=True)
    return OfferChoice(usable_od[0], f"{why}, trying on-demand", spot_unavailable=True)


def _cheapest_first(offers: Iterable[Offer]) -> list[Offer]:
    return sorted(offers, key=lambda o: (o.price_per_hour, o.zone or "", o.instance_type))


def _unavailable(market: str, offers: list[Offer], backoffs: dict[OfferKey, Backoff]) -> str:
    if not offers:
        return f"no {market} offer"
    where = ", ".join(
        f"{'in ' + o.zone if o.zone else 'for ' + o.instance_type} "
        f"until {clock(backoffs[o.key].until)}"
        for o in offers
        if o.key in backoffs
    )
    return f"{market} capacity unavailable {where}"
