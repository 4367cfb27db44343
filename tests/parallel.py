"""How the suite runs in parallel (pytest-xdist: ``-n auto --dist loadgroup``, as scripts/test
runs it): how many workers, which tests must share a worker, and in which order work is handed
out.

xdist hands out *units* of tests, one at a time, to whichever worker is idle, in the order the
collection first names them; a unit runs on one worker, in collection order. With
``--dist loadgroup`` a test is a unit of its own unless it shares one with others. (xdist 3.8
groups tests by rewriting their ``item._nodeid``, which pytest 9 no longer reads, so its
``xdist_group`` mark has no effect here; :class:`SharedFixtureScheduling` decides the units
from the node ids instead.) So:

- **Shared fixtures keep their tests together.** A test module that defines a module-, package-
  or session-scoped fixture (a cluster brought up once per module, a built console, an
  emulator) is one unit, and so is a folder whose conftest.py defines one (tests/e2e/: the
  browser tests, so two chromiums never run at once). Otherwise every worker that got one of
  those tests would build the fixture again, and modules whose tests run in order against one
  cluster (the seed commands: experiment 1 before ``det trial logs 1``) would break. Whether a
  module defines one is read from its source, so a fixture reached only through
  ``request.getfixturevalue`` counts too. The top conftest's fixtures (none is shared yet) would
  be per worker by design, like pytest's own ``tmp_path_factory``.
- **Long work goes first.** A worker that picks up a 3-minute chaos test last makes the whole
  run 3 minutes longer while the others idle. Tests are reordered (a stable sort: a module keeps
  its order) by tier: ``chaos``-marked tests and tests/chaos/, then the browser tests, then
  integration, then unit tests, whose many short units fill the gaps at the end.
- **Workers**: ``-n auto`` starts :data:`WORKERS_PER_CPU` per CPU this process may use (most
  tests wait on subprocesses, sockets and sleeps, not the CPU; docs/development.md has the
  measurements); ``FLOTILLA_TEST_WORKERS`` (or xdist's ``PYTEST_XDIST_AUTO_NUM_WORKERS``) sets
  the number instead.

Without ``-n`` (or with ``-n 0``) only the reordering applies.
"""

from __future__ import annotations

import ast
import functools
import os
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

TOP = "tests"  # tests/conftest.py's folder: its fixtures do not group
SHARED_SCOPES = frozenset({"module", "package", "session"})
WORKERS_PER_CPU = 2
# Tiers, lowest first: a tier's tests are handed out before the next tier's.
TIER_CHAOS = 0
TIER_BY_FOLDER = (("tests/chaos/", TIER_CHAOS), ("tests/e2e/", 1), ("tests/integration/", 2))
TIER_OTHER = 3


def _fixture_scope(decorator: ast.expr) -> str | None:
    """``scope=`` of a ``@pytest.fixture(...)`` / ``@fixture(...)`` decorator, else None."""
    if not isinstance(decorator, ast.Call):
        return None
    called = decorator.func
    name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", None)
    if name != "fixture":
        return None
    for keyword in decorator.keywords:
        if keyword.arg == "scope" and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    return None


@functools.cache
def defines_shared_fixture(path: Path) -> bool:
    """Whether the Python file at ``path`` defines a module-, package- or session-scoped
    fixture (missing or unparsable files define none)."""
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return False
    return any(
        _fixture_scope(decorator) in SHARED_SCOPES
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for decorator in node.decorator_list
    )


def shared_unit(nodeid: str, root: Path) -> str | None:
    """The unit the test ``nodeid`` (relative to ``root``, the rootdir) must share, or None:
    the widest folder (below tests/) whose conftest.py defines a shared fixture, else its
    module if that defines one."""
    module = nodeid.split("::", 1)[0]
    parts = module.split("/")
    for depth in range(2, len(parts)):  # tests/<folder>/..., never the top conftest
        folder = "/".join(parts[:depth])
        if folder != TOP and defines_shared_fixture(root / folder / "conftest.py"):
            return folder
    return module if defines_shared_fixture(root / module) else None


class SharedFixtureScheduling(LoadScopeScheduling):
    """``--dist loadgroup`` here: a test is a unit of its own unless :func:`shared_unit` names
    the unit it shares. Units are handed out in collection order (``--loadscope-reorder``,
    which puts the largest units first, is ignored: the order is the tiers')."""

    def _split_scope(self, nodeid: str) -> str:
        return shared_unit(nodeid, self.config.rootpath) or nodeid


# optionalhook: with -p no:xdist there is no such hook to check it against.
@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    if config.getoption("dist") != "loadgroup":
        return None
    config.option.loadscopereorder = False
    return SharedFixtureScheduling(config, log)  # type: ignore[arg-type]


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    configured = os.environ.get("FLOTILLA_TEST_WORKERS") or os.environ.get(
        "PYTEST_XDIST_AUTO_NUM_WORKERS"
    )
    if configured:
        return int(configured)
    return WORKERS_PER_CPU * len(os.sched_getaffinity(0))


def tier(item: pytest.Item) -> int:
    if item.get_closest_marker("chaos") is not None:
        return TIER_CHAOS
    path = item.nodeid
    return next((rank for folder, rank in TIER_BY_FOLDER if path.startswith(folder)), TIER_OTHER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=tier)
