"""The one exception type a CLI handler raises to stop with a message instead of a traceback."""

from __future__ import annotations


class CliError(Exception):
    """Stop the command: ``message`` goes to stderr as one line, the process exits ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message
