"""Random number generator states, so a resumed trial continues exactly where it stopped.

A trial's randomness comes from Python's ``random``, numpy's global generator, torch's CPU and
CUDA generators, and the ``torch.Generator`` a data loader or its sampler may own. All of them
are captured at a checkpoint and restored when resuming, so dropout masks and data order after
a restart match an uninterrupted run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

try:  # numpy is optional for the trainer, but its global generator is common in user code
    import numpy
except ImportError:  # pragma: no cover - numpy ships with every torch install we support
    numpy = None  # type: ignore[assignment]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    if numpy is not None:
        numpy.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture(generators: list[torch.Generator] | None = None) -> dict[str, Any]:
    """The state of every global generator (and of ``generators``, in order)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "generators": [g.get_state() for g in generators or []],
    }
    if numpy is not None:
        state["numpy"] = numpy.random.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any], generators: list[torch.Generator] | None = None) -> None:
    """Put back what :func:`capture` saw (``generators`` as passed to it then)."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if numpy is not None and "numpy" in state:
        numpy.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for generator, saved in zip(generators or [], state.get("generators", []), strict=False):
        generator.set_state(saved)


@contextmanager
def preserved(generators: list[torch.Generator] | None = None) -> Iterator[None]:
    """Run the block without changing any generator's state afterwards (validation must not
    shift the training run's randomness: iterating any data loader draws from torch's)."""
    saved = capture(generators)
    try:
        yield
    finally:
        restore(saved, generators)
