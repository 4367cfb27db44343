"""The runner: process groups, log batches in order before the exit, kills with grace."""

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.protocol import (
    AllocationExited,
    AllocationStarted,
    BindMount,
    DeviceType,
    LogBatch,
    SlotInfo,
    StartAllocation,
)
from agent.runner import MAX_LINE_BYTES, Runner

REPO = Path(__file__).resolve().parents[2]
CPU_SLOTS = [SlotInfo(id=0, type=DeviceType.CPU), SlotInfo(id=1, type=DeviceType.CPU)]


RECORDERS: list["Recorder"] = []
RUNNERS: list[Runner] = []


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    """A failing test must not leave ``sleep 100`` behind: SIGKILL every group it started."""
    yield
    for recorder in RECORDERS:
        for message in recorder.messages:
            if isinstance(message, AllocationStarted):
                with contextlib.suppress(OSError):
                    os.killpg(message.pid, signal.SIGKILL)
    RECORDERS.clear()
    for runner in RUNNERS:
        runner.close()
    RUNNERS.clear()


class Recorder:
    def __init__(self) -> None:
        self.messages: list = []
        RECORDERS.append(self)

    def __call__(self, message) -> None:
        self.messages.append(message)

    def of(self, allocation_id: str) -> list:
        return [m for m in self.messages if m.allocation_id == allocation_id]

    def lines(self, allocation_id: str, stdtype: str | None = None) -> list[str]:
        return [
            entry.line
            for m in self.of(allocation_id)
            if isinstance(m, LogBatch)
            for entry in m.entries
            if stdtype in (None, entry.stdtype)
        ]

    async def exit_of(self, allocation_id: str, timeout: float = 5.0) -> AllocationExited:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.of(allocation_id):
                if isinstance(m, AllocationExited):
                    return m
            await asyncio.sleep(0.01)
        raise AssertionError(f"no exit for {allocation_id}: {self.of(allocation_id)}")


def make_runner(tmp_path: Path, recorder: Recorder, **overrides) -> Runner:
    options = {
        "work_dir": tmp_path,
        "agent_id": "agent-1",
        "slots": CPU_SLOTS,
        "emit": recorder,
        "log_batch_interval": 0.05,
        "kill_grace_period": 5.0,
        **overrides,
    }
    runner = Runner(**options)
    RUNNERS.append(runner)
    return runner


def start(argv: list[str], allocation_id: str = "alloc-1", **fields) -> StartAllocation:
    return StartAllocation(allocation_id=allocation_id, task_id="task-1", argv=argv, **fields)


def test_logs_arrive_in_order_before_the_exit_code(tmp_path):
    async def scenario() -> Recorder:
        recorder = Recorder()
        runner = make_runner(tmp_path, recorder)
        script = "echo out; echo err >&2; for i in $(seq 1 200); do echo $i; done; exit 3"
        runner.start(start(["sh", "-c", script]))
        await recorder.exit_of("alloc-1")
        return recorder

    recorder = asyncio.run(scenario())
    messages = recorder.of("alloc-1")
    assert isinstance(messages[0], AllocationStarted)
    assert isinstance(messages[-1], AllocationExited)
    assert all(isinstance(m, LogBatch) for m in messages[1:-1])
    assert (messages[-1].exit_code, messages[-1].reason) == (3, "")
    assert recorder.lines("alloc-1", "stdout") == ["out", *[str(i) for i in range(1, 201)]]
    assert recorder.lines("alloc-1", "stderr") == ["err"]
    timestamps = [e.timestamp for m in messages[1:-1] for e in m.entries]
    assert timestamps == sorted(timestamps) and timestamps[0].tzinfo is not None


