"""The Automation API layer (``infra.common.automation``) behind its small interface: a fake
workspace that records every call and keeps stacks in memory stands in for the Pulumi CLI,
which cannot be installed here; Pulumi's own error classes are raised as the CLI wrapper would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pulumi.automation import errors
from pulumi.automation._cmd import CommandResult

from infra.common.automation import (
    PULUMI_INSTALL_HELP,
    DeployError,
    PulumiNotInstalled,
    PulumiWorkspace,
    StackInfo,
    StackNotFound,
    deploy_destroy,
    deploy_up,
    error_lines,
    list_deployments,
    require_pulumi_cli,
    surfaced,
)

OUTPUTS = {"master_url": "http://198.51.100.10:8080"}


class FakeStack:
    """A stack in memory: config, whether it exists in the cloud, and the engine's lines."""

    def __init__(self, name: str, log: list[str], fail: dict[str, Exception]) -> None:
        self.name = name
        self.log = log
        self.fail = fail
        self.config: dict[str, tuple[str, bool]] = {}
        self.deployed: dict[str, Any] | None = None

    def _call(self, what: str) -> None:
        self.log.append(what)
        if what in self.fail:
            with surfaced(what, self.name):
                raise self.fail[what]

    def get_config(self, key: str) -> str | None:
        self.log.append(f"get_config {key}")
        return self.config.get(key, (None, False))[0]

    def set_config(self, key: str, value: str, *, secret: bool = False) -> None:
        self.log.append(f"set_config {key}{' (secret)' if secret else ''}")
        self.config[key] = (value, secret)

    def preview(self, on_output: Callable[[str], None], policy_packs: list[str]) -> dict[str, int]:
        self._call("preview")
        on_output(f"Previewing update ({self.name}) with policies {policy_packs}")
        if self.deployed == self._wanted():
            return {"same": 3}
        return {"create": 3} if self.deployed is None else {"update": 1, "same": 2}

    def _wanted(self) -> dict[str, Any]:
        return {**OUTPUTS, "token": self.config["flotilla:joinToken"][0]}

    def up(self, on_output: Callable[[str], None], policy_packs: list[str]) -> dict[str, Any]:
        self._call("up")
        for line in ("Updating (demo)", " +  aws:ec2:Vpc vpc creating", "Resources: 3 created"):
            on_output(line)
        self.deployed = self._wanted()
        return dict(self.deployed)

    def destroy(self, on_output: Callable[[str], None]) -> None:
        self._call("destroy")
        on_output("Destroying (demo)")
        self.deployed = None

    def outputs(self) -> dict[str, Any]:
        self._call("outputs")
        return dict(self.deployed or {})


class FakeWorkspace:
    def __init__(self, fail: dict[str, Exception] | None = None) -> None:
        self.log: list[str] = []
        self.fail = fail or {}
        self.stacks: dict[str, FakeStack] = {}

    def select_or_create(self, name: str, program: Any) -> FakeStack:
        self.log.append(f"select_or_create {name}")
        return self.stacks.setdefault(name, FakeStack(name, self.log, self.fail))

    def select(self, name: str, program: Any) -> FakeStack:
        self.log.append(f"select {name}")
        if name not in self.stacks:
            raise StackNotFound(f"no stack {name!r}")
        return self.stacks[name]

    def list_stacks(self) -> list[StackInfo]:
        return [StackInfo(name, resource_count=3 if s.deployed else 0)
                for name, s in self.stacks.items()]  # fmt: skip

    def remove(self, name: str) -> None:
        self.log.append(f"remove {name}")
        del self.stacks[name]


def program() -> dict[str, Any]:
    raise AssertionError("the fake workspace never runs the program")


def command_error(kind: type[errors.CommandError], stderr: str) -> errors.CommandError:
    return kind(CommandResult(stdout="Updating (demo)\n", stderr=stderr, code=255))


