"""Every cloud's policies as one mandatory ``pulumi_policy.PolicyPack``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

PACK_NAME = "flotilla"
PACK_DIR = Path(__file__).resolve().parent
# The clouds whose rules the pack holds: modules ``infra.policy.<cloud>`` with ``POLICIES``.
CLOUDS = ("aws", "gcp")


def all_policies() -> list[Any]:
    """Each cloud's ``POLICIES``; a cloud whose module is not there yet contributes none."""
    policies: list[Any] = []
    for cloud in CLOUDS:
        try:
            module = importlib.import_module(f"infra.policy.{cloud}")
        except ModuleNotFoundError as e:
            if e.name != f"infra.policy.{cloud}":
                raise
            continue
        policies += module.POLICIES
    return policies


def resource_policy(name: str, description: str, validate: Callable[[Any, Any], None]) -> Any:
    """A ``pulumi_policy.ResourceValidationPolicy`` calling ``validate(args, report)`` on each
    resource (the shape every cloud's resource rules take)."""
    from pulumi_policy import ResourceValidationPolicy

    return ResourceValidationPolicy(name=name, description=description, validate=validate)


def policy_pack() -> Any:
    """Build (and so register with the Pulumi policy host) the mandatory pack."""
    from pulumi_policy import EnforcementLevel, PolicyPack

    return PolicyPack(
        name=PACK_NAME,
        policies=all_policies(),
        enforcement_level=EnforcementLevel.MANDATORY,
        description="Flotilla's deployment guard rails",
    )
