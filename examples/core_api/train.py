"""A plain PyTorch training loop made into a good Flotilla trial with the Core API.

What the Core API adds to the loop, and nothing else:

- ``core.searcher.operations()``: how long to train (``searcher.max_length``, in batches here);
- ``core.train.report_*_metrics``: loss curves in ``det trial describe`` and TensorBoard;
- ``core.checkpoint``: save and resume (the master passes the latest checkpoint to a restarted
  trial as ``core.info.latest_checkpoint``);
- ``core.preempt``: stop cleanly when the master needs the slot, and be resumed later.

The data are scikit-learn's 8x8 digits (bundled, no download); the model a small MLP.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn

import harness.core

log = logging.getLogger("train")


def load_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    split = int(len(y) * 0.8)
    return x[:split], y[:split], x[split:], y[split:]


def batch_indices(step: int, batch_size: int, n: int) -> torch.Tensor:
    """Records of batch ``step``: each epoch a permutation seeded by the epoch number, so the
    data order depends only on the step and resuming needs no more state than that."""
    per_epoch = n // batch_size
    epoch, index = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
    return order[index * batch_size : (index + 1) * batch_size]


def save(core: harness.core.Context, model: nn.Module, optimizer: Any, steps: int) -> None:
    with core.checkpoint.store_path({"steps_completed": steps}) as (path, uuid):
        torch.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "steps": steps},
            path / "state.pt",
        )
    log.info("saved checkpoint %s at step %d", uuid, steps)


def load(core: harness.core.Context, uuid: str, model: nn.Module, optimizer: Any) -> int:
    with core.checkpoint.restore_path(uuid) as path:
        state = torch.load(Path(path) / "state.pt")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    steps: int = state["steps"]
    log.info("resumed from checkpoint %s at step %d", uuid, steps)
    return steps


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with harness.core.init() as core:
        hparams = core.hparams
        torch.manual_seed(core.info.trial_id)
        x_train, y_train, x_val, y_val = load_data()
        model = nn.Sequential(
            nn.Linear(64, int(hparams["hidden_size"])),
            nn.ReLU(),
            nn.Linear(int(hparams["hidden_size"]), 10),
        )
        optimizer = torch.optim.SGD(
            model.parameters(), lr=float(hparams["learning_rate"]), momentum=0.9
        )
        batch_size = int(hparams["batch_size"])
        report_every = int(core.info.config.get("scheduling_unit") or 100)

        steps = 0
        if core.info.latest_checkpoint:
            steps = load(core, core.info.latest_checkpoint, model, optimizer)

        losses: list[float] = []
        for op in core.searcher.operations():
            # op.length is in the unit of searcher.max_length: batches in const.yaml.
            while steps < op.length:
                idx = batch_indices(steps, batch_size, len(y_train))
                loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps += 1
                losses.append(loss.item())
                if steps % report_every == 0:
                    core.train.report_training_metrics(steps, {"loss": sum(losses) / len(losses)})
                    losses.clear()
                    op.report_progress(core.searcher.progress(steps))
                if core.preempt.should_preempt():
                    save(core, model, optimizer, steps)
                    core.preempt.acknowledge()  # "resume me later", then exit 0
                    return 0

            with torch.no_grad():
                output = model(x_val)
                val_loss = nn.functional.cross_entropy(output, y_val).item()
                accuracy = (output.argmax(dim=1) == y_val).float().mean().item()
            core.train.report_validation_metrics(
                steps, {"validation_loss": val_loss, "accuracy": accuracy}
            )
            save(core, model, optimizer, steps)
            op.report_completed(val_loss)
            log.info("step %d: validation_loss %.4f accuracy %.4f", steps, val_loss, accuracy)

        if core.preempt.should_preempt():
            # Preempted while waiting for the searcher: the checkpoint at the end of the last
            # operation is where the next run starts.
            core.preempt.acknowledge()
    return 0


if __name__ == "__main__":
    sys.exit(main())
