"""The seam between ``det deploy <cloud>`` and Pulumi's Automation API.

How the Automation API behaves, and what this module does about it:

- It is a driver for the ``pulumi`` CLI: every call runs the CLI as a subprocess, which runs
  our *inline* program (a Python callable) through a language host in this process. Without
  the CLI on PATH every call fails deep inside; :func:`require_pulumi_cli` says so first, with
  how to install it. Nothing else here needs the CLI (``--dry-run`` uses ``infra.common.plan``).
- One project per cloud (``flotilla-aws``, ``flotilla-gcp``), one *stack* per cluster: the
  stack name is the cluster id. State lives wherever the backend URL says (``s3://…``,
  ``gs://…``, ``file://…``). Self-managed backends encrypt stack secrets with a passphrase
  from ``PULUMI_CONFIG_PASSPHRASE`` (or ``_FILE``); the CLI refuses to run without one.
- Failures arrive as ``pulumi.automation.errors.CommandError`` whose text is the whole CLI
  transcript. We surface the lines the engine marked as errors (the cloud's own message, the
  policy that was violated) as a :class:`DeployError` naming the stack and the step.
- ``up`` is idempotent: re-running it with the same program changes nothing, with a changed
  one it updates in place (Pulumi replaces only what the diff says must be replaced).

The contract other clouds rely on (``infra.gcp`` uses it unchanged):

- :class:`Workspace` / :class:`Stack` are the small protocol; :class:`PulumiWorkspace` is the
  real one, tests use a fake.
- :func:`deploy_up` runs ``ensure config → preview (policies) → confirm → up (policies)`` and
  returns the stack's outputs; :func:`deploy_destroy` destroys and removes the stack;
  :func:`list_deployments` reads every stack's summary and outputs.
- Programs are ``Callable[[], Mapping[str, Any]]``: they create resources and return their
  outputs (exported by the real workspace, awaited by the plan under mocks). Values a program
  must keep across runs (a generated join token) are *stack secrets*: ``deploy_up`` generates
  each one once and the program reads it with ``pulumi.Config(<namespace>).require_secret``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

Program = Callable[[], Mapping[str, Any]]
OutputSink = Callable[[str], None]

PULUMI_INSTALL_HELP = (
    "the Pulumi CLI is not installed (no `pulumi` on PATH); install it with "
    "`curl -fsSL https://get.pulumi.com | sh` (or `brew install pulumi`), open a new shell "
    "and check `pulumi version`; --dry-run works without it"
)
# The engine marks its own failures with these prefixes in the CLI transcript.
_ERROR_MARKERS = ("error:", "error ", "Policy Violations", "mandatory", "[mandatory]")
# How many transcript lines a DeployError carries when no line is marked as an error.
_TRANSCRIPT_TAIL_LINES = 15


class DeployError(Exception):
    """A step of a deployment failed; ``message`` says which stack, which step and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PulumiNotInstalled(DeployError):
    """The Pulumi CLI is missing; the message says how to install it."""


class StackNotFound(DeployError):
    """No stack of that name in the backend (the cluster was never deployed, or was destroyed)."""


@dataclass(frozen=True)
class StackInfo:
    """One stack as ``list`` shows it; ``outputs`` is empty when it could not be read."""

    name: str
    last_update: datetime | None = None
    resource_count: int | None = None
    update_in_progress: bool = False
    outputs: Mapping[str, Any] = field(default_factory=dict)


class Stack(Protocol):
    """One cluster's stack. Every method may raise :class:`DeployError`; ``on_output`` gets the
    engine's progress lines as they come."""

    name: str

    def get_config(self, key: str) -> str | None:
        """The config value (secrets decrypted), or None when unset."""

    def set_config(self, key: str, value: str, *, secret: bool = False) -> None: ...

    def preview(self, on_output: OutputSink, policy_packs: list[str]) -> dict[str, int]:
        """What ``up`` would do, as ``{"create": n, "update": n, "same": n, …}``."""

    def up(self, on_output: OutputSink, policy_packs: list[str]) -> dict[str, Any]:
        """Create or update everything; the program's outputs (secrets as plain values)."""

    def destroy(self, on_output: OutputSink) -> None: ...

    def outputs(self) -> dict[str, Any]: ...