def test_environment_files_and_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("DET_AGENT_JOIN_TOKEN", "must-not-leak")

    async def scenario() -> Recorder:
        recorder = Recorder()
        runner = make_runner(tmp_path, recorder)
        script = (
            'echo "$DET_AGENT_ID|$DET_SLOT_IDS|[$CUDA_VISIBLE_DEVICES]|$FROM_MASTER"; '
            'echo "token=[$DET_AGENT_JOIN_TOKEN]"; pwd; cat pkg/model.py'
        )
        files = {"pkg/model.py": base64.b64encode(b"print('hi')\n").decode()}
        runner.start(
            start(["sh", "-c", script], env={"FROM_MASTER": "yes"}, slot_ids=[0, 1], files=files)
        )
        await recorder.exit_of("alloc-1")
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.lines("alloc-1", "stdout") == [
        "agent-1|0,1|[]|yes",
        "token=[]",
        str(tmp_path / "alloc-1"),
        "print('hi')",
    ]


def test_cuda_slots_set_cuda_visible_devices(tmp_path):
    slots = [
        SlotInfo(id=0, type=DeviceType.CUDA, uuid="GPU-aaa"),
        SlotInfo(id=1, type=DeviceType.CUDA, uuid="GPU-bbb"),
    ]

    async def scenario() -> Recorder:
        recorder = Recorder()
        runner = make_runner(tmp_path, recorder, slots=slots)
        runner.start(start(["sh", "-c", "echo $CUDA_VISIBLE_DEVICES"], slot_ids=[1]))
        await recorder.exit_of("alloc-1")
        return recorder

    assert asyncio.run(scenario()).lines("alloc-1") == ["GPU-bbb"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"argv": ["/no/such/program"]}, "failed to start: [Errno 2] No such file or directory"),
        ({"argv": []}, "failed to start: argv is empty"),
        (
            {"argv": ["true"], "files": {"../escape.py": "eA=="}},
            "failed to start: context file '../escape.py': contains '..'",
        ),
        ({"argv": ["true"], "files": {"/etc/x": "eA=="}}, "context file '/etc/x': is absolute"),
        (
            {"argv": ["true"], "files": {"f": "", "f/child": ""}},
            "context file 'f': is a file, but 'f/child'",
        ),
        ({"argv": ["true"], "files": {"a.py": "not base64!"}}, "content is not valid base64"),
        ({"argv": ["true"], "slot_ids": [7]}, "failed to start: unknown slot id(s) [7]"),
    ],
)
def test_an_allocation_that_cannot_start_exits_with_no_code(tmp_path, fields, expected):
    async def scenario() -> Recorder:
        recorder = Recorder()
        runner = make_runner(tmp_path / "work", recorder)
        runner.start(StartAllocation(allocation_id="a", task_id="t", **fields))
        await recorder.exit_of("a")
        return recorder

    (exited,) = asyncio.run(scenario()).of("a")
    assert exited.exit_code is None
    assert exited.reason.startswith("failed to start") and expected in exited.reason
    assert not (tmp_path / "escape.py").exists()


def _is_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie is dead, waiting for a reaper


def test_kill_terminates_the_whole_group_quickly(tmp_path):
    async def scenario() -> tuple[Recorder, float]:
        recorder = Recorder()
        runner = make_runner(tmp_path, recorder, kill_grace_period=5.0)
        runner.start(start(["sh", "-c", "sleep 100 & echo $!; wait"]))
        while not recorder.lines("alloc-1"):
            await asyncio.sleep(0.01)
        began = time.monotonic()
        assert runner.kill("alloc-1", "killed by the master: user request")
        await recorder.exit_of("alloc-1")
        return recorder, time.monotonic() - began

    recorder, took = asyncio.run(scenario())
    exited = recorder.of("alloc-1")[-1]
    assert exited.exit_code == -15
    assert exited.reason == "killed by the master: user request"
    assert took < 2.0
    grandchild = int(recorder.lines("alloc-1")[0])
    deadline = time.monotonic() + 2
    while not _is_gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _is_gone(grandchild)


