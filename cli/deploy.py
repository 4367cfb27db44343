"""``det deploy <kind> …``: the deploy group. Each kind is a module with ``register_kind(kinds)``
that adds its own group of verbs (``local``: processes on this machine; ``aws``: a cluster made
with Pulumi from ``infra/aws``); a new cloud adds its module to ``KINDS``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cli import deploy_aws, deploy_local
from cli.parser import add_group

if TYPE_CHECKING:
    from cli.parser import SubParsers

KINDS = (deploy_local, deploy_aws)


def register(nouns: SubParsers) -> None:
    _, kinds = add_group(nouns, "d|eploy", "manage deployments")
    for kind in KINDS:
        kind.register_kind(kinds)
