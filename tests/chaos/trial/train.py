"""The chaos suite's trial: slow on purpose, so an outage falls in the middle of its training.

A Core API trial without a model (importing torch would cost seconds of start-up and teach the
suite nothing): each step sleeps ``step_seconds``, prints one line, reports its training
metrics; every ``checkpoint_every`` steps it saves a checkpoint holding the step. Each line it
prints names what it did, so the test can compare what the trial did with what the master stored:

    chaos step <n> run <trial run id>
    chaos checkpoint <uuid> step <n>
    chaos resumed step <n> run <trial run id>

Each line also goes to ``<journal>/<trial run id>.txt``, written before it is printed: what
the trial did, whatever became of its output on the way to the master.

Hyperparameters: ``steps`` (the whole training), ``step_seconds``, ``checkpoint_every``,
``journal`` (a directory the task may write).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import harness.core


def main() -> int:
    with harness.core.init() as core:
        hparams = core.hparams
        total, every = int(hparams["steps"]), int(hparams["checkpoint_every"])
        pause = float(hparams["step_seconds"])
        run = os.environ.get("DET_TRIAL_RUN_ID", "0")
        journal = (Path(hparams["journal"]) / f"{run}.txt").open("a")

        def say(line: str) -> None:
            journal.write(line + "\n")
            journal.flush()
            print(line, flush=True)

        step = 0
        if core.info.latest_checkpoint:
            with core.checkpoint.restore_path(core.info.latest_checkpoint) as path:
                step = int((Path(path) / "step").read_text())
            say(f"chaos resumed step {step} run {run}")
        for op in core.searcher.operations():
            while step < min(op.length, total):
                time.sleep(pause)
                step += 1
                say(f"chaos step {step} run {run}")
                core.train.report_training_metrics(step, {"loss": 1.0 / step})
                op.report_progress(core.searcher.progress(step))
                if step % every == 0:
                    with core.checkpoint.store_path({"steps_completed": step}) as (path, uuid):
                        (path / "step").write_text(str(step))
                    say(f"chaos checkpoint {uuid} step {step}")
                if core.preempt.should_preempt():
                    core.preempt.acknowledge()
                    return 0
            core.train.report_validation_metrics(step, {"validation_loss": 1.0 / step})
            op.report_completed(1.0 / step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
