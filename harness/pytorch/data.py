"""Data loaders as the trainer uses them: sharded across workers, resumable mid-epoch.

Users build an ordinary ``torch.utils.data.DataLoader``. With several workers the trainer
rebuilds it around a ``DistributedSampler`` (each worker sees its own share of every epoch, and
the global batch is split across them), keeping the dataset, collate function, worker count and
shuffling the user chose.

:class:`EpochIterator` walks a loader epoch after epoch and can be put back to "epoch ``e``,
``k`` batches in" by replaying the epoch's start (the random state then) and skipping ``k``
batches, which reproduces the same order for any sampler that draws from the generators
``harness.pytorch.rng`` captures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler

from harness.pytorch import rng

log = logging.getLogger("harness.pytorch")


def shard_loader(
    loader: DataLoader[Any],
    *,
    rank: int,
    size: int,
    batch_size: int,
    seed: int,
    shuffle: bool | None = None,
) -> DataLoader[Any]:
    """``loader`` for worker ``rank`` of ``size``: a ``DistributedSampler`` and ``batch_size``
    records per batch on each worker. ``shuffle`` defaults to whether ``loader`` shuffles."""
    if isinstance(loader.dataset, IterableDataset):
        raise ValueError(
            "cannot split an IterableDataset across workers: shard it yourself by "
            "context.distributed.rank and return a loader of this worker's share"
        )
    if loader.batch_size is None:
        raise ValueError(
            "cannot split a DataLoader built with a batch_sampler across workers: give it a "
            "batch_size (the trainer sets each worker's to context.get_per_slot_batch_size())"
        )
    if shuffle is None:
        shuffle = isinstance(loader.sampler, RandomSampler)
    sampler: DistributedSampler[Any] = DistributedSampler(
        loader.dataset,
        num_replicas=size,
        rank=rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=loader.drop_last,
    )
    return DataLoader(
        loader.dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,
        persistent_workers=loader.persistent_workers,
    )


def loader_generators(loader: DataLoader[Any]) -> list[torch.Generator]:
    """The generators a loader and its sampler own, which decide its order and seeds."""
    found: list[torch.Generator] = []
    for owner in (loader, loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


def loader_length(loader: DataLoader[Any]) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def batch_length(batch: Any) -> int:
    """How many records ``batch`` holds (its first tensor's first dimension; 1 if unknown),
    to weight validation averages by."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, Mapping):
        return batch_length(next(iter(batch.values()))) if batch else 1
    if isinstance(batch, Sequence) and not isinstance(batch, str | bytes):
        return batch_length(batch[0]) if batch else 1
    return 1


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors in ``obj`` (nested in lists, tuples and dicts) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=device.type == "cuda")
    if isinstance(obj, Mapping):
        return type(obj)({k: to_device(v, device) for k, v in obj.items()})  # type: ignore[call-arg]
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(to_device(v, device) for v in obj))
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


class EpochIterator:
    """Batches of ``loader``, epoch after epoch, with the position kept as
    (:attr:`epoch_idx`, :attr:`batch_in_epoch`)."""

    def __init__(self, loader: DataLoader[Any]) -> None:
        self.loader = loader
        self.epoch_idx = 0
        self.batch_in_epoch = 0  # batches taken from the current epoch
        self._iterator: Any = None
        self._epoch_start_rng: dict[str, Any] | None = None
        self.generators = loader_generators(loader)

    def next(self) -> Any:
        if self._iterator is None:
            self._start_epoch()
        try:
            batch = next(self._iterator)
        except StopIteration:
            if self.batch_in_epoch == 0:
                raise RuntimeError("the training data loader is empty") from None
            self.epoch_idx += 1
            self.batch_in_epoch = 0
            self._start_epoch()
            try:
                batch = next(self._iterator)
            except StopIteration:
                raise RuntimeError("the training data loader is empty") from None
        self.batch_in_epoch += 1
        return batch

    def _start_epoch(self) -> None:
        sampler = self.loader.sampler
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(self.epoch_idx)
        self._epoch_start_rng = rng.capture(self.generators)
        self._iterator = iter(self.loader)

    def state(self) -> dict[str, Any]:
        """This worker's position and random state, for a checkpoint."""
        return {
            "epoch_idx": self.epoch_idx,
            "batch_in_epoch": self.batch_in_epoch,
            "epoch_start_rng": self._epoch_start_rng,
            "rng": rng.capture(self.generators),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Back to where :meth:`state` was taken: replay the epoch's start, skip the batches
        already trained on, then put back the random state of that moment."""
        self.epoch_idx = int(state["epoch_idx"])
        self.batch_in_epoch = 0
        self._iterator = None
        start = state.get("epoch_start_rng")
        if start is not None:
            rng.restore(start, self.generators)
            self._start_epoch()
            skip = int(state["batch_in_epoch"])
            for _ in range(skip):
                try:
                    next(self._iterator)
                except StopIteration:
                    raise RuntimeError(
                        f"cannot resume: the training data has fewer than {skip} batches per "
                        "epoch now, but the checkpoint was taken after that many"
                    ) from None
            self.batch_in_epoch = skip
            if skip:
                log.info("resumed epoch %d at batch %d", self.epoch_idx, skip)
        rng.restore(state["rng"], self.generators)
