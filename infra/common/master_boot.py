"""The master VM's boot script, filled in the same way on AWS and GCP: a template of
``agent_image/`` (from the source tree, else from the installed package) with ``@@{name}``
placeholders for master.yaml and the database password (each a quoted heredoc), whether the
database is local, and the master's port."""

from __future__ import annotations

import string
from importlib import resources
from pathlib import Path

MASTER_YAML_MARKER = "FLOTILLA_MASTER_YAML"
DB_PASSWORD_MARKER = "FLOTILLA_DB_PASSWORD"


class _Template(string.Template):
    """``@@{name}`` placeholders, so the template stays plain bash with its own ``${…}``."""

    delimiter = "@@"


def _template_text(name: str) -> str:
    in_tree = Path(__file__).resolve().parents[2] / "agent_image" / name
    if in_tree.is_file():
        return in_tree.read_text(encoding="utf-8")
    return resources.files("agent_image").joinpath(name).read_text(encoding="utf-8")


def _heredoc_body(text: str, marker: str, what: str) -> str:
    if any(line == marker for line in text.splitlines()):
        raise ValueError(f"{what} must not contain a line that is exactly {marker!r}")
    return text.rstrip("\n")


def master_boot_script(
    template_name: str, *, master_yaml: str, db_password: str, local_db: bool, port: int
) -> str:
    """The template ``template_name`` filled in; ``ValueError`` if master.yaml or the password
    holds a line that would end its heredoc early."""
    return _Template(_template_text(template_name)).substitute(
        master_yaml=_heredoc_body(master_yaml, MASTER_YAML_MARKER, "master.yaml"),
        db_password=_heredoc_body(db_password, DB_PASSWORD_MARKER, "the db password"),
        local_db="true" if local_db else "false",
        port=str(port),
    )
