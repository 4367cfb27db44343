"""What ``det deploy aws`` and ``det deploy gcp`` share on the command line: asking, streaming
Pulumi's progress, the Pulumi CLI and passphrase checks, the workspace with this Python, flag
errors that name the flag, waiting for the new master, and the ``list`` table.

Nothing here imports Pulumi or a cloud SDK at module level (``det`` starts without them)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cli.errors import CliError

MASTER_INFO_TIMEOUT_S = 600.0
MASTER_INFO_POLL_S = 5.0
PASSPHRASE_HELP = (
    "Pulumi encrypts stack secrets (the join token, the database password) with a passphrase "
    "for self-managed state: set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE) "
    "and keep it; every later up/down of this cluster needs the same one"
)
PASSPHRASE_VARIABLES = ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE")


def require_deploy_extra(command: str, modules: Iterable[str]) -> None:
    """CliError naming the ``deploy`` extra when one of ``modules`` cannot be imported."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise CliError(
                f"{command} needs the deploy extra ({e.name} is missing): "
                "pip install 'flotilla[deploy]'"
            ) from e


def settings_error(error: Any, flag_of: Mapping[str, str]) -> CliError:
    """A pydantic ValidationError of a deployment's settings as one CliError, each line naming
    the flag (``flag_of``: field → flag) and what is wrong. A cross-field check has no location;
    when its message starts with a field's name (``"zone: …"``), that field's flag is named."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        message = str(item["msg"]).removeprefix("Value error, ")
        head, sep, rest = message.partition(": ")
        if not field and sep and head in flag_of:
            field, message = head, rest
        where = flag_of.get(field, field) or "flags"
        lines.append(f"{where}: {message}")
    return CliError("invalid deployment settings:\n  " + "\n  ".join(lines))


def warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr)


def confirm(question: str) -> bool:
    """Ask on the terminal; without one, a CliError pointing at ``--yes``."""
    if not sys.stdin.isatty():
        raise CliError(f"{question} needs an answer: run in a terminal, or pass --yes")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def stream(line: str) -> None:
    """One line of Pulumi's progress, to stderr as it comes."""
    print(line.rstrip("\n"), file=sys.stderr, flush=True)


def require_pulumi_and_passphrase(state: str | None) -> None:
    """The Pulumi CLI is on PATH (else how to install it) and, for self-managed state, a
    passphrase is set (else what to set)."""
    from infra.common.automation import DeployError, require_pulumi_cli

    try:
        require_pulumi_cli()
    except DeployError as e:
        raise CliError(e.message) from None
    self_managed = state is None or not state.startswith(("https://", "http://"))
    if self_managed and not any(v in os.environ for v in PASSPHRASE_VARIABLES):
        raise CliError(PASSPHRASE_HELP)


def pulumi_workspace(project: str, backend: str, env: Mapping[str, str]) -> Any:
    """The real Pulumi workspace. The Pulumi CLI runs our inline program here and the policy pack
    in its own process, both with this Python and with this tree importable."""
    from infra.common.automation import PulumiWorkspace

    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    full = {
        "PULUMI_PYTHON_CMD": sys.executable,
        "PYTHONPATH": path,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        **env,
    }
    return PulumiWorkspace(project, backend, full)


def wait_for_master(url: str, timeout_s: float = MASTER_INFO_TIMEOUT_S) -> bool:
    """Poll ``url``/info until it answers 200 or ``timeout_s`` passes."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/info", timeout=5.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(MASTER_INFO_POLL_S)
    return False


def no_program(cluster: str) -> Callable[[], dict[str, Any]]:
    """Destroy and list run no program; Pulumi still wants one for an inline workspace."""

    def program() -> dict[str, Any]:
        raise RuntimeError(f"the program of {cluster} is not run by destroy or list")

    return program


def print_deployments(infos: Iterable[Any]) -> None:
    """``det deploy <cloud> list``: each stack with its master URL and state."""
    from cli.render import print_table

    rows = []
    for info in infos:
        state = "deployed" if info.resource_count else "empty"
        if info.update_in_progress:
            state = "updating"
        url = info.outputs.get("master_url", "")
        rows.append([info.name, url, state, info.resource_count, info.last_update])
    print_table(["Cluster", "Master URL", "State", "Resources", "Last update"], rows)
