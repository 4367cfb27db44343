"""The ``Provider`` contract: small and dumb. It executes; the scale decider decides.

Providers are synchronous (cloud SDKs are); the provisioning loop calls them on a worker
thread, one call at a time per pool.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from provisioner.types import FailedLaunch, Instance, LaunchedInstance, Offer, TerminateResult


class Provider(Protocol):
    def offers(self) -> list[Offer]:
        """What this pool may launch, cheapest-first within each market, with current prices.

        Spot offers are listed only when the pool's config enables spot."""
        ...

    def list_instances(self) -> list[Instance]:
        """Every live (not terminated) instance carrying this pool's tag, in one call.

        Instances launched by anyone else are never listed, so never terminated. An instance
        the cloud took back (spot preemption) is listed with its ``interruption`` until it is
        terminated."""
        ...

    def launch(self, offer: Offer, count: int, client_token: str) -> list[LaunchedInstance]:
        """Launch ``count`` instances of ``offer``; return as soon as the cloud accepted them.

        ``client_token`` makes the call idempotent: repeating it (after a timeout, say) returns
        the instances of the first call instead of launching more. Raises ``ProviderError``
        with its class (capacity, quota, throttle, config, transient) on failure; a partial
        launch returns what was created."""
        ...

    def terminate(self, instance_ids: list[str]) -> list[TerminateResult]:
        """Terminate these instances. Idempotent: an instance already gone counts as done.

        Returns one result per id; never raises for one bad id."""
        ...


@runtime_checkable
class FollowsLaunches(Protocol):
    """A provider whose clouds refuse some launches after accepting them (GCP's zone
    operations). The loop asks once per pass, right after listing."""

    def failed_launches(self) -> list[FailedLaunch]:
        """Launches refused since the last call, each returned once; never blocks on the
        cloud's operations and never raises."""
        ...
