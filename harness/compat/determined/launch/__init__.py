"""``python3 -m determined.launch.torch_distributed``: Determined's launcher, for entrypoints."""

from .._unsupported import missing

__getattr__ = missing(__name__)
