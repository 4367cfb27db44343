"""``det notebook`` / ``det tensorboard`` / the shared service code against a fake master.

The fake extends ``test_cli_fake_master.FakeMaster`` with the interactive-task endpoints of
``docs/design/interactive-tasks.md``: the three collections, ``GET /api/v1/tasks/{id}`` playing
a scripted sequence of states (one per poll), proxy tickets and ``/proxy/<id>/api/status``.
``test_cli_shell.py`` reuses it.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cli import context, service
from tests.unit.test_cli_fake_master import (  # noqa: F401  (fixtures by name)
    FakeMaster,
    Result,
    _handler,
    cli_env_fixture,
    det_fixture,
)

Det = Callable[..., Result]
NOUNS = {"shells": "shell", "notebooks": "notebook", "tensorboards": "tensorboard"}
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"


def detail(
    state: str = "QUEUED",
    *,
    ready: bool = False,
    waiting: str | None = None,
    agents: tuple[str, ...] = (),
    ended: bool = False,
    exit_reason: str | None = None,
) -> dict[str, Any]:
    """A ``GET /api/v1/tasks/{id}`` task in the master's shape (one allocation)."""
    allocation = {
        "allocationId": "x.1",
        "state": f"STATE_{state}",
        "isReady": ready,
        "waitingReason": waiting,
        "agents": list(agents),
        "endTime": "2024-05-01T12:00:09Z" if ended else None,
        "exitReason": exit_reason,
        "exitCode": None,
    }
    return {
        "taskId": "x",
        "state": f"STATE_{state}",
        "allocations": [allocation],
        "endTime": "2024-05-01T12:00:09Z" if ended else None,
    }


READY = [detail("RUNNING", ready=True)]


@dataclass
class ServiceFake(FakeMaster):
    """FakeMaster plus shells, notebooks and TensorBoards (see the module docstring)."""

    services: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {plural: {} for plural in NOUNS}
    )
    # What GET /api/v1/tasks/{id} answers for the next task created, one per poll (last repeats).
    next_progression: list[dict[str, Any]] = field(default_factory=lambda: list(READY))
    progressions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Statuses of GET /proxy/<id>/api/status, one per call (last repeats).
    proxy_statuses: list[int] = field(default_factory=lambda: [200])
    ssh_user: str | None = "alice"

    def route(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, me: str, tok: str
    ):
        parts = path.strip("/").split("/")
        if parts[0] == "proxy":
            statuses = self.proxy_statuses
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
            return status, {"version": "2.14"} if status == 200 else {"message": "not ready"}
        rest = parts[2:]
        if rest[:1] == ["tasks"] and rest[2:] == ["proxy-ticket"] and method == "POST":
            return 200, {"ticket": "T1", "url": f"/proxy/{rest[1]}/?flotilla_ticket=T1"}
        if rest[:1] == ["tasks"] and len(rest) == 2 and rest[1] in self.progressions:
            steps = self.progressions[rest[1]]
            return 200, {"task": steps.pop(0) if len(steps) > 1 else steps[0]}
        if rest == ["workspaces"]:
            return 200, {"workspaces": [{"id": 1, "name": "Uncategorized"}]}
        if rest[:1] and rest[0] in NOUNS:
            return self._route_service(method, rest, body, me)
        return super().route(method, path, query, body, me, tok)

    def _route_service(self, method: str, rest: list[str], body: Any, me: str):
        plural, noun = rest[0], NOUNS[rest[0]]
        items = self.services[plural]
        if len(rest) == 1 and method == "POST":
            item = self._create(plural, body, me)
            return 200, {noun: item, "config": body["config"]}
        if len(rest) == 1:
            listed = [{**i, "privateKey": None} for i in items.values()]
            return 200, {plural: listed}
        if rest[1] not in items:
            return 404, {"code": 5, "message": f"{noun} {rest[1]} not found"}
        item = items[rest[1]]
        if rest[2:] == ["kill"]:
            item["state"] = "STATE_TERMINATED"
            return 200, {noun: item}
        shown = item if item["username"] == me else {**item, "privateKey": None}
        return 200, {noun: shown, "config": item["config"]}

    def _create(self, plural: str, body: dict[str, Any], me: str) -> dict[str, Any]:
        count = sum(len(v) for v in self.services.values()) + 1
        task_id = f"{count:08x}-1111-2222-3333-444444444444"
        item: dict[str, Any] = {
            "id": task_id,
            "description": f"{NOUNS[plural].title()} (fake)",
            "state": "STATE_QUEUED",
            "username": me,
            "resourcePool": "default",
            "workspaceId": 1,
            "registeredTime": f"2024-05-01T12:00:{count:02d}Z",
            "serviceAddress": f"/proxy/{task_id}/",
            "isReady": False,
            "config": body["config"],
        }
        if plural == "shells":
            item["privateKey"] = PRIVATE_KEY
            item["publicKey"] = "ssh-ed25519 AAAA"
            item["agentUserGroup"] = {"user": self.ssh_user, "uid": 1000, "group": "g", "gid": 1}
        if plural == "tensorboards":
            item["experimentIds"] = body.get("experimentIds")
            item["trialIds"] = body.get("trialIds")
        self.services[plural][task_id] = item
        self.progressions[task_id] = list(self.next_progression)
        return item

    def posts(self, path: str) -> list[Any]:
        return [b for m, p, b in self.requests if (m, p) == ("POST", path)]


