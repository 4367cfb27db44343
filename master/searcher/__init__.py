"""Hyperparameter searchers: pure state machines the master feeds trial events.

The contract is ``docs/design/experiments.md`` ("Searcher interface"); the methods and what a
snapshot holds are in ``docs/design/searchers.md``.
"""

from master.searcher.asha import BracketPlan, plan_brackets
from master.searcher.hparams import grid_points, sample_hparams
from master.searcher.operations import Close, Create, Operation, Shutdown, ValidateAfter
from master.searcher.searcher import Searcher

__all__ = [
    "BracketPlan",
    "Close",
    "Create",
    "Operation",
    "Searcher",
    "Shutdown",
    "ValidateAfter",
    "grid_points",
    "plan_brackets",
    "sample_hparams",
]
