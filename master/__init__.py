"""The Flotilla master: REST API, database, scheduler and agent connections."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flotilla")
except PackageNotFoundError:  # running from a checkout that was not installed
    __version__ = "0.1.0"