def test_a_process_ignoring_sigterm_gets_sigkill_after_the_grace_period(tmp_path):
    async def scenario() -> tuple[AllocationExited, float]:
        recorder = Recorder()
        runner = make_runner(tmp_path, recorder, kill_grace_period=0.3)
        runner.start(start(["sh", "-c", "trap '' TERM; echo ready; sleep 100"]))
        while not recorder.lines("alloc-1"):
            await asyncio.sleep(0.01)
        began = time.monotonic()
        runner.kill("alloc-1", "test")
        exited = await recorder.exit_of("alloc-1")
        return exited, time.monotonic() - began

    exited, took = asyncio.run(scenario())
    assert exited.exit_code == -9
    assert 0.3 <= took < 2.0


def test_leftover_background_children_do_not_keep_the_allocation_alive(tmp_path):
    async def scenario() -> tuple[AllocationExited, float]:
        recorder = Recorder()
        runner = make_runner(tmp_path, recorder)
        began = time.monotonic()
        runner.start(start(["sh", "-c", "sleep 100 & echo bye"]))
        exited = await recorder.exit_of("alloc-1")
        assert recorder.lines("alloc-1") == ["bye"]
        return exited, time.monotonic() - began

    exited, took = asyncio.run(scenario())
    assert exited.exit_code == 0
    assert took < 1.5


def test_long_lines_are_cut_and_big_outputs_are_batched_by_1000(tmp_path):
    async def scenario() -> Recorder:
        recorder = Recorder()
        runner = make_runner(tmp_path, recorder, log_batch_interval=30.0)
        script = "head -c 100000 /dev/zero | tr '\\0' a; echo; echo next; seq 1 2500"
        runner.start(start(["sh", "-c", script]))
        await recorder.exit_of("alloc-1")
        return recorder

    recorder = asyncio.run(scenario())
    lines = recorder.lines("alloc-1")
    assert lines[0] == "a" * MAX_LINE_BYTES
    assert lines[1:] == ["next", *[str(i) for i in range(1, 2501)]]
    sizes = [len(m.entries) for m in recorder.of("alloc-1") if isinstance(m, LogBatch)]
    assert sizes == [1000, 1000, 502]


ORPHAN_SCRIPT = """
import asyncio, os, sys
from pathlib import Path
from agent.protocol import AllocationStarted, DeviceType, LogBatch, SlotInfo, StartAllocation
from agent.runner import Runner

async def main():
    pids = []
    ready = asyncio.Event()
    def emit(message):
        if isinstance(message, AllocationStarted):
            pids.append(message.pid)
        if isinstance(message, LogBatch):
            pids.append(int(message.entries[0].line))
            ready.set()
    slots = [SlotInfo(id=0, type=DeviceType.CPU)]
    runner = Runner(work_dir=Path(sys.argv[1]), agent_id="a", slots=slots, emit=emit,
                    log_batch_interval=0.02, kill_grace_period=1)
    script = "sleep 100 & echo $!; sleep 100; true"
    runner.start(StartAllocation(allocation_id="x", task_id="t", argv=["sh", "-c", script]))
    await ready.wait()
    print(*pids, flush=True)
    os._exit(0)  # the agent "crashes": no cleanup of any kind runs

asyncio.run(main())
"""


