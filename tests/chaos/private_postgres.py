"""A PostgreSQL server of the test's own, to stop and start under a running master.

The shared server on 5432 is never restarted (other people use it). This one is initialised
into the test's temporary directory and listens on a free loopback port, its socket in its own
directory. PostgreSQL refuses to run as root, so as root its programs run as the ``postgres``
OS user (``runuser``), which then owns the data directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from tests.integration.cluster import free_port

PG_USER = "postgres"
START_TIMEOUT_SECONDS = 60


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.socket_dir = root / "pgsocket"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://{PG_USER}@127.0.0.1:{self.port}/flotilla"

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []
        binary = shutil.which(argv[0]) or argv[0]
        subprocess.run([*prefix, binary, *argv[1:]], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        for directory in (self.data, self.socket_dir):
            directory.mkdir(mode=0o700)
        self.log.touch()
        if os.geteuid() == 0:
            user = pwd.getpwnam(PG_USER)
            for path in (self.data, self.socket_dir, self.log):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, "flotilla")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.socket_dir}"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", str(START_TIMEOUT_SECONDS), "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``fast``: every session is ended at once (what a restart does to the master)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
