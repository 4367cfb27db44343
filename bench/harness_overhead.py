"""What the PyTorch trainer (``harness.pytorch``) costs over a plain PyTorch loop, on the digits
example (``examples/digits_pytorch``: DigitsTrial's model, data, optimizer and batch size).

    .venv/bin/python -m bench.harness_overhead [--batches 600] [--rounds 9] [--threads 1]

Two ways of training the same ``--batches`` batches, in this process, seeded alike:

- *plain*: a hand-written loop (DataLoader, forward, loss, backward, step, zero_grad), then one
  pass over the validation data and a ``torch.save`` of the model and optimizer;
- *harness*: ``harness.core.init()`` and ``Trainer(DigitsTrial).run()`` against the test suite's
  fake trial master (``tests/fake_trial_master.py``) served on loopback from this process: one
  searcher operation of ``--batches`` batches, ``scheduling_unit`` 10 as in ``const.yaml``,
  TensorBoard files (the master always sets ``DET_TENSORBOARD_DIR``), and validation and a
  checkpoint only at the end of the operation.

Two numbers each: *training only* (the batches: the plain loop; the trainer's ``_train_until``,
i.e. with its per-batch bookkeeping and, every ``scheduling_unit`` batches, a training metrics
report, TensorBoard scalars and at most once a second a progress report; the reports are queued
and sent by ``harness.core``'s background thread, whose work counts in so far as it slows the
training thread) and *whole run* (also building the trial,
validating and checkpointing; for the harness also ``init`` and ``close``). Runs alternate plain,
harness, plain, harness…; the first pair is a discarded warm-up; medians count. Both runs end
with bit-identical weights (checked), so they did the same work. Target: the harness adds at
most 3 %.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

import harness.core
from harness.launch import load_trial_class
from harness.pytorch import Outcome, Trainer
from tests.fake_trial_master import (
    experiment_config,
    running_fake_trial_master,
    trial_environ,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits_pytorch"
TARGET_OVERHEAD = 0.03
SEED = 1234

# The parts of the harness's training time measured separately (seconds, summed over the run).
REPORTS = "reports"  # Trainer._flush_training + _report_progress inside _train_until
METRICS_REPORT = "metrics report"  # core.train.report_training_metrics (queues the POST)
PROGRESS_REPORT = "progress report"  # core.train.report_progress (queues the POST)
TENSORBOARD = "TensorBoard"  # MetricWriter.write (add_scalar)
PARTS = (REPORTS, METRICS_REPORT, PROGRESS_REPORT, TENSORBOARD)


@dataclass(frozen=True)
class Timing:
    """One run: seconds on the batches alone, on the whole run, and (harness only) on parts of
    the training time (:data:`PARTS`)."""

    training: float
    whole: float
    parts: dict[str, float] = field(default_factory=dict)


def overhead(plain: float, harness: float) -> float:
    """The harness's extra time as a fraction of the plain loop's (0.03 is 3 %)."""
    return (harness - plain) / plain


def summarize(timings: list[Timing]) -> Timing:
    """Medians of each column."""
    names = {name for t in timings for name in t.parts}
    return Timing(
        training=statistics.median(t.training for t in timings),
        whole=statistics.median(t.whole for t in timings),
        parts={n: statistics.median(t.parts.get(n, 0.0) for t in timings) for n in sorted(names)},
    )


def paired_overheads(
    plain: list[Timing], harness: list[Timing], column: Callable[[Timing], float]
) -> list[float]:
    """The overhead of each (plain, harness) pair run back to back, for ``column``."""
    return [overhead(column(a), column(b)) for a, b in zip(plain, harness, strict=True)]


def example_config() -> dict[str, Any]:
    """``const.yaml`` of the example."""
    config: dict[str, Any] = yaml.safe_load((EXAMPLE / "const.yaml").read_text())
    return config


# ---- (a) plain PyTorch -----------------------------------------------------------------------


def run_plain(
    model_def: Any, hparams: dict[str, Any], batches: int, workdir: Path
) -> tuple[Timing, dict[str, torch.Tensor]]:
    """The loop a user would write without the harness; returns timings and final weights."""
    start = time.perf_counter()
    torch.manual_seed(SEED)
    train_data, val_data = model_def.load_digits_datasets()
    model: nn.Module = model_def.build_model(hparams)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=hparams["learning_rate"])
    batch_size = int(hparams["global_batch_size"])
    train_loader = DataLoader(train_data, batch_size=batch_size, shuffle=True)
    val_loader = DataLoader(val_data, batch_size=batch_size)
    model.train()

    training_start = time.perf_counter()
    done = 0
    while done < batches:
        for images, labels in train_loader:
            loss = nn.functional.nll_loss(model(images), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            done += 1
            if done == batches:
                break
    training = time.perf_counter() - training_start

    model.eval()
    with torch.no_grad():
        for images, labels in val_loader:
            output = model(images)
            nn.functional.nll_loss(output, labels)
            (output.argmax(dim=1) == labels).float().mean()
    model.train()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, workdir / "p.pt")
    whole = time.perf_counter() - start
    return Timing(training, whole), model.state_dict()


# ---- (b) the harness ---------------------------------------------------------------------------


class _TimedTrainer(Trainer):
    """The trainer, timing ``_train_until`` (the batches) and, within it, its reports."""

    training_seconds = 0.0
    _training = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parts = dict.fromkeys(PARTS, 0.0)
        self._time_method(self.core.train, "report_training_metrics", METRICS_REPORT)
        self._time_method(self.core.train, "report_progress", PROGRESS_REPORT)
        self._time_method(self.writer, "write", TENSORBOARD)

    def _time_method(self, owner: object, name: str, part: str) -> None:
        """Replace ``owner.name`` (on the instance) by a wrapper adding its time to ``part``."""
        method = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                if self._training:
                    self.parts[part] += time.perf_counter() - start

        setattr(owner, name, timed)

    def _train_until(self, target: int) -> bool:
        start = time.perf_counter()
        self._training = True
        try:
            return super()._train_until(target)
        finally:
            self._training = False
            self.training_seconds += time.perf_counter() - start

    def _flush_training(self) -> None:
        start = time.perf_counter()
        super()._flush_training()
        if self._training:
            self.parts[REPORTS] += time.perf_counter() - start

    def _report_progress(self, target: int, *, now: bool = False) -> None:
        start = time.perf_counter()
        super()._report_progress(target, now=now)
        if self._training:
            self.parts[REPORTS] += time.perf_counter() - start


def run_harness(
    trial_class: Any,
    hparams: dict[str, Any],
    batches: int,
    workdir: Path,
    *,
    scheduling_unit: int,
) -> tuple[Timing, dict[str, torch.Tensor]]:
    """``DigitsTrial`` through ``harness.pytorch`` against the loopback fake master."""
    example = example_config()
    config = experiment_config(
        entrypoint=example["entrypoint"],
        hyperparameters=hparams,
        searcher={
            "name": "single",
            "metric": example["searcher"]["metric"],
            "max_length": {"batches": batches},
        },
        scheduling_unit=scheduling_unit,
    )
    with running_fake_trial_master([batches]) as master:
        env = trial_environ(
            master,
            config=config,
            hparams=hparams,
            storage_dir=workdir / "checkpoints",
            DET_TENSORBOARD_DIR=str(workdir / "tensorboard"),
        )
        start = time.perf_counter()
        with harness.core.init(environ=env) as core:
            trainer = _TimedTrainer(trial_class, core, seed=SEED)
            outcome = trainer.run()
        whole = time.perf_counter() - start
        if outcome is not Outcome.COMPLETED or len(master.checkpoints()) != 1:
            raise RuntimeError(f"the trial did not complete as expected: {outcome}")
    timing = Timing(trainer.training_seconds, whole, trainer.parts)
    return timing, trainer.context.models[0].model.state_dict()


# ---- main --------------------------------------------------------------------------------------


def _ms(seconds: float, per: int) -> str:
    return f"{seconds / per * 1e3:.3f} ms"


def main() -> None:
    example = example_config()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=600, help="batches per run")
    parser.add_argument("--rounds", type=int, default=9, help="measured (plain, harness) pairs")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--scheduling-unit",
        type=int,
        default=int(example["scheduling_unit"]),
        help="batches between training metric reports (default: const.yaml's)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    hparams: dict[str, Any] = example["hyperparameters"]
    module, _, class_name = example["entrypoint"].partition(":")
    trial_class = load_trial_class(module, class_name, str(EXAMPLE))
    model_def = sys.modules[module]

    plain: list[Timing] = []
    harness_runs: list[Timing] = []
    for round_ in range(args.rounds + 1):  # round 0 warms up
        with tempfile.TemporaryDirectory() as tmp:
            a, weights_a = run_plain(model_def, hparams, args.batches, Path(tmp))
            b, weights_b = run_harness(
                trial_class,
                hparams,
                args.batches,
                Path(tmp),
                scheduling_unit=args.scheduling_unit,
            )
        if not all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a):
            raise RuntimeError("plain and harness runs ended with different weights")
        label = "warm-up" if round_ == 0 else f"round {round_}"
        print(
            f"{label:<8} training: plain {a.training:.3f} s, harness {b.training:.3f} s "
            f"({overhead(a.training, b.training):+.1%})   whole run: plain {a.whole:.3f} s, "
            f"harness {b.whole:.3f} s ({overhead(a.whole, b.whole):+.1%})",
            flush=True,
        )
        if round_:
            plain.append(a)
            harness_runs.append(b)

    a, b = summarize(plain), summarize(harness_runs)
    n, reports = args.batches, max(1, args.batches // args.scheduling_unit)
    print(
        f"\nmedians of {args.rounds} rounds: {n} batches of {hparams['global_batch_size']}, "
        f"scheduling_unit {args.scheduling_unit}, torch threads {args.threads}, "
        f"torch {torch.__version__}"
    )
    for name, column in (("training only", _training), ("whole run", _whole)):
        paired = statistics.median(paired_overheads(plain, harness_runs, column))
        print(
            f"{name:<14} plain {_ms(column(a), n)}/batch, harness {_ms(column(b), n)}/batch: "
            f"overhead {overhead(column(a), column(b)):+.2%} (median of pairs {paired:+.2%})"
        )
    print(
        f"reports while training: {_ms(b.parts[REPORTS], n)}/batch, "
        f"{_ms(b.parts[REPORTS], reports)} per report ({reports} reports): "
        + ", ".join(f"{p} {_ms(b.parts[p], reports)}" for p in PARTS[1:])
    )
    print(
        f"outside training: plain {a.whole - a.training:.3f} s, harness "
        f"{b.whole - b.training:.3f} s (setup, validation, checkpoint)"
    )
    worst = max(overhead(a.training, b.training), overhead(a.whole, b.whole))
    verdict = "met" if worst <= TARGET_OVERHEAD else "MISSED"
    print(f"target (overhead <= {TARGET_OVERHEAD:.0%}): {verdict}")


def _training(timing: Timing) -> float:
    return timing.training


def _whole(timing: Timing) -> float:
    return timing.whole


if __name__ == "__main__":
    main()