class Workspace(Protocol):
    """Where stacks live: one project in one backend."""

    def select_or_create(self, name: str, program: Program) -> Stack: ...

    def select(self, name: str, program: Program) -> Stack:
        """The existing stack; :class:`StackNotFound` if there is none."""

    def list_stacks(self) -> list[StackInfo]:
        """Every stack of the project, without outputs."""

    def remove(self, name: str) -> None:
        """Forget the (already destroyed) stack's history and config."""


def require_pulumi_cli() -> str:
    """The path of the ``pulumi`` executable, or :class:`PulumiNotInstalled`."""
    path = shutil.which("pulumi")
    if path is None:
        raise PulumiNotInstalled(PULUMI_INSTALL_HELP)
    return path


def _transcript_lines(transcript: str) -> list[str]:
    """The lines of ``str(CommandError)`` (" code: N", " stdout: …", " stderr: …") without the
    labels the wrapper adds."""
    lines = []
    for line in transcript.splitlines():
        text = line.strip()
        if not text or text.startswith("code:"):
            continue
        for label in ("stdout:", "stderr:"):
            text = text.removeprefix(label).strip()
        if text:
            lines.append(text)
    return lines


def error_lines(transcript: str) -> str:
    """The engine's error lines from a CLI transcript, or its tail when none is marked."""
    lines = _transcript_lines(transcript)
    marked = [
        line.strip()
        for line in lines
        if line.strip().startswith(_ERROR_MARKERS) or " error: " in line
    ]
    # Policy violations put the rule and the resource on the lines after the marker.
    if any("Policy Violations" in line for line in lines):
        start = next(i for i, line in enumerate(lines) if "Policy Violations" in line)
        marked = [line.strip() for line in lines[start:]]
    chosen = marked or [line.strip() for line in lines[-_TRANSCRIPT_TAIL_LINES:]]
    return "\n  ".join(dict.fromkeys(chosen))


@contextmanager
def surfaced(step: str, stack: str) -> Iterator[None]:
    """Turn the Automation API's errors into a :class:`DeployError` naming ``step`` and
    ``stack`` with the engine's own message."""
    from pulumi.automation import errors

    try:
        yield
    except errors.StackNotFoundError as e:
        raise StackNotFound(f"no stack {stack!r} in this backend: {error_lines(str(e))}") from e
    except errors.ConcurrentUpdateError as e:
        raise DeployError(
            f"{step} {stack}: another update of this stack is running (wait for it, or run "
            f"`pulumi cancel` on the stack if it died): {error_lines(str(e))}"
        ) from e
    except errors.CommandError as e:
        raise DeployError(f"{step} {stack} failed:\n  {error_lines(str(e))}") from e
    except FileNotFoundError as e:  # the CLI vanished between the check and the call
        raise PulumiNotInstalled(PULUMI_INSTALL_HELP) from e


class PulumiStack:
    """A :class:`Stack` backed by ``pulumi.automation.Stack``."""

    def __init__(self, stack: Any) -> None:
        self._stack = stack
        self.name: str = stack.name

    def get_config(self, key: str) -> str | None:
        from pulumi.automation import errors

        try:
            return str(self._stack.get_config(key).value)
        except errors.CommandError:
            return None

    def set_config(self, key: str, value: str, *, secret: bool = False) -> None:
        from pulumi.automation import ConfigValue

        with surfaced("configure", self.name):
            self._stack.set_config(key, ConfigValue(value=value, secret=secret))

    def preview(self, on_output: OutputSink, policy_packs: list[str]) -> dict[str, int]:
        with surfaced("preview", self.name):
            result = self._stack.preview(on_output=on_output, policy_packs=policy_packs)
        summary = result.change_summary or {}
        # Keys are OpType members (a str Enum whose str() is "OpType.CREATE"): use the value.
        return {str(getattr(op, "value", op)): int(count) for op, count in summary.items()}

    def up(self, on_output: OutputSink, policy_packs: list[str]) -> dict[str, Any]:
        with surfaced("up", self.name):
            result = self._stack.up(
                on_output=on_output, policy_packs=policy_packs, show_secrets=False
            )
        return {key: out.value for key, out in result.outputs.items()}

    def destroy(self, on_output: OutputSink) -> None:
        with surfaced("destroy", self.name):
            self._stack.destroy(on_output=on_output, show_secrets=False)

    def outputs(self) -> dict[str, Any]:
        with surfaced("read outputs of", self.name):
            return {key: out.value for key, out in self._stack.outputs().items()}


def _exporting(program: Program) -> Callable[[], None]:
    """The inline program Pulumi runs: ``program``'s outputs become stack outputs."""

    def run() -> None:
        import pulumi

        for key, value in program().items():
            pulumi.export(key, value)

    return run


