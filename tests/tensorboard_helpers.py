"""Write TensorBoard event files the way a trial does, and read them back through TensorBoard.

Shared by the TensorBoard program's unit test (straight to the server) and the master proxy's
integration test (through ``/proxy/<task-id>/``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx


def write_scalars(directory: str | Path, tag: str, values: Sequence[float]) -> None:
    """Write ``values`` as scalar ``tag`` at steps 0, 1, … into an event file in ``directory``."""
    from torch.utils.tensorboard import SummaryWriter  # slow import; only tests that write pay

    writer = SummaryWriter(log_dir=str(directory))
    try:
        for step, value in enumerate(values):
            writer.add_scalar(tag, value, step)
    finally:
        writer.close()


def fetch_tags(base_url: str, headers: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """Scalar tags per run, from TensorBoard at ``base_url`` (its prefix, ending in ``/``)."""
    response = httpx.get(
        f"{base_url}data/plugin/scalars/tags", headers=dict(headers or {}), trust_env=False
    )
    response.raise_for_status()
    return {run: sorted(tags) for run, tags in response.json().items()}


def fetch_scalars(
    base_url: str, run: str, tag: str, headers: Mapping[str, str] | None = None
) -> list[float]:
    """The values of scalar ``tag`` in ``run``, in step order, from TensorBoard at ``base_url``."""
    response = httpx.get(
        f"{base_url}data/plugin/scalars/scalars",
        params={"run": run, "tag": tag},
        headers=dict(headers or {}),
        trust_env=False,
    )
    response.raise_for_status()
    # Each point is [wall_time, step, value].
    return [float(value) for _, _, value in sorted(response.json(), key=lambda p: p[1])]


def wait_for_scalars(
    base_url: str,
    run: str,
    tag: str,
    count: int,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> list[float]:
    """``fetch_scalars`` once TensorBoard has loaded ``count`` points (it loads in the
    background, so a TensorBoard that just became ready may not have read the files yet)."""
    deadline = time.monotonic() + timeout
    while True:
        if run in fetch_tags(base_url, headers):
            values = fetch_scalars(base_url, run, tag, headers)
            if len(values) >= count:
                return values
        if time.monotonic() >= deadline:
            raise TimeoutError(f"TensorBoard did not show {count} points of {run}/{tag}")
        time.sleep(0.5)
