"""The Core API: what a training script uses to be a good trial (docs/core-api.md).

.. code:: python

    import harness.core

    with harness.core.init() as core:
        for op in core.searcher.operations():
            ...  # train to op.length, report metrics, save checkpoints
            op.report_completed(validation_loss)
            if core.preempt.should_preempt():
                ...  # save a checkpoint, core.preempt.acknowledge(), exit 0
"""

from harness.core.checkpoint import CheckpointContext
from harness.core.context import Context, TrialInfo, init
from harness.core.distributed import DistributedContext
from harness.core.env import NotInTrialError, TrialEnv
from harness.core.metrics import InvalidMetricError
from harness.core.preempt import PreemptContext
from harness.core.searcher import SearcherContext, SearcherOperation
from harness.core.train import EarlyExitReason, InvalidHP, TrainContext

__all__ = [
    "CheckpointContext",
    "Context",
    "DistributedContext",
    "EarlyExitReason",
    "InvalidHP",
    "InvalidMetricError",
    "NotInTrialError",
    "PreemptContext",
    "SearcherContext",
    "SearcherOperation",
    "TrainContext",
    "TrialEnv",
    "TrialInfo",
    "init",
]
