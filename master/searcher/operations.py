"""What a searcher asks of the master: the four operations of the searcher contract.

Frozen dataclasses so an operation can be compared, hashed and logged as-is; the master turns
them into trial rows, searcher operations for the harness, and experiment state changes
(``docs/design/experiments.md``, "Searcher interface").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Create:
    """Start a new trial with these hyperparameters (flat values, groups as nested dicts).

    ``request_id`` names the trial in every later event; it is unique within one experiment."""

    request_id: str
    hparams: dict[str, Any]


@dataclass(frozen=True)
class ValidateAfter:
    """Train the trial until ``length`` (cumulative, in the searcher's length unit), then
    validate and report the searcher metric."""

    request_id: str
    length: int


@dataclass(frozen=True)
class Close:
    """Stop this trial cleanly: it gets no more work and keeps its checkpoints."""

    request_id: str


@dataclass(frozen=True)
class Shutdown:
    """The search is over: no more operations follow. ``failure``: every trial errored."""

    failure: bool = False


Operation = Create | ValidateAfter | Close | Shutdown
