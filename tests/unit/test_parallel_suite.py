"""tests/parallel.py: which tests share a pytest-xdist worker, and the order work is handed out.

The scheduling test runs a real ``pytest -n 3 --dist loadgroup`` on a small suite written to
``tmp_path`` (each test appends its xdist worker to a file), so a change in xdist or pytest that
stops the grouping (as pytest 9 did to xdist's own ``xdist_group``) fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tests.parallel import defines_shared_fixture, shared_unit

ROOT = Path(__file__).resolve().parents[2]
# Three workers each starting a Python, on a loaded 2-core machine (20 s at a load of 27).
PYTEST_TIMEOUT_SECONDS = 200

RECORD = """
import os
from pathlib import Path


def record(name: str) -> None:
    with Path(os.environ["RECORD_TO"]).open("a") as out:
        out.write(f"{name} {os.environ.get('PYTEST_XDIST_WORKER', 'main')}\\n")
"""
CLUSTER = """
import pytest
from record import record


@pytest.fixture(scope="module")
def cluster():
    return "up"


def test_first(cluster):
    record("cluster-1")


def test_second():  # no fixture: still with its module, which defines one
    record("cluster-2")


def test_third(cluster):
    record("cluster-3")
"""
BROWSER_CONFTEST = """
import pytest


@pytest.fixture(scope="session")
def browser():
    return "chromium"
"""
BROWSER = """
from record import record


def test_{name}_a(browser):
    record("{name}-a")


def test_{name}_b():
    record("{name}-b")
"""
FREE = """
import time

import pytest
from record import record


@pytest.mark.parametrize("n", range(6))
def test_free(n):
    time.sleep(0.3)
    record(f"free-{n}")
"""
CHAOS = """
import pytest
from record import record


@pytest.mark.chaos
def test_outage():
    record("chaos")
"""


def write_suite(root: Path) -> None:
    files = {
        "pytest.ini": "[pytest]\nmarkers =\n    chaos: long outages\n",
        "record.py": RECORD,
        "tests/unit/test_free.py": FREE,
        "tests/unit/test_outage.py": CHAOS,
        "tests/integration/test_cluster.py": CLUSTER,
        "tests/e2e/conftest.py": BROWSER_CONFTEST,
        "tests/e2e/test_login.py": BROWSER.format(name="login"),
        "tests/e2e/test_fleet.py": BROWSER.format(name="fleet"),
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def run_pytest(root: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    record = root / "record.txt"
    record.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{root}",
        "RECORD_TO": str(record),
        "FLOTILLA_TEST_WORKERS": "3",
        # Only the plugins under test: every worker would import schemathesis & co. otherwise.
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "xdist.plugin", "-p", "tests.parallel", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=PYTEST_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result, record.read_text().splitlines()


def test_shared_fixtures_keep_their_module_or_folder_on_one_worker(tmp_path: Path) -> None:
    write_suite(tmp_path)
    result, lines = run_pytest(tmp_path, "-n", "auto", "--dist", "loadgroup")
    assert "3 workers" in result.stdout, result.stdout
    workers: dict[str, set[str]] = defaultdict(set)
    order: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        name, worker = line.split()
        workers[name.split("-")[0]].add(worker)
        order[worker].append(name)
    assert len(lines) == 14
    assert len(workers["cluster"]) == 1
    assert len(workers["login"] | workers["fleet"]) == 1  # one conftest, one worker
    cluster_worker = next(iter(workers["cluster"]))
    cluster_order = [n for n in order[cluster_worker] if n.startswith("cluster")]
    assert cluster_order == ["cluster-1", "cluster-2", "cluster-3"]
    # Serial, everything ran in the main process in the tiers' order: the chaos test, the
    # browser folder, integration, then unit tests.
    _, lines = run_pytest(tmp_path, "-n", "0")
    names = [line.split()[0] for line in lines]
    assert names[0] == "chaos"
    assert {n.split("-")[0] for n in names[1:5]} == {"login", "fleet"}
    assert names[5:8] == ["cluster-1", "cluster-2", "cluster-3"]
    assert names[8:] == [f"free-{n}" for n in range(6)]


def test_shared_fixture_scopes_are_read_from_the_source(tmp_path: Path) -> None:
    cases = {
        "module.py": ('@pytest.fixture(scope="module")\ndef f(): ...\n', True),
        "session.py": ('@fixture(scope="session")\nasync def f(): ...\n', True),
        "package.py": ('@pytest.fixture(autouse=True, scope="package")\ndef f(): ...\n', True),
        "function.py": ("@pytest.fixture\ndef f(): ...\n", False),
        "explicit.py": ('@pytest.fixture(scope="function")\ndef f(): ...\n', False),
        "broken.py": ("def (:\n", False),
    }
    for name, (text, shared) in cases.items():
        (tmp_path / name).write_text(text)
        assert defines_shared_fixture(tmp_path / name) is shared, name
    assert defines_shared_fixture(tmp_path / "missing.py") is False


def test_units_of_this_suite() -> None:
    # The browser tests share one worker (one chromium); the seed commands share a cluster and
    # run in order; the storage backends reach their emulators through getfixturevalue.
    assert shared_unit("tests/e2e/test_console.py::test_x", ROOT) == "tests/e2e"
    seeds = "tests/integration/test_seed_commands.py"
    assert shared_unit(f"{seeds}::test_log_in_create_a_user", ROOT) == seeds
    storage = "tests/unit/test_storage_backends.py"
    assert shared_unit(f"{storage}::test_round_trip[s3]", ROOT) == storage
    assert shared_unit("tests/unit/test_cost.py::test_x", ROOT) is None