@pytest.fixture(name="fake")
def fake_fixture(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServiceFake]:
    fake = ServiceFake()
    fake.add_user("admin", admin=True)
    fake.add_user("determined")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("DET_MASTER", fake.url)
    monkeypatch.setattr(service, "POLL_SECONDS", 0.0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(name="browser")
def browser_fixture(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """URLs the CLI opened in a (pretend) browser; a display is assumed present."""
    opened: list[str] = []
    monkeypatch.setattr(service, "can_open_browser", lambda: True)
    monkeypatch.setattr(service.webbrowser, "open", recorder(opened))
    return opened


def recorder(opened: list[str]) -> Callable[[str], bool]:
    """A stand-in for ``webbrowser.open`` that records the URL and reports success."""

    def open_url(url: str) -> bool:
        opened.append(url)
        return True

    return open_url


# ---- config and context validation ----------------------------------------------------------


@pytest.mark.parametrize("noun", ["shell", "notebook"])
def test_bad_config_names_the_field_path_before_any_request(
    fake: ServiceFake, det: Det, noun: str
) -> None:
    result = det(noun, "start", "--config", "resources.slots=-1")
    assert result.code == 1
    assert result.err.startswith(f"invalid {noun} config: resources.slots: ")
    assert "greater than or equal to 0" in result.err
    assert len(result.err.splitlines()) == 1
    assert fake.requests == []


def test_unknown_and_malformed_fields_are_all_named(fake: ServiceFake, det: Det) -> None:
    result = det("tensorboard", "start", "1", "--config", "idle_timeout=soon", "--config", "x=1")
    assert result.code == 1
    assert "idle_timeout: invalid duration 'soon': expected" in result.err
    assert "x: Extra inputs are not permitted" in result.err


def test_config_file_and_overrides_are_merged(fake: ServiceFake, det: Det, tmp_path: Path) -> None:
    config = tmp_path / "nb.yaml"
    config.write_text("description: mine\nresources:\n  slots: 2\n")
    det_args = ["--config-file", str(config), "--config", "resources.slots=0", "-d"]
    assert det("notebook", "start", *det_args).code == 0
    assert fake.posts("/api/v1/notebooks") == [
        {"config": {"description": "mine", "resources": {"slots": 0}}}
    ]


def test_context_is_packed_as_v1_files_honouring_detignore(
    fake: ServiceFake, det: Det, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "data" / "raw").mkdir(parents=True)
    (ctx / "src" / "train.py").write_text("print('hi')\n")
    (ctx / "src" / "model.ckpt").write_bytes(b"\0" * 10)
    (ctx / "keep.ckpt").write_bytes(b"k")
    (ctx / "data" / "raw" / "big.bin").write_bytes(b"\1" * 10)
    (ctx / "data" / "small.txt").write_text("s")
    (ctx / ".detignore").write_text("# comment\n*.ckpt\n!/keep.ckpt\ndata/raw/\n")
    os.chmod(ctx / "src" / "train.py", 0o751)

    assert det("notebook", "start", "-d", "-c", str(ctx)).code == 0
    files = fake.posts("/api/v1/notebooks")[0]["files"]
    by_path = {f["path"]: f for f in files}
    assert sorted(by_path) == [
        "data",
        "data/small.txt",
        "keep.ckpt",
        "src",
        "src/train.py",
    ]
    assert by_path["src"]["type"] == 53 and by_path["src"]["content"] == ""
    train = by_path["src/train.py"]
    assert (train["type"], train["content"], train["mode"]) == (48, "cHJpbnQoJ2hpJykK", 0o751)
    assert isinstance(train["mtime"], int)


def test_oversized_context_is_refused_naming_the_biggest_files(
    fake: ServiceFake, det: Det, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "weights.bin").write_bytes(b"w" * 3000)
    (ctx / "notes.txt").write_bytes(b"n" * 600)
    (ctx / "tiny.txt").write_bytes(b"t")
    monkeypatch.setattr(context, "MAX_CONTEXT_BYTES", 2048)
    result = det("shell", "start", "-d", "-c", str(ctx))
    assert result.code == 1
    assert len(result.err.splitlines()) == 1
    assert "over the limit of 0.0 MiB" in result.err
    assert "biggest files: weights.bin (0.0 MiB), notes.txt (0.0 MiB), tiny.txt" in result.err
    assert ".detignore" in result.err
    assert fake.requests == []


def test_context_must_be_a_directory(fake: ServiceFake, det: Det, tmp_path: Path) -> None:
    result = det("notebook", "start", "-c", str(tmp_path / "nope"))
    assert (result.code, result.err.count("\n")) == (1, 1)
    assert "is not a directory" in result.err


def test_detignore_rules_are_gitignore_exact() -> None:
    spec = context.ignore_spec(
        "*.pyc\n/build\nlogs/\n!important.log\n*.log\n!keep.log\ndata/*.csv\n**/cache\na/**/b\n"
    )
    assert context.is_ignored(spec, "a/b/c.pyc", False)
    assert context.is_ignored(spec, "build", True)
    assert not context.is_ignored(spec, "src/build", True)  # anchored
    assert context.is_ignored(spec, "x/logs", True)
    assert not context.is_ignored(spec, "x/logs", False)  # directories only
    assert context.is_ignored(spec, "important.log", False)  # a later rule wins
    assert not context.is_ignored(spec, "d/keep.log", False)
    # What fnmatch got wrong: `*` stops at `/`, `**/x` matches at the top, `a/**/b` matches a/b.
    assert context.is_ignored(spec, "data/x.csv", False)
    assert not context.is_ignored(spec, "data/sub/x.csv", False)
    assert context.is_ignored(spec, "cache", True)
    assert context.is_ignored(spec, "deep/er/cache", True)
    assert context.is_ignored(spec, "a/b", False)
    assert context.is_ignored(spec, "a/x/y/b", False)


def test_determined_default_ignores_apply_without_a_detignore() -> None:
    spec = context.ignore_spec()
    for path, is_dir in [
        (".git", True),
        ("sub/__pycache__", True),
        ("m.pyc", False),
        (".idea", True),
        (".mypy_cache", True),
    ]:
        assert context.is_ignored(spec, path, is_dir), path
    assert not context.is_ignored(spec, "model_def.py", False)
    assert not context.is_ignored(spec, ".gitignore", False)


def test_preparing_files_line_is_determineds_once_without_a_terminal(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "pkg").mkdir(parents=True)
    (ctx / ".git").mkdir()
    (ctx / ".git" / "HEAD").write_text("ref\n")
    (ctx / "pkg" / "a.py").write_bytes(b"a" * 2048)
    (ctx / "b.py").write_bytes(b"b" * 100)
    out = io.StringIO()
    entries = context.pack_context(ctx, out=out)
    assert sorted(e["path"] for e in entries) == ["b.py", "pkg", "pkg/a.py"]
    assert out.getvalue() == f"Preparing files ({ctx}) to send to master... 2.1KB and 3 files\n"
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


# ---- launching, waiting, opening ---------------------------------------------------------------


def test_detach_prints_only_the_id_and_does_not_wait(fake: ServiceFake, det: Det) -> None:
    result = det("notebook", "start", "--detach")
    assert (result.code, result.out) == (0, "00000001-1111-2222-3333-444444444444\n")
    assert fake.posts("/api/v1/notebooks") == [{"config": {}}]
    assert not any(p.startswith("/api/v1/tasks") for _, p, _ in fake.requests)


def test_notebook_start_shows_each_wait_once_then_url_and_browser(
    fake: ServiceFake, det: Det, browser: list[str]
) -> None:
    waiting = "waiting for an agent; pool 'default': launching 1 × local on-demand"
    fake.next_progression = [
        detail("QUEUED"),
        detail("QUEUED", waiting=waiting),
        detail("QUEUED", waiting=waiting),
        detail("STARTING", agents=("agent-1",)),
        detail("RUNNING"),
        detail("RUNNING"),
        detail("RUNNING", ready=True),
    ]
    fake.proxy_statuses = [503, 502, 200]
    result = det("notebook", "start")
    nb = "00000001-1111-2222-3333-444444444444"
    assert result.code == 0, result.err
    assert result.err.splitlines() == [
        f"Launched notebook (id: {nb}, name: Notebook (fake)).",
        "waiting to be scheduled",
        f"waiting to be scheduled: {waiting}",
        "starting on agent agent-1",
        "starting the server",
    ]
    assert result.out == f"Jupyter Notebook is running at: {fake.url}/proxy/{nb}/lab\n"
    probes = [p for m, p, _ in fake.requests if p.startswith("/proxy/")]
    assert probes == [f"/proxy/{nb}/api/status"] * 3
    assert browser == [f"{fake.url}/proxy/{nb}/?flotilla_ticket=T1"]


def test_task_that_ends_while_starting_fails_with_reason_and_log_tail(
    fake: ServiceFake, det: Det, browser: list[str]
) -> None:
    fake.next_progression = [
        detail("QUEUED"),
        detail("RUNNING"),
        detail("TERMINATED", ended=True, exit_reason="exited with code 1"),
    ]
    nb = "00000001-1111-2222-3333-444444444444"
    fake.logs[nb] = [f"line {i}" for i in range(15)]
    result = det("notebook", "start")
    assert result.code == 1
    lines = result.err.splitlines()
    tail_at = lines.index(f"The last 10 log lines of notebook {nb}:")
    assert lines[tail_at + 1 : -1] == [f"line {i}" for i in range(5, 15)]
    assert lines[-1] == f"Notebook {nb} has ended: exited with code 1"
    assert result.out == "" and browser == []


def test_ctrl_c_while_waiting_leaves_the_task_and_says_how_to_kill_it(
    fake: ServiceFake, det: Det, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.next_progression = [detail("QUEUED", waiting="no free slots")]

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(service.time, "sleep", interrupt)
    result = det("notebook", "start")
    nb = "00000001-1111-2222-3333-444444444444"
    assert result.code == 3
    assert f"Kill it with: det notebook kill {nb}" in result.err
    assert result.err.endswith("Interrupting...\n")
    assert not any(p.endswith("/kill") for _, p, _ in fake.requests)


def test_notebook_not_answering_through_the_proxy_is_an_error(
    fake: ServiceFake, det: Det, monkeypatch: pytest.MonkeyPatch, browser: list[str]
) -> None:
    fake.proxy_statuses = [502, 502]
    monkeypatch.setattr(service, "PROXY_PROBE_SECONDS", 0.0)
    result = det("notebook", "start")
    assert result.code == 1
    assert "is ready but" in result.err and "answers HTTP 502: not ready" in result.err
    assert browser == []


def test_no_browser_and_no_display(
    fake: ServiceFake, det: Det, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(service.webbrowser, "open", recorder(opened))
    result = det("notebook", "start", "--no-browser")
    assert result.code == 0 and fake.posts(f"/api/v1/tasks/{_id(1)}/proxy-ticket") == []

    monkeypatch.setattr(service.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = det("notebook", "open", "00000001")
    assert result.code == 0
    assert f"login link within 60 s: {fake.url}/proxy/{_id(1)}/?flotilla_ticket=T1" in result.err
    assert opened == []


def test_login_link_uses_the_users_master_url_not_the_masters_idea_of_itself(
    fake: ServiceFake, det: Det, browser: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = fake.route

    def absolute_ticket(method: str, path: str, *rest: Any):
        if path.endswith("/proxy-ticket"):
            return 200, {"ticket": "T", "url": "http://localhost:8080/proxy/abc/?flotilla_ticket=T"}
        return original(method, path, *rest)

    monkeypatch.setattr(fake, "route", absolute_ticket)
    assert det("notebook", "start").code == 0
    assert browser == [f"{fake.url}/proxy/abc/?flotilla_ticket=T"]


def _id(n: int) -> str:
    return f"{n:08x}-1111-2222-3333-444444444444"


def test_tensorboard_start_sends_experiment_and_trial_ids(
    fake: ServiceFake, det: Det, browser: list[str]
) -> None:
    result = det("tensorboard", "start", "3", "4", "-t", "7", "--config", "description=tb")
    assert result.code == 0, result.err
    assert fake.posts("/api/v1/tensorboards") == [
        {"experimentIds": [3, 4], "trialIds": [7], "config": {"description": "tb"}}
    ]
    assert result.out == f"TensorBoard is running at: {fake.url}/proxy/{_id(1)}/\n"
    assert browser == [f"{fake.url}/proxy/{_id(1)}/?flotilla_ticket=T1"]

    nothing = det("tensorboard", "start")
    assert nothing.code == 1 and nothing.err.startswith("nothing to show: give experiment ids")


# ---- list, describe, logs, kill -------------------------------------------------------------


def test_list_describe_logs_and_kill_by_prefix(fake: ServiceFake, det: Det) -> None:
    det("notebook", "start", "-d")
    det("notebook", "start", "-d", "--config", "description=second")
    fake.services["notebooks"][_id(2)]["username"] = "admin"

    fake.services["notebooks"][_id(2)]["workspaceId"] = 7

    listed = det("notebook", "list")
    header = [h.strip() for h in listed.out.splitlines()[0].split("|")]
    assert header == [
        "id",
        "username",
        "description",
        "state",
        "exitStatus",
        "resourcePool",
        "workspaceName",
    ]
    assert listed.out.splitlines()[2].rstrip().endswith("| Uncategorized")
    everyone = det("notebook", "list", "-a").out
    assert everyone.splitlines()[3].rstrip().endswith("| missing workspace id 7")
    assert _id(1) in listed.out and _id(2) not in listed.out and "STATE_" not in listed.out
    assert det("notebook", "list", "--all", "-q").out == f"{_id(1)}\n{_id(2)}\n"
    assert det("notebook", "ls", "-a", "--csv").out.startswith("id,username,description")

    described = det("notebook", "describe", "00000001", "--json")
    assert '"state": "QUEUED"' in described.out

    fake.logs[_id(1)] = ["jupyter says hi"]
    logs = det("notebook", "logs", "00000001", "--tail", "5")
    assert logs.out == "jupyter says hi\n"

    killed = det("notebook", "kill", "00000001")
    assert killed.out == f"Killed notebook {_id(1)}\n"
    assert fake.posts(f"/api/v1/notebooks/{_id(1)}/kill") == [None]

    assert det("notebook", "kill", "0000").err == "partial UUID '0000' not unique\n"
    assert det("notebook", "describe", "ffff").err == "partial UUID 'ffff' not found\n"


def test_tensorboard_list_shows_experiment_and_trial_ids(fake: ServiceFake, det: Det) -> None:
    det("tensorboard", "start", "-d", "5", "-t", "9")
    out = det("tensorboard").out
    assert "experimentIds" in out.splitlines()[0] and "[5]" in out and "[9]" in out


def test_progress_reading() -> None:
    assert service.progress({}).line == "waiting to be scheduled"
    two = service.progress(detail("STARTING", agents=("a", "b")))
    assert two.line == "starting on agents a, b" and not two.queued
    code = detail("TERMINATED", ended=True)
    code["allocations"][0]["exitCode"] = 137
    assert service.progress(code).line == "exited with code 137"
    assert service.progress(detail("TERMINATED", ended=True)).line == "it ended (TERMINATED)"


def test_determined_container_settings_are_accepted_with_a_warning(
    fake: ServiceFake, det: Det
) -> None:
    """A seed runs ``det notebook start --config environment.image=determinedai/...``."""
    image = "determinedai/environments:cuda-10.1-pytorch-1.4-tf-2.2-gpu-0.7.0"
    result = det("notebook", "start", "-d", "--config", f"environment.image={image}")
    assert result.code == 0, result.err
    assert result.err.splitlines() == [
        "Warning: notebook config: environment.image is accepted but has no effect: tasks run "
        "as processes on the agents, not in containers, so there is no image to run"
    ]
    assert fake.posts("/api/v1/notebooks") == [{"config": {"environment": {"image": image}}}]
