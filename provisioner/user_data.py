"""The user-data that boots an agent on a cloud instance, rendered from
``agent_image/user-data.sh.tmpl``.

How user-data really behaves, and what that means here:

- EC2 caps user-data at 16 KB before base64 encoding; a larger one fails RunInstances with
  InvalidParameterValue. GCE takes the same script as the ``startup-script`` metadata value
  (up to 256 KB per value), run by its guest agent as root on every boot. We check the
  rendered size against the cloud's limit here, where the message can name ``startup_script``.
- Each cloud names its instances its own way: the script asks EC2's metadata service
  (IMDSv2) for the instance id, or GCE's metadata server for the instance name; the lookup is
  a snippet of ``agent_image/`` per cloud (``instance-id-<cloud>.sh``).
- Anything on the instance can read its user-data from the metadata service, so the join token
  in it is as secret as the instance is. The script writes the agent's config readable by root
  only; a task that can reach the metadata service can still read it (see docs/agent-image.md).
- cloud-init runs the script once, as root, late in the first boot; output lands in
  ``/var/log/cloud-init-output.log``.

Every value is placed in a quoted heredoc (``<<'MARKER'``), so the shell expands nothing in it,
and the agent config is plain YAML between two marker lines, so
:func:`agent_config_from_user_data` can read back exactly what the agent will read.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

# "User data is limited to 16 KB, in raw form, before it is base64-encoded." (EC2 User Guide)
USER_DATA_MAX_BYTES = 16 * 1024
# GCE metadata: "The maximum size of a single metadata value is 256 KB."
GCE_METADATA_VALUE_MAX_BYTES = 256 * 1024
Cloud = Literal["aws", "gcp"]
_MAX_BYTES: dict[str, tuple[int, str]] = {
    "aws": (USER_DATA_MAX_BYTES, "EC2's user-data limit"),
    "gcp": (GCE_METADATA_VALUE_MAX_BYTES, "GCE's metadata value limit"),
}

TEMPLATE_NAME = "user-data.sh.tmpl"
AGENT_CONFIG_PATH = "/etc/flotilla/agent.yaml"
# What the agent runs when it gives up on the master: with InstanceInitiatedShutdownBehavior
# =terminate, a stranded instance terminates itself instead of billing forever.
CONNECTION_LOST_HOOK = "shutdown -h now"

AGENT_YAML_MARKER = "FLOTILLA_AGENT_YAML"
AGENT_ENV_MARKER = "FLOTILLA_AGENT_ENV"
STARTUP_SCRIPT_MARKER = "FLOTILLA_STARTUP_SCRIPT"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_AGENT_YAML_BLOCK = re.compile(
    rf"<<'{AGENT_YAML_MARKER}'\n(?P<body>.*?)^{AGENT_YAML_MARKER}$", re.DOTALL | re.MULTILINE
)


class _Template(string.Template):
    """``@@{name}`` placeholders, so the template stays plain bash with its own ``${…}``."""

    delimiter = "@@"


def _template_text(name: str = TEMPLATE_NAME) -> str:
    """A file of ``agent_image/`` from the source tree, else from the installed package."""
    in_tree = Path(__file__).resolve().parent.parent / "agent_image" / name
    if in_tree.is_file():
        return in_tree.read_text(encoding="utf-8")
    return resources.files("agent_image").joinpath(name).read_text(encoding="utf-8")


def _heredoc_body(text: str, marker: str, what: str) -> str:
    if any(line == marker for line in text.splitlines()):
        raise ValueError(f"{what} must not contain a line that is exactly {marker!r}")
    return text.rstrip("\n")


def _systemd_quote(value: str) -> str:
    """A value for ``Environment="NAME=value"``: systemd honours C escapes inside double quotes
    and expands ``%`` specifiers even there (``$`` means nothing in Environment=)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return escaped.replace("\n", "\\n")


def _check_env(extra_env: Mapping[str, str]) -> None:
    for name, value in extra_env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"environment variable name {name!r} is not a valid shell name")
        if "\n" in value or "\x00" in value:
            raise ValueError(f"environment variable {name}: value must be one line")


def render_user_data(
    master_url: str,
    pool: str,
    join_token: str,
    startup_script: str = "",
    extra_env: Mapping[str, str] | None = None,
    slots: int | None = None,
    cloud: Cloud = "aws",
    logging: Mapping[str, Any] | None = None,
) -> str:
    """The boot script for an instance of ``pool``: its agent joins ``master_url`` with
    ``join_token`` under the instance id, after ``startup_script`` ran with ``extra_env``
    (which the agent and its tasks also get). ``slots`` is how many CPU slots the agent offers
    when the instance has no GPU (GPUs, when present, are found by the agent). ``cloud`` picks
    how the script learns the instance's id. ``logging`` is the agent config's ``logging``
    section (the master passes its own, so agents ship to the same CloudWatch group). Raises
    ``ValueError`` for a value the script cannot carry or a result over the cloud's limit."""
    env = dict(extra_env or {})
    _check_env(env)
    config: dict[str, Any] = {
        "master_url": master_url,
        "join_token": join_token,
        "resource_pool": pool,
        "connection_lost_hook": CONNECTION_LOST_HOOK,
    }
    if slots is not None:
        config["slots"] = slots
    if logging is not None:
        config["logging"] = dict(logging)
    agent_yaml = yaml.safe_dump(config, sort_keys=False, width=1_000_000).rstrip("\n")
    systemd_environment = "\n".join(
        f'Environment="{name}={_systemd_quote(value)}"' for name, value in env.items()
    )
    shell_exports = "\n".join(
        f"  export {name}={shlex.quote(value)}" for name, value in env.items()
    )
    rendered = _Template(_template_text()).substitute(
        instance_id_lookup=_template_text(f"instance-id-{cloud}.sh").rstrip("\n"),
        agent_yaml=_heredoc_body(agent_yaml, AGENT_YAML_MARKER, "the agent config"),
        systemd_environment=_heredoc_body(systemd_environment, AGENT_ENV_MARKER, "extra_env"),
        startup_script=_heredoc_body(
            startup_script or "true", STARTUP_SCRIPT_MARKER, "startup_script"
        ),
        shell_exports=shell_exports or "  :",
    )
    size = len(rendered.encode("utf-8"))
    limit, what = _MAX_BYTES[cloud]
    if size > limit:
        raise ValueError(
            f"user-data is {size} bytes, over {what} of {limit} bytes; "
            "shorten provider.startup_script (or have it download a longer script)"
        )
    return rendered


def agent_config_from_user_data(user_data: str, instance_id: str) -> dict[str, Any]:
    """The agent config that ``user_data`` writes to ``/etc/flotilla/agent.yaml`` on the
    instance ``instance_id`` (for tests, and for harnesses that boot a local agent per fake
    instance). Raises ``ValueError`` if ``user_data`` was not rendered by this module."""
    match = _AGENT_YAML_BLOCK.search(user_data)
    if match is None:
        raise ValueError(f"no agent config block ({AGENT_YAML_MARKER}) in this user-data")
    config = yaml.safe_load(match.group("body"))
    if not isinstance(config, dict):
        raise ValueError("the agent config block in this user-data is not a YAML mapping")
    config["agent_id"] = instance_id
    return config
