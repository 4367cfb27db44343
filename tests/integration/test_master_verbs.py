"""``det master config`` and ``det master logs`` against a real master: ours and Determined's
CLI read the same routes."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.cluster import Agent, Master, running_cluster
from tests.integration.test_cli import Cli


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=1)


def test_master_config_and_logs(cluster: tuple[Master, list[Agent]], tmp_path: Path) -> None:
    master, _ = cluster
    det = Cli(tmp_path / "home", master.url)
    det.ok("user", "login", "admin", env={"DET_PASS": ""})

    config = yaml.safe_load(det.ok("master", "config"))
    assert config["port"] == int(master.url.rsplit(":", 1)[1])
    assert config["agent_join_token"] == "********"
    assert json.loads(det.ok("master", "config", "--json"))["port"] == config["port"]

    lines = det.ok("master", "logs", "--tail", "50").splitlines()
    assert any("[INFO]: master.app: master" in line and " up at " in line for line in lines)
    assert len(det.ok("master", "logs", "--tail", "2").splitlines()) == 2

    det.ok("user", "create", "carol", "--password", "Passw0rdCarol")
    carol = Cli(tmp_path / "carol", master.url)
    carol.ok("user", "login", "carol", env={"DET_PASS": "Passw0rdCarol"})
    denied = carol("master", "config")
    assert denied.returncode == 1 and "Forbidden" in denied.stderr

    venv = os.environ.get("FLOTILLA_DETERMINED_VENV")
    if venv:
        home = tmp_path / "det-home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DET_")}
        env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "xdg"))

        def determined(*args: str, stdin: str = "") -> str:
            result = subprocess.run(
                [str(Path(venv) / "bin" / "det"), "-m", master.url, *args],
                input=stdin,
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            assert result.returncode == 0, result.stderr
            return result.stdout

        determined("user", "login", "admin", stdin="\n")
        assert yaml.safe_load(determined("master", "config"))["agent_join_token"] == "********"
        assert "master.app: master" in determined("master", "logs", "--tail", "100")


def test_a_stop_does_not_wait_for_streams_that_never_end(
    cluster: tuple[Master, list[Agent]],
) -> None:
    """A follow stream left open (here the master's own log) must not hold SIGTERM forever:
    uvicorn's graceful shutdown is bounded (10 s), then the stream is cut."""
    import threading
    import time

    import httpx

    from tests.integration.cluster import Api

    master, _ = cluster
    api = Api(master)
    opened = threading.Event()

    def follow() -> None:
        headers = {"Authorization": f"Bearer {api.token}"}
        try:
            with httpx.stream(
                "GET",
                f"{master.url}/api/v1/master/logs",
                params={"follow": "true"},
                headers=headers,
                timeout=None,
            ) as response:
                opened.set()
                for _ in response.iter_lines():
                    pass
        except httpx.HTTPError:
            pass  # cut by the stop: what the test wants

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert opened.wait(15), "the follow stream did not open"
    started = time.monotonic()
    master.stop(timeout=40)
    assert master.proc is not None and master.proc.returncode is not None
    assert time.monotonic() - started < 30