def _assert_task_dies_with_a_crashed_agent(script: str, work: Path) -> None:
    """Run ``script`` (an agent that starts a task with a grandchild, then crashes) and check
    that both of the task's processes die with it."""
    result = subprocess.run(
        [sys.executable, "-c", script, str(work)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=10,
    )
    leader, grandchild = (int(pid) for pid in result.stdout.split())
    try:
        deadline = time.monotonic() + 3
        while not (_is_gone(leader) and _is_gone(grandchild)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _is_gone(leader), f"task pid {leader} outlived its agent"
        assert _is_gone(grandchild), f"the task's child {grandchild} outlived the agent"
    finally:
        with contextlib.suppress(OSError):
            os.killpg(leader, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(grandchild, signal.SIGKILL)


def test_a_task_and_its_children_die_with_a_crashed_agent(tmp_path):
    _assert_task_dies_with_a_crashed_agent(ORPHAN_SCRIPT, tmp_path)


# ---- isolation "uid": each allocation its own uid (needs root) ------------------------------

needs_root = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="switching tasks to their own uid needs root on Linux",
)
# Task uids are held machine-wide (a flock per uid), so pytest-xdist workers running these
# tests at once each take their own pair.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
UIDS = (42000 + 10 * _WORKER, 42001 + 10 * _WORKER)


def isolated_runner(tmp_path: Path, recorder: Recorder, uids: tuple[int, int] = UIDS) -> Runner:
    work = tmp_path / "work"
    work.mkdir(mode=0o711)
    return make_runner(work, recorder, isolation="uid", uid_range=uids)


async def _wait_for_line(recorder: Recorder, allocation_id: str, count: int = 1) -> list[str]:
    deadline = time.monotonic() + 10
    while len(lines := recorder.lines(allocation_id)) < count:
        assert time.monotonic() < deadline, recorder.of(allocation_id)
        await asyncio.sleep(0.01)
    return lines


@needs_root
def test_an_isolated_task_runs_as_its_own_uid_in_its_own_0700_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("DET_AGENT_JOIN_TOKEN", "must-not-leak")
    script = (
        "id -u; id -g; id -G; echo $HOME; echo $TMPDIR; "
        'echo "join=[$DET_AGENT_JOIN_TOKEN]"; env | grep -c "^DET_AGENT_[A-Z_]*=" | grep -v 1 '
        "|| echo only-agent-id; stat -c '%u %a' . pkg pkg/model.py tmp; "
        "cat /proc/self/environ | tr '\\0' '\\n' | grep '^SECRET='; "
        "cat /proc/$PPID/environ >/dev/null 2>&1 && echo read-agent || echo agent-hidden"
    )
    files = {"pkg/model.py": base64.b64encode(b"x = 1\n").decode()}

    async def scenario() -> Recorder:
        recorder = Recorder()
        runner = isolated_runner(tmp_path, recorder)
        runner.start(start(["sh", "-c", script], env={"SECRET": "mine"}, files=files))
        assert (await recorder.exit_of("alloc-1")).exit_code == 0, recorder.of("alloc-1")
        return recorder

    lines = asyncio.run(scenario()).lines("alloc-1")
    uid = int(lines[0])
    home = tmp_path / "work" / "alloc-1"
    assert UIDS[0] <= uid <= UIDS[1]
    assert lines[1:5] == [str(uid), str(uid), str(home), str(home / "tmp")]
    assert lines[5:7] == ["join=[]", "only-agent-id"]  # DET_AGENT_ID alone, set by the agent
    assert lines[7:11] == [f"{uid} 700", f"{uid} 755", f"{uid} 644", f"{uid} 755"]
    assert lines[11:] == ["SECRET=mine", "agent-hidden"]
    # After the exit the directory's top is root's again: the uid's next holder cannot enter.
    assert (home.stat().st_uid, home.stat().st_mode & 0o777) == (0, 0o700)


@needs_root
def test_isolated_tasks_cannot_read_each_others_environment(tmp_path):
    async def scenario() -> tuple[list[str], int]:
        recorder = Recorder()
        runner = isolated_runner(tmp_path, recorder)
        runner.start(start(["sh", "-c", "echo $$; sleep 100"], "victim", env={"TOKEN": "v-1"}))
        (victim_pid,) = await _wait_for_line(recorder, "victim")
        thief = (
            f"cat /proc/{victim_pid}/environ 2>&1 | tr '\\0' '\\n' | grep -c TOKEN=v-1; "
            f"ls {tmp_path / 'work' / 'victim'} 2>&1 | grep -c 'Permission denied'; "
            "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c TOKEN=v-1"
        )
        runner.start(start(["sh", "-c", thief], "thief"))
        await recorder.exit_of("thief")
        victim_uid = runner.uids.in_use["victim"]
        runner.kill("victim", "test over")
        await recorder.exit_of("victim")
        return recorder.lines("thief"), victim_uid

    thief_lines, victim_uid = asyncio.run(scenario())
    assert thief_lines == ["0", "1", "0"]
    assert victim_uid in range(UIDS[0], UIDS[1] + 1)


@needs_root
def test_processes_left_with_the_uid_die_and_the_uid_is_reused(tmp_path):
    """A ``setsid``'d child leaves the group but not the uid: it is killed at the task's end,
    and only then is the uid handed out again."""

    async def scenario() -> tuple[list[str], list[str], AllocationExited]:
        recorder = Recorder()
        runner = isolated_runner(tmp_path, recorder, uids=(UIDS[0], UIDS[0]))
        escape = "setsid sleep 100 </dev/null >/dev/null 2>&1 & id -u"
        runner.start(start(["sh", "-c", escape], "first"))
        await recorder.exit_of("first")
        runner.start(start(["sh", "-c", "id -u; sleep 100"], "second"))
        await _wait_for_line(recorder, "second")
        runner.start(start(["true"], "third"))  # the only uid is held by "second"
        exhausted = await recorder.exit_of("third")
        runner.kill("second", "test over")
        await recorder.exit_of("second")
        return recorder.lines("first"), recorder.lines("second"), exhausted

    first, second, exhausted = asyncio.run(scenario())
    assert first == second == [str(UIDS[0])]
    assert exhausted.exit_code is None
    assert f"no free task uid in {UIDS[0]}-{UIDS[0]}" in exhausted.reason
    from agent.isolation import processes_of

    assert processes_of(UIDS[0]) == []


@needs_root
def test_an_isolated_task_and_its_children_die_with_a_crashed_agent(tmp_path):
    work = tmp_path / "work"
    work.mkdir(mode=0o711)
    script = ORPHAN_SCRIPT.replace(
        "kill_grace_period=1)", "kill_grace_period=1, isolation='uid', uid_range=(42002, 42002))"
    )
    _assert_task_dies_with_a_crashed_agent(script, work)


def test_bind_mounts_are_linked_where_the_host_path_exists_else_logged(tmp_path):
    """Determined's ``bind_mounts`` without containers: a link in the task's directory."""
    host = tmp_path / "host-data"
    host.mkdir()
    (host / "hello.txt").write_text("from the host\n")
    work = tmp_path / "work"
    mounts = [
        BindMount(host_path=str(host), container_path="/data"),
        BindMount(host_path=str(tmp_path / "missing"), container_path="other"),
        BindMount(host_path=str(host), container_path="../escape"),
    ]

    async def scenario() -> Recorder:
        recorder = Recorder()
        runner = make_runner(work, recorder)
        runner.start(start(["sh", "-c", "cat data/hello.txt; ls"], bind_mounts=mounts))
        await recorder.exit_of("alloc-1")
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.lines("alloc-1", "stdout") == ["from the host", "data"]
    assert recorder.lines("alloc-1", "stderr") == [
        f"bind_mounts: not linking {tmp_path / 'missing'} at other: host_path "
        f"{tmp_path / 'missing'} does not exist on agent agent-1",
        f"bind_mounts: not linking {host} at ../escape: container_path must name a place "
        "inside the task's directory (no '..')",
    ]
    assert not (tmp_path / "escape").exists()


def test_a_start_without_bind_mounts_is_sent_as_before() -> None:
    """Agents from before bind mounts forbid unknown fields: the field is left out unless used."""
    assert "bind_mounts" not in start(["true"]).model_dump_json()
    mounted = start(["true"], bind_mounts=[BindMount(host_path="/d", container_path="d")])
    assert '"bind_mounts":[{"host_path":"/d","container_path":"d"}]' in mounted.model_dump_json()