class PulumiWorkspace:
    """The real :class:`Workspace`: project ``project`` in the backend at ``backend_url``.

    ``env`` is added to the CLI's environment (e.g. ``AWS_REGION``). Constructing it checks
    for the CLI, so a missing one is reported before anything else happens."""

    def __init__(self, project: str, backend_url: str, env: Mapping[str, str] | None = None):
        require_pulumi_cli()
        self.project = project
        self.backend_url = backend_url
        self.env = dict(env or {})

    def _options(self) -> Any:
        from pulumi.automation import LocalWorkspaceOptions, ProjectBackend, ProjectSettings

        settings = ProjectSettings(
            name=self.project, runtime="python", backend=ProjectBackend(self.backend_url)
        )
        return LocalWorkspaceOptions(project_settings=settings, env_vars=self.env)

    def select_or_create(self, name: str, program: Program) -> Stack:
        from pulumi import automation

        with surfaced("open", name):
            stack = automation.create_or_select_stack(
                stack_name=name,
                project_name=self.project,
                program=_exporting(program),
                opts=self._options(),
            )
        return PulumiStack(stack)

    def select(self, name: str, program: Program) -> Stack:
        from pulumi import automation

        with surfaced("open", name):
            stack = automation.select_stack(
                stack_name=name,
                project_name=self.project,
                program=_exporting(program),
                opts=self._options(),
            )
        return PulumiStack(stack)

    def _workspace(self) -> Any:
        from pulumi import automation

        return automation.LocalWorkspace(
            project_settings=self._options().project_settings, env_vars=self.env
        )

    def list_stacks(self) -> list[StackInfo]:
        with surfaced("list stacks of", self.project):
            summaries = self._workspace().list_stacks()
        return [
            StackInfo(
                name=s.name,
                last_update=s.last_update,
                resource_count=s.resource_count,
                update_in_progress=bool(s.update_in_progress),
            )
            for s in summaries
        ]

    def remove(self, name: str) -> None:
        with surfaced("remove", name):
            self._workspace().remove_stack(name)


# -- what the CLI runs --------------------------------------------------------------------------


@dataclass(frozen=True)
class UpOutcome:
    """What ``deploy_up`` did: the preview's change summary, and the outputs (None when the
    user declined after the preview)."""

    changes: dict[str, int]
    outputs: dict[str, Any] | None


def deploy_up(
    workspace: Workspace,
    name: str,
    program: Program,
    *,
    config: Mapping[str, str],
    secrets: Mapping[str, Callable[[], str]],
    policy_packs: list[str],
    confirm: Callable[[dict[str, int]], bool],
    on_output: OutputSink,
) -> UpOutcome:
    """Create or update stack ``name``: set ``config``; generate each of ``secrets`` the stack
    does not have yet (kept from then on, so a re-run keeps the join token); preview with the
    policy packs (a mandatory violation stops here, before any change); ask ``confirm`` with
    the change summary; then ``up`` with the same packs and return its outputs."""
    stack = workspace.select_or_create(name, program)
    for key, value in config.items():
        stack.set_config(key, value)
    for key, generate in secrets.items():
        if stack.get_config(key) is None:
            stack.set_config(key, generate(), secret=True)
    changes = stack.preview(on_output, policy_packs)
    if not confirm(changes):
        return UpOutcome(changes, None)
    return UpOutcome(changes, stack.up(on_output, policy_packs))


def current_outputs(workspace: Workspace, name: str, program: Program) -> dict[str, Any]:
    """The outputs of stack ``name`` as last deployed; empty when there is no such stack."""
    try:
        return workspace.select(name, program).outputs()
    except StackNotFound:
        return {}


def deploy_destroy(
    workspace: Workspace, name: str, program: Program, on_output: OutputSink
) -> None:
    """Destroy every resource of stack ``name``, then remove the stack itself."""
    stack = workspace.select(name, program)
    stack.destroy(on_output)
    workspace.remove(name)


def list_deployments(workspace: Workspace, program: Program) -> list[StackInfo]:
    """Every stack with its outputs; a stack whose outputs cannot be read is listed without."""
    infos = []
    for info in workspace.list_stacks():
        try:
            outputs = workspace.select(info.name, program).outputs()
        except DeployError:
            outputs = {}
        infos.append(
            StackInfo(
                info.name, info.last_update, info.resource_count, info.update_in_progress, outputs
            )
        )
    return infos
