"""``det shell``: an SSH server on the cluster, reached with the system ``ssh``.

``det shell start`` launches the shell, waits until its SSH server is ready, then runs ssh the
way Determined's CLI does::

    ssh -o ProxyCommand="<python> -m cli.tunnel <master-url> %h" -o StrictHostKeyChecking=no
        -o UserKnownHostsFile=/dev/null -tt -o IdentitiesOnly=yes -i <key> <user>@<shell-id>

The master makes one key pair per shell and hands the private key to its owner only; it is
written 0600 to ``$FLOTILLA_HOME/shells/<id>/key`` (ssh refuses keys others can read) and kept,
so the command printed by ``det shell show-ssh-command`` goes on working, e.g. from an IDE.
The host key is not checked: every shell has a fresh one and the tunnel already goes to the
master the user chose; the shell's key is what authenticates.

The master URL in the ProxyCommand is the one this ``det`` talks to, as the user gave it, so the
printed command works wherever ``det`` itself does.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from cli import service
from cli.errors import CliError
from cli.parser import add_group, add_verb
from cli.session import Session, flotilla_home, setup_session
from harness.task_config import ServiceConfig

if TYPE_CHECKING:
    from cli.parser import SubParsers

SHELL = service.Kind(noun="shell", plural="shells", title="Shell", model=ServiceConfig)
SSH_MISSING = (
    "ssh is not installed; det shell needs OpenSSH's client "
    "(Debian/Ubuntu: apt-get install openssh-client; Fedora/RHEL: dnf install openssh-clients)"
)
DEFAULT_SSH_USER = "root"


def key_path(shell_id: str) -> pathlib.Path:
    return flotilla_home() / "shells" / shell_id / "key"


def write_key(shell_id: str, private_key: str) -> pathlib.Path:
    """Write the shell's private key where ssh will accept it (mode 0600, dir 0700)."""
    path = key_path(shell_id)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        # OpenSSH refuses a key file whose last line is unterminated.
        f.write(private_key if private_key.endswith("\n") else private_key + "\n")
    return path


def proxy_command(master: str) -> str:
    """The ProxyCommand: this interpreter running the tunnel; ssh fills in ``%h``."""
    return f"{shlex.quote(sys.executable)} -m cli.tunnel {shlex.quote(master)} %h"


def ssh_command(
    master: str, shell: dict[str, Any], key: pathlib.Path, extra: list[str]
) -> list[str]:
    """ssh's argv for ``shell``, with ``extra`` (ssh options or a remote command) at the end."""
    user = (shell.get("agentUserGroup") or {}).get("user") or DEFAULT_SSH_USER
    return [
        "ssh",
        "-o",
        f"ProxyCommand={proxy_command(master)}",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-tt",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
        str(key),
        f"{user}@{shell['id']}",
        *extra,
    ]


def ssh_args(raw: list[str]) -> list[str]:
    """What follows ``--``: argparse keeps the ``--`` in some positions, drop it."""
    return raw[1:] if raw[:1] == ["--"] else raw


def require_ssh() -> None:
    if shutil.which("ssh") is None:
        raise CliError(SSH_MISSING)


def prepare(sess: Session, shell_id: str, extra: list[str]) -> list[str]:
    """Fetch the shell, write its key, and return the ssh command that reaches it."""
    shell = service.fetch(sess, SHELL, shell_id)
    private_key = shell.get("privateKey")
    if not private_key:
        owner = shell.get("username") or "its owner"
        raise CliError(
            f"the master gave no private key for shell {shell_id}: only its owner ({owner}) "
            "can connect to it"
        )
    path = write_key(shell_id, private_key)
    return ssh_command(sess.client.master, shell, path, extra)


def connect(sess: Session, shell_id: str, extra: list[str], *, show: bool) -> int:
    """Wait until the shell is ready, run ssh to it, and return ssh's exit code."""
    service.wait_until_ready(sess, SHELL, shell_id)
    command = prepare(sess, shell_id, extra)
    if show:
        print(shlex.join(command))
        sys.stdout.flush()
    code = subprocess.run(command, check=False).returncode
    print(f"To reconnect, run: det shell open {shell_id}", file=sys.stderr)
    return code if code >= 0 else 128 - code


def start_shell(args: argparse.Namespace) -> int:
    body = service.launch_body(SHELL, args)
    if not args.detach:
        require_ssh()  # before launching: a shell nobody can reach would only hold slots
    sess = setup_session(args)
    shell_id = service.launch(sess, SHELL, body, detach=args.detach)
    if args.detach:
        return 0
    return connect(sess, shell_id, ssh_args(args.ssh_opts), show=args.show_ssh_command)


def open_shell(args: argparse.Namespace) -> int:
    require_ssh()
    sess = setup_session(args)
    shell_id = service.expand_id(sess, SHELL, args.shell_id)
    return connect(sess, shell_id, ssh_args(args.ssh_opts), show=False)


def show_ssh_command(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    shell_id = service.expand_id(sess, SHELL, args.shell_id)
    print(shlex.join(prepare(sess, shell_id, ssh_args(args.ssh_opts))))


def register(nouns: SubParsers) -> None:
    noun, verbs = add_group(nouns, "shell", "manage shells")
    service.register_common(verbs, noun, SHELL)

    p = add_verb(verbs, "start", start_shell, "start a new shell")
    service.add_start_args(p, SHELL)
    p.add_argument(
        "--show-ssh-command", action="store_true", help="print the ssh command before running it"
    )
    p.add_argument(
        "ssh_opts", nargs=argparse.REMAINDER, help="after --: ssh options or a remote command"
    )

    p = add_verb(verbs, "open", open_shell, "open an existing shell")
    p.add_argument("shell_id", help="shell ID")
    p.add_argument(
        "ssh_opts", nargs=argparse.REMAINDER, help="after --: ssh options or a remote command"
    )

    p = add_verb(
        verbs, "show-ssh-command show_ssh_command", show_ssh_command, "print the ssh command"
    )
    p.add_argument("shell_id", help="shell ID")
    p.add_argument(
        "ssh_opts", nargs=argparse.REMAINDER, help="after --: ssh options or a remote command"
    )
