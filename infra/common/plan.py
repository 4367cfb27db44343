"""The dry run: a Pulumi program run under Pulumi's mocks, every resource it would create
recorded, and the plan rendered for a person to read before paying for anything.

How Pulumi's mocks behave, and what this module does about them:

- ``pulumi.runtime.set_mocks`` replaces the engine and the cloud provider with in-process
  callbacks: each resource registration calls ``Mocks.new_resource`` with its type token
  (``aws:ec2/vpc:Vpc``), its name and its *resolved* inputs, and takes back an id and the output
  state; each data-source call (``aws:index/getAvailabilityZones:getAvailabilityZones``) calls
  ``Mocks.call``. No CLI, no credentials, no network: this is what ``--dry-run`` and the tests
  run.
- Outputs a real provider computes (ARNs, addresses) do not exist under mocks. The mocks echo
  the inputs back and add the computed attributes the cloud's ``computed`` callback returns, so
  that values derived from them (a policy naming a bucket's ARN) render with believable text.
- Registrations finish asynchronously; :func:`run_program` drives Pulumi's event loop until every
  registration is done, exactly as ``pulumi.runtime.test`` does, then awaits the program's
  outputs.
- Mocks are process-global settings. Each :func:`run_program` installs fresh ones, so runs do not
  see each other's resources; they must not run concurrently in one process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.common.automation import Program

# What a cloud supplies so that mocked values look like its own: computed attributes per
# resource (type token, name, inputs) and the results of its data-source calls (token, args).
ComputedAttributes = Callable[[str, str, Mapping[str, Any]], Mapping[str, Any]]
CallResults = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]


# How the runtime marks a secret value inside resolved inputs (pulumi.runtime.rpc's signatures).
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


def _reveal(value: Any) -> tuple[Any, bool]:
    """``value`` with secret wrappers removed, and whether there was one."""
    if isinstance(value, dict):
        if value.get(_SIG_KEY) == _SECRET_SIG:
            return _reveal(value.get("value"))[0], True
        items = {k: _reveal(v) for k, v in value.items()}
        return {k: v for k, (v, _) in items.items()}, any(s for _, s in items.values())
    if isinstance(value, list):
        items_list = [_reveal(v) for v in value]
        return [v for v, _ in items_list], any(s for _, s in items_list)
    return value, False


@dataclass(frozen=True)
class PlannedResource:
    """One resource the program registers: Pulumi type token, logical name, resolved inputs
    (camelCase, as providers and policies see them; secrets revealed, their top-level keys in
    ``secrets`` so a rendering can hide them)."""

    type: str
    name: str
    inputs: Mapping[str, Any]
    secrets: frozenset[str] = frozenset()

    @property
    def kind(self) -> str:
        """The token's last part: ``aws:ec2/securityGroup:SecurityGroup`` → ``SecurityGroup``."""
        return self.type.rsplit(":", 1)[-1]

    @property
    def label(self) -> str:
        """Module and kind, as a plan shows them: ``aws:rds/instance:Instance`` → ``rds.Instance``
        (so an RDS instance and an EC2 instance read apart)."""
        parts = self.type.split(":")
        module = parts[1].split("/")[0] if len(parts) == 3 else ""
        return f"{module}.{self.kind}" if module and module != "index" else self.kind


@dataclass
class Plan:
    """Everything a program run under mocks registered, in registration order, and the outputs
    it returned (resolved)."""

    resources: list[PlannedResource]
    outputs: dict[str, Any]

    def of_type(self, type_token: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == type_token]

    def named(self, name: str) -> PlannedResource:
        """The resource called ``name``; KeyError naming what exists if none is."""
        for resource in self.resources:
            if resource.name == name:
                return resource
        raise KeyError(f"no resource {name!r}; the plan has {[r.name for r in self.resources]}")

    def without_providers(self) -> Plan:
        """This plan less the provider registrations (``pulumi:providers:…``), which a dry run
        does not show."""
        kept = [r for r in self.resources if not r.type.startswith("pulumi:providers:")]
        return Plan(resources=kept, outputs=self.outputs)


def _no_computed(type_token: str, name: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    return {}


def _no_calls(token: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
    raise KeyError(f"the dry run has no mocked result for the data source {token}")


def _recording_mocks(
    record: list[PlannedResource], computed: ComputedAttributes, calls: CallResults
) -> Any:
    import pulumi

    class RecordingMocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
            revealed = {key: _reveal(value) for key, value in dict(args.inputs).items()}
            inputs = {key: value for key, (value, _) in revealed.items()}
            secrets = frozenset(key for key, (_, secret) in revealed.items() if secret)
            record.append(PlannedResource(args.typ, args.name, inputs, secrets))
            state = {**inputs, **computed(args.typ, args.name, inputs)}
            return state.get("id") or f"{args.name}-id", state

        def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list | None]:
            return dict(calls(args.token, dict(args.args))), []

    return RecordingMocks()


def run_program(
    program: Program,
    *,
    project: str,
    stack: str,
    config: Mapping[str, str] | None = None,
    computed: ComputedAttributes = _no_computed,
    calls: CallResults = _no_calls,
) -> Plan:
    """Run ``program`` under mocks as stack ``stack`` of ``project`` with ``config`` (keys like
    ``flotilla:joinToken``) and return what it registered. An exception the program raises is
    raised here."""
    import pulumi
    from pulumi.runtime import config as runtime_config
    from pulumi.runtime.mocks import _sync_await
    from pulumi.runtime.settings import SETTINGS
    from pulumi.runtime.stack import run_pulumi_func

    # Pulumi's mocks drive the program on the thread's current event loop; after an
    # ``asyncio.run`` in this thread (another caller, a test) there is none, so make one.
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    record: list[PlannedResource] = []
    outputs: dict[str, Any] = {}
    runtime_config.set_all_config(dict(config or {}))
    pulumi.runtime.set_mocks(
        _recording_mocks(record, computed, calls), project=project, stack=stack, preview=False
    )
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()

    def body() -> None:
        result = program()
        resolved = _sync_await(pulumi.Output.from_input(dict(result)).future())
        outputs.update(resolved or {})

    _sync_await(run_pulumi_func(body))
    return Plan(record, outputs)


# -- rendering ----------------------------------------------------------------------------------


@dataclass
class PlanSection:
    """A titled list of lines after the resources: firewall rules, IAM statements, notes."""

    title: str
    lines: list[str] = field(default_factory=list)


def _integral(value: Any) -> Any:
    """The engine's JSON numbers are floats; show 30.0 as 30."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(_integral(value), sort_keys=True, default=str)


def render_plan(
    title: str,
    resources: Sequence[PlannedResource],
    key_settings: Callable[[PlannedResource], Mapping[str, Any]],
    sections: Sequence[PlanSection] = (),
) -> str:
    """The plan as text: ``title``, each resource (sorted by type and name, so the text is the
    same on every run) as ``+ module.Kind name`` with its key settings (the cloud chooses them)
    indented below, then each section."""
    lines = [title, ""]
    width = max((len(r.label) for r in resources), default=0)
    for resource in sorted(resources, key=lambda r: (r.label, r.name)):
        lines.append(f"+ {resource.label:<{width}}  {resource.name}")
        for key, value in key_settings(resource).items():
            if value is None or value == [] or value == {}:
                continue
            shown = "[secret]" if key in resource.secrets else _value(value)
            lines.append(f"      {key}: {shown}")
    for section in sections:
        lines += ["", f"{section.title}:"]
        lines += [f"  {line}" for line in section.lines] or ["  (none)"]
    return "\n".join(lines)
