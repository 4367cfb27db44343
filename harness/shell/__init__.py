"""The task side of ``det shell``: an SSH server that runs in the shell's task.

The master makes a fresh Ed25519 key pair per shell (:func:`harness.shell.keys.generate_keypair`),
gives the private half to the shell's owner and the public half to the task as
``DET_SHELL_AUTHORIZED_KEYS``. The task runs ``python -m harness.shell``, which serves SSH
(commands, interactive shells with a PTY, SFTP for ``scp``/``sftp``, and ``ssh -L`` forwarding)
to whoever holds that key (:class:`harness.shell.server.ShellServer`); the master's proxy carries
the SSH bytes over a WebSocket (see ``docs/design/interactive-tasks.md``).

Nothing is imported here, so that the master can use :mod:`harness.shell.keys` without the
server's dependencies (paramiko).
"""
