"""``det deploy <kind> …``: the deploy group. Each kind adds its own group of verbs under it
(``local``: processes on this machine; ``aws`` and ``gcp``: a cluster made with Pulumi from
``infra/aws`` or ``infra/gcp``); a new kind adds its registration to ``KINDS``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cli import deploy_aws, deploy_gcp, deploy_local
from cli.parser import add_group

if TYPE_CHECKING:
    from cli.parser import SubParsers

# Each registers `det deploy <kind> …` in the group it is given.
KINDS = (deploy_local.register_kind, deploy_aws.register_kind, deploy_gcp.register)


def register(nouns: SubParsers) -> None:
    _, kinds = add_group(nouns, "d|eploy", "manage deployments")
    for register_kind in KINDS:
        register_kind(kinds)
