"""A Core API trial whose checkpoint is big: the trial ``bench.spot_notice`` sends a spot notice to.

``bench.spot_notice`` packs this file alone into the experiment's context as ``train.py``, so it
imports nothing from ``bench``. What it stands for: a model whose state is
``hyperparameters.checkpoint_mb`` MiB (random bytes, made once at start, so nothing compresses
them and making them is not part of the checkpoint time). A "batch" is a fixed
``hyperparameters.batch_seconds`` of sleep: the benchmark is about storing and restoring the
state, not about training. Like any well-behaved trial it checks ``core.preempt`` every batch;
when asked, it writes the whole state into ``core.checkpoint.store_path`` (one file; the storage
uploads it on leaving the ``with``), acknowledges and exits. A restarted trial reads the whole
file back and checks its size before training on.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import harness.core

log = logging.getLogger("train")

CHUNK = 64 * 1024 * 1024  # bytes per write/read, so no second copy of the state is made
STATE_FILE = "state.bin"


def make_state(size: int) -> bytearray:
    state = bytearray(size)
    for start in range(0, size, CHUNK):
        end = min(start + CHUNK, size)
        state[start:end] = os.urandom(end - start)
    return state


def save(core: harness.core.Context, state: bytearray, steps: int) -> None:
    began = time.monotonic()
    with core.checkpoint.store_path({"steps_completed": steps}) as (path, uuid):
        view = memoryview(state)
        with open(path / STATE_FILE, "wb") as out:
            for start in range(0, len(state), CHUNK):
                out.write(view[start : start + CHUNK])
        written = time.monotonic() - began
    log.info(
        "checkpoint %s at step %d: %d MiB written in %.1f s, stored in %.1f s",
        uuid,
        steps,
        len(state) >> 20,
        written,
        time.monotonic() - began,
    )


def load(core: harness.core.Context, uuid: str, size: int) -> tuple[bytearray, int]:
    began = time.monotonic()
    with core.checkpoint.restore_path(uuid) as path:
        state = bytearray(size)
        with open(Path(path) / STATE_FILE, "rb") as source:
            read = source.readinto(state)
            if read != size or source.read(1):
                raise RuntimeError(f"checkpoint {uuid}: {STATE_FILE} is not {size} bytes")
    metadata = core.checkpoint.get_metadata(uuid)
    steps = int(metadata["steps_completed"])
    log.info("restored %s (%d MiB) in %.1f s", uuid, size >> 20, time.monotonic() - began)
    return state, steps


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with harness.core.init() as core:
        size = int(core.hparams["checkpoint_mb"]) * 1024 * 1024
        batch_seconds = float(core.hparams["batch_seconds"])
        report_every = int(core.info.config.get("scheduling_unit") or 100)
        if core.info.latest_checkpoint:
            state, steps = load(core, core.info.latest_checkpoint, size)
        else:
            state, steps = make_state(size), 0
        for op in core.searcher.operations():
            while steps < op.length:
                time.sleep(batch_seconds)
                steps += 1
                if steps % report_every == 0:
                    core.train.report_training_metrics(steps, {"loss": 1.0 / steps})
                    op.report_progress(core.searcher.progress(steps))
                if core.preempt.should_preempt():
                    save(core, state, steps)
                    core.preempt.acknowledge()
                    return 0
            core.train.report_validation_metrics(steps, {"loss": 1.0 / steps})
            save(core, state, steps)
            op.report_completed(1.0 / steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
