"""Flotilla's ``determined``: the part of Determined's training-code API that model code written
for Determined uses, over ``harness.core`` and ``harness.pytorch`` (see ``harness.compat``).

Implemented: ``det.get_cluster_info()``, ``det.ClusterInfo``/``det.TrialInfo``, ``det.core``
(``init``, ``DistributedContext.from_torch_distributed``, the train / checkpoint / preempt /
searcher contexts), ``det.pytorch`` (``PyTorchTrial``, ``PyTorchTrialContext``,
``DataLoader``), ``det.launch.torch_distributed``, ``det.LOG_FORMAT``, ``det.InvalidHP``. Any
other name raises ``UnsupportedAPIError`` saying which API is missing.
"""

import sys

from harness.core import InvalidHP

from . import core
from ._info import ClusterInfo, TrialInfo, get_cluster_info
from ._unsupported import MissingModuleFinder, UnsupportedAPIError, missing

# Determined's format for the logging module (level first, as its log viewer expects).
LOG_FORMAT = "%(levelname)s: [%(process)s] %(name)s: %(message)s"

__version__ = "0.38.1+flotilla"

__all__ = [
    "LOG_FORMAT",
    "ClusterInfo",
    "InvalidHP",
    "TrialInfo",
    "UnsupportedAPIError",
    "core",
    "get_cluster_info",
]

if not any(isinstance(finder, MissingModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(MissingModuleFinder())

__getattr__ = missing(__name__)
