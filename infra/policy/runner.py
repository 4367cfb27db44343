"""Apply the pack's policies to resources recorded under Pulumi's mocks, without the Pulumi CLI.

The Pulumi engine hands a policy ``ResourceValidationArgs`` (one resource: type token, camelCase
properties, URN, name, options) or ``StackValidationArgs`` (all resources as ``PolicyResource``)
and a ``report_violation(message, urn)`` callback. This module builds the same objects from
:class:`infra.common.plan.PlannedResource` records and collects the reports, so the dry run and the
tests run exactly the ``validate`` functions the engine runs on ``up``. Assumes the policies are
synchronous (ours are; the engine also allows coroutines, which are awaited here).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra.common.plan import PlannedResource


@dataclass(frozen=True)
class Violation:
    policy: str
    resource: str  # the resource's name, "" for a stack-wide report without a URN
    message: str

    def __str__(self) -> str:
        where = f" ({self.resource})" if self.resource else ""
        return f"[{self.policy}]{where} {self.message}"


def _urn(project: str, stack: str, resource: PlannedResource) -> str:
    return f"urn:pulumi:{stack}::{project}::{resource.type}::{resource.name}"


def _options() -> Any:
    from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions

    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )


def _settle(result: Any) -> None:
    if inspect.isawaitable(result):
        asyncio.run(_await(result))


async def _await(result: Any) -> None:
    await result


def _validators(policy: Any) -> list[Any]:
    validate = getattr(policy, "validate", None)
    if validate is None:
        return []
    return list(validate) if isinstance(validate, list) else [validate]


def check(
    resources: Sequence[PlannedResource],
    policies: Sequence[Any],
    *,
    project: str = "flotilla",
    stack: str = "stack",
) -> list[Violation]:
    """Every violation ``policies`` report on ``resources``, in policy order."""
    from pulumi_policy import (
        PolicyResource,
        ResourceValidationArgs,
        ResourceValidationPolicy,
        StackValidationArgs,
        StackValidationPolicy,
    )

    names = {_urn(project, stack, r): r.name for r in resources}
    violations: list[Violation] = []
    for policy in policies:

        def report(message: str, urn: str | None = None, policy_name: str = policy.name) -> None:
            violations.append(Violation(policy_name, names.get(urn or "", ""), message))

        if isinstance(policy, ResourceValidationPolicy):
            for resource in resources:
                urn = _urn(project, stack, resource)
                args = ResourceValidationArgs(
                    resource.type, dict(resource.inputs), urn, resource.name, _options(), None
                )

                def report_here(message: str, _urn: str | None = None, at: str = urn) -> None:
                    report(message, _urn or at)

                for validate in _validators(policy):
                    _settle(validate(args, report_here))
        elif isinstance(policy, StackValidationPolicy):
            stack_resources = [
                PolicyResource(
                    r.type,
                    dict(r.inputs),
                    _urn(project, stack, r),
                    r.name,
                    _options(),
                    None,
                    None,
                    [],
                    {},
                )
                for r in resources
            ]
            for validate in _validators(policy):
                _settle(validate(StackValidationArgs(stack_resources), report))
        else:
            raise TypeError(f"{policy!r} is neither a resource nor a stack validation policy")
    return violations
