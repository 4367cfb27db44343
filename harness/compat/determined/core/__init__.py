"""``det.core``: Determined's Core API over ``harness.core`` (see ``determined`` package doc)."""

from harness.core import EarlyExitReason

from .._unsupported import missing
from ._context import (
    CheckpointContext,
    Context,
    DownloadMode,
    PreemptContext,
    PreemptMode,
    TensorboardMode,
    TrainContext,
    init,
)
from ._distributed import DistributedContext, DummyDistributedContext
from ._searcher import SearcherContext, SearcherMode, SearcherOperation, Unit

__all__ = [
    "CheckpointContext",
    "Context",
    "DistributedContext",
    "DownloadMode",
    "DummyDistributedContext",
    "EarlyExitReason",
    "PreemptContext",
    "PreemptMode",
    "SearcherContext",
    "SearcherMode",
    "SearcherOperation",
    "TensorboardMode",
    "TrainContext",
    "Unit",
    "init",
]

__getattr__ = missing(__name__)