class Up:
    """deploy_up with a token generator that counts its calls, and the lines streamed."""

    def __init__(self, workspace: FakeWorkspace, answer: bool = True) -> None:
        self.workspace = workspace
        self.answer = answer
        self.generated = 0
        self.lines: list[str] = []
        self.asked: list[dict[str, int]] = []

    def token(self) -> str:
        self.generated += 1
        return f"token-{self.generated}"

    def confirm(self, changes: dict[str, int]) -> bool:
        self.workspace.log.append("confirm")
        self.asked.append(changes)
        return self.answer

    def __call__(self) -> Any:
        return deploy_up(
            self.workspace,
            "demo",
            program,
            config={"aws:region": "us-east-1"},
            secrets={"flotilla:joinToken": self.token},
            policy_packs=["/pack"],
            confirm=self.confirm,
            on_output=self.lines.append,
        )


def test_up_sets_config_and_secrets_previews_with_policies_asks_then_applies() -> None:
    workspace = FakeWorkspace()
    run = Up(workspace)
    outcome = run()
    assert workspace.log == [
        "select_or_create demo",
        "set_config aws:region",
        "get_config flotilla:joinToken",
        "set_config flotilla:joinToken (secret)",
        "preview",
        "confirm",
        "up",
    ]
    assert outcome.changes == {"create": 3}
    assert outcome.outputs == {**OUTPUTS, "token": "token-1"}
    assert run.lines == [
        "Previewing update (demo) with policies ['/pack']",
        "Updating (demo)",
        " +  aws:ec2:Vpc vpc creating",
        "Resources: 3 created",
    ]
    assert workspace.stacks["demo"].config["flotilla:joinToken"] == ("token-1", True)


def test_rerun_keeps_the_secret_and_changes_nothing() -> None:
    workspace = FakeWorkspace()
    run = Up(workspace)
    first = run()
    workspace.log.clear()
    second = run()
    assert run.generated == 1
    assert "set_config flotilla:joinToken (secret)" not in workspace.log
    assert second.changes == {"same": 3}
    assert second.outputs == first.outputs


def test_declining_after_the_preview_changes_nothing() -> None:
    workspace = FakeWorkspace()
    outcome = Up(workspace, answer=False)()
    assert outcome.outputs is None
    assert workspace.log[-2:] == ["preview", "confirm"]
    assert workspace.stacks["demo"].deployed is None


def test_a_policy_violation_in_preview_stops_before_any_change() -> None:
    stderr = (
        "Policy Violations:\n"
        "    [mandatory]  flotilla v0.0.1  no-ssh-from-world (aws:vpc/securityGroupIngressRule"
        ":SecurityGroupIngressRule: ssh)\n"
        "    ingress from 0.0.0.0/0 reaches port 22 (SSH)\n"
        "error: preview failed\n"
    )
    workspace = FakeWorkspace({"preview": command_error(errors.CommandError, stderr)})
    with pytest.raises(DeployError) as caught:
        Up(workspace)()
    assert "preview demo failed" in caught.value.message
    assert "no-ssh-from-world" in caught.value.message
    assert "reaches port 22" in caught.value.message
    assert "up" not in workspace.log and "confirm" not in workspace.log


def test_an_up_error_carries_the_stacks_message() -> None:
    stderr = (
        "    aws:ec2:Instance master creating (3s) error: operation error EC2: RunInstances, "
        "api error VcpuLimitExceeded: You have requested more vCPU capacity than your current "
        "vCPU limit of 4 allows\n"
        "error: update failed\n"
    )
    workspace = FakeWorkspace({"up": command_error(errors.CommandError, stderr)})
    with pytest.raises(DeployError, match="VcpuLimitExceeded") as caught:
        Up(workspace)()
    assert caught.value.message.startswith("up demo failed")


def test_a_concurrent_update_says_what_to_do() -> None:
    stderr = "error: the stack is currently locked by 1 lock(s)\n"
    workspace = FakeWorkspace({"up": command_error(errors.ConcurrentUpdateError, stderr)})
    with pytest.raises(DeployError, match="another update of this stack is running"):
        Up(workspace)()


