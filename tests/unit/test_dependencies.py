"""pyproject.toml declares what the code imports, where it is imported, and nothing unused.

Each package runs somewhere with a set of extras installed (the master with ``master``, an agent
and the tasks on it with ``agent`` and ``train``, ``det`` with ``cli``): every third-party module
its files import at run time must come from the base dependencies or those extras — a module
that only arrives as some other package's dependency (Starlette under FastAPI) can change or
vanish with that package's next release. Imports guarded by ``except ImportError`` are optional
and need only be declared in some extra. Conversely, every runtime dependency is imported
somewhere, or listed in RUNTIME_ONLY with what uses it. constraints.txt pins everything the
``dev`` extra installs, at versions pyproject.toml allows.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "flotilla"

# Where each tree runs, as the extras installed there (the base dependencies always are).
WHERE = {
    "master": ("master",),
    "provisioner": ("master",),  # the provisioning loop runs inside the master
    "agent": ("agent",),
    "agent_image": ("agent",),
    "harness": ("agent", "train"),  # task code, on an agent host
    "cli": ("cli",),
    "examples": ("agent", "train"),  # trial code, run by the harness
    "bench": ("dev",),
    "infra": ("deploy",),  # `det deploy aws|gcp`: the programs, their dry run and policy pack
}
# Extras that name what a machine runs, as opposed to the tools of development.
RUNTIME_EXTRAS = ("master", "agent", "cli", "aws", "gcs", "train", "notebook")
# Import names whose distribution is named otherwise (the longest dotted prefix wins).
DISTRIBUTIONS = {
    "yaml": "pyyaml",
    "google.auth": "google-auth",
    "google.oauth2": "google-auth",
    "google.api_core": "google-api-core",
    "google.cloud.storage": "google-cloud-storage",
    "google.cloud.compute_v1": "google-cloud-compute",
    "argon2": "argon2-cffi",
    "pydantic_core": "pydantic-core",
    "psycopg2": "psycopg2-binary",
    "sklearn": "scikit-learn",
    "jupyter_server": "jupyter-server",
}
# Runtime dependencies no file imports, and what uses them.
RUNTIME_ONLY = {
    "psycopg2-binary": "SQLAlchemy's PostgreSQL driver, loaded from the database URL",
    "jupyter-server": "run as `python -m jupyter_server` by harness/notebook.py",
    "jupyterlab": "the notebook's UI, a jupyter_server extension",
    "ipykernel": "the notebook's Python kernel, started by jupyter_server",
    "tensorboard": "run as `python -m tensorboard.main`; torch.utils.tensorboard writes for it",
}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, set[str]]:
    """{extra (``""`` for the base dependencies): the distributions it installs, with the
    extras it includes (``flotilla[a,b]``) expanded}."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    raw: dict[str, list[str]] = {"": project["dependencies"], **project["optional-dependencies"]}

    def expand(extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
        names: set[str] = set()
        for text in raw[extra]:
            requirement = Requirement(text)
            if normalized(requirement.name) == PROJECT:
                assert not requirement.extras & seen, f"extra {extra} includes itself"
                for included in requirement.extras:
                    names |= expand(included, seen | {extra})
            else:
                names.add(normalized(requirement.name))
        return names

    return {extra: expand(extra) for extra in raw}


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        texts += extra
    return [r for r in map(Requirement, texts) if normalized(r.name) != PROJECT]


def pins() -> dict[str, str]:
    """constraints.txt as {distribution: version}; every line is ``name==version``."""
    pinned = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version.strip(), f"constraints.txt line {number} is not name==version"
        pinned[normalized(name.strip())] = version.strip()
    return pinned


@dataclass(frozen=True)
class Import:
    file: Path
    module: str
    optional: bool  # inside `try: … except ImportError`

    @property
    def distribution(self) -> str:
        parts = self.module.split(".")
        for length in range(len(parts), 0, -1):
            prefix = ".".join(parts[:length])
            if prefix in DISTRIBUTIONS:
                return DISTRIBUTIONS[prefix]
        return normalized(parts[0])


def _catches_import_error(node: ast.Try) -> bool:
    names = {"ImportError", "ModuleNotFoundError"}
    for handler in node.handlers:
        caught = handler.type
        elements = caught.elts if isinstance(caught, ast.Tuple) else [caught]
        if any(isinstance(e, ast.Name) and e.id in names for e in elements):
            return True
    return False


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, optional: bool) -> Iterator[tuple[str, bool]]:
    """Absolute imports executed at run time (``if TYPE_CHECKING:`` blocks are not)."""
    if isinstance(node, ast.If) and _is_type_checking(node):
        yield from (pair for child in node.orelse for pair in _imports(child, optional))
        return
    if isinstance(node, ast.Import):
        yield from ((alias.name, optional) for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        yield node.module, optional
    if isinstance(node, ast.Try) and _catches_import_error(node):
        for statement in node.body:
            yield from _imports(statement, True)
        rest: list[ast.stmt] = [*node.orelse, *node.finalbody]
        for handler in node.handlers:
            rest += handler.body
        for statement in rest:
            yield from _imports(statement, optional)
        return
    for child in ast.iter_child_nodes(node):
        yield from _imports(child, optional)


def _python_files(tree: str) -> list[Path]:
    return sorted(p for p in (ROOT / tree).rglob("*.py") if "node_modules" not in p.parts)


def first_party() -> set[str]:
    """The repository's packages and tests (the benchmarks reuse the test cluster), and any
    package inside them (a shim such as ``determined`` put on a task's import path)."""
    files = [p for tree in WHERE for p in _python_files(tree)]
    return set(WHERE) | {"tests"} | {p.parent.name for p in files if p.name == "__init__.py"}


def third_party_imports(tree: str) -> list[Import]:
    """The third-party imports of every Python file under ``tree``: neither first-party nor a
    file's sibling module (a script importing its neighbour)."""
    ours = first_party()
    found = []
    for file in _python_files(tree):
        siblings = {p.stem for p in file.parent.glob("*.py")}
        for module, optional in _imports(ast.parse(file.read_text(), str(file)), False):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__" or top in ours | siblings:
                continue
            found.append(Import(file.relative_to(ROOT), module, optional))
    return found


def test_every_import_is_declared_where_its_code_runs() -> None:
    extras = declared()
    anywhere = set().union(*extras.values())
    problems = []
    for tree, installed in WHERE.items():
        available = extras[""].union(*(extras[e] for e in installed))
        reported = set()
        for found in third_party_imports(tree):
            if found.distribution in (anywhere if found.optional else available):
                continue
            if (found.file, found.distribution) in reported:
                continue
            reported.add((found.file, found.distribution))
            where = (
                "any extra (the import is optional)"
                if found.optional
                else "the dependencies or the extras " + ", ".join(installed)
            )
            problems.append(
                f"{found.file} imports {found.module} (distribution {found.distribution}), "
                f"which pyproject.toml does not declare in {where}; declare it, or add its "
                f"distribution's name to DISTRIBUTIONS here if it differs from the module's"
            )
    assert not problems, "\n".join(problems)


def test_every_runtime_dependency_is_used() -> None:
    extras = declared()
    runtime = extras[""].union(*(extras.get(e, set()) for e in RUNTIME_EXTRAS))
    imported = {found.distribution for tree in WHERE for found in third_party_imports(tree)}
    unused = sorted(runtime - imported - set(RUNTIME_ONLY))
    assert not unused, (
        f"pyproject.toml's runtime dependencies {unused} are imported nowhere: drop them, or "
        f"list them in RUNTIME_ONLY with what uses them"
    )
    stale = sorted(set(RUNTIME_ONLY) - runtime)
    assert not stale, f"RUNTIME_ONLY lists {stale}, which pyproject.toml no longer declares"


def test_the_checker_sees_optional_lazy_and_type_only_imports() -> None:
    source = """
import os, yaml
from google.auth import default
def later():
    import torch.nn
try:
    import brotli
except (ImportError, OSError):
    brotli = None
if TYPE_CHECKING:
    import paramiko
"""
    found = [(m, o) for m, o in _imports(ast.parse(source), False)]
    assert found == [
        ("os", False),
        ("yaml", False),
        ("google.auth", False),
        ("torch.nn", False),
        ("brotli", True),
    ]
    assert Import(Path("x.py"), "google.auth.transport", False).distribution == "google-auth"
    assert Import(Path("x.py"), "yaml", False).distribution == "pyyaml"
    assert Import(Path("x.py"), "Fast_API.routing", False).distribution == "fast-api"


def test_constraints_pin_every_dev_dependency_within_pyprojects_bounds() -> None:
    pinned = pins()
    missing = sorted(declared()["dev"] - set(pinned))
    assert not missing, (
        f"constraints.txt does not pin {missing}: install them and run scripts/freeze-constraints"
    )
    outside = sorted(
        {
            f"{r.name}=={pinned[normalized(r.name)]} (pyproject.toml asks {r})"
            for r in requirements()
            if normalized(r.name) in pinned
            and not r.specifier.contains(Version(pinned[normalized(r.name)]), prereleases=True)
        }
    )
    assert not outside, (
        f"constraints.txt pins versions pyproject.toml refuses: {outside}; "
        f"install the new bounds and run scripts/freeze-constraints"
    )