def test_destroy_then_remove_and_a_missing_stack() -> None:
    workspace = FakeWorkspace()
    Up(workspace)()
    lines: list[str] = []
    deploy_destroy(workspace, "demo", program, lines.append)
    assert workspace.log[-3:] == ["select demo", "destroy", "remove demo"]
    assert lines == ["Destroying (demo)"]
    with pytest.raises(StackNotFound):
        deploy_destroy(workspace, "demo", program, lines.append)


def test_list_reads_outputs_and_survives_an_unreadable_stack() -> None:
    workspace = FakeWorkspace()
    Up(workspace)()
    workspace.stacks["broken"] = FakeStack("broken", workspace.log, {
        "outputs": command_error(errors.CommandError, "error: decrypting secrets\n")})  # fmt: skip
    listed = {info.name: info for info in list_deployments(workspace, program)}
    assert listed["demo"].outputs["master_url"] == OUTPUTS["master_url"]
    assert listed["broken"].outputs == {}


def test_error_lines_prefers_marked_lines_and_falls_back_to_the_tail() -> None:
    assert error_lines("a\nerror: one\nb\nerror: one\n") == "error: one"
    tail = "\n".join(f"line {i}" for i in range(30))
    assert error_lines(tail).startswith("line 15")


def test_no_pulumi_cli_is_a_message_with_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PulumiNotInstalled) as caught:
        require_pulumi_cli()
    assert caught.value.message == PULUMI_INSTALL_HELP
    assert "get.pulumi.com" in PULUMI_INSTALL_HELP
    with pytest.raises(PulumiNotInstalled):
        PulumiWorkspace("flotilla-aws", "file:///tmp/state")


def test_stack_not_found_from_the_cli_is_stack_not_found() -> None:
    with pytest.raises(StackNotFound, match="no stack 'demo'"), surfaced("open", "demo"):
        raise command_error(errors.StackNotFoundError, "error: no stack named 'demo' found\n")


def test_current_outputs_of_a_deployed_and_a_missing_stack() -> None:
    from infra.common.automation import current_outputs

    workspace = FakeWorkspace()
    assert current_outputs(workspace, "demo", program) == {}
    Up(workspace)()
    assert current_outputs(workspace, "demo", program)["master_url"] == OUTPUTS["master_url"]


class AutomationStackDouble:
    """Stands in for ``pulumi.automation.Stack`` with its real result types, to pin how
    ``PulumiStack`` reads them (the CLI it would drive is not installable here)."""

    name = "demo"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def preview(self, **kw: Any) -> Any:
        from pulumi.automation import PreviewResult
        from pulumi.automation.events import OpType

        self.calls.append(("preview", kw))
        kw["on_output"]("Previewing update (demo)")
        return PreviewResult("", "", {OpType.CREATE: 3, OpType.SAME: 1})

    def up(self, **kw: Any) -> Any:
        from pulumi.automation import OutputValue, UpResult

        self.calls.append(("up", kw))
        outputs = {"master_url": OutputValue("http://198.51.100.10:8080", False),
                   "token": OutputValue("t", True)}  # fmt: skip
        return UpResult("", "", None, outputs)  # type: ignore[arg-type]

    def destroy(self, **kw: Any) -> Any:
        self.calls.append(("destroy", kw))
        raise command_error(errors.CommandError, "error: BucketNotEmpty: the bucket is not empty\n")


def test_pulumi_stack_reads_the_automation_apis_results() -> None:
    from infra.common.automation import PulumiStack

    double = AutomationStackDouble()
    stack = PulumiStack(double)
    lines: list[str] = []
    assert stack.preview(lines.append, ["/pack"]) == {"create": 3, "same": 1}
    assert lines == ["Previewing update (demo)"]
    assert stack.up(lines.append, ["/pack"]) == {
        "master_url": "http://198.51.100.10:8080",
        "token": "t",
    }
    assert double.calls[1][1]["policy_packs"] == ["/pack"]
    assert double.calls[1][1]["show_secrets"] is False
    with pytest.raises(DeployError, match="destroy demo failed:\n  error: BucketNotEmpty"):
        stack.destroy(lines.append)
