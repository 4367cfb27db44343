"""Reading a ``--config-file`` (or an experiment's config file): YAML in UTF-8, named when not.

A binary file, a file in another encoding or broken YAML each end as one line that names the
file and says what was wrong, never as a bare ``UnicodeDecodeError``.
"""

from __future__ import annotations

from typing import Any, TextIO

import yaml

from cli.errors import CliError


def read_yaml(config_file: TextIO) -> tuple[str, Any]:
    """The file's text and its YAML value (None for an empty file); closes the file."""
    name = getattr(config_file, "name", "config")
    try:
        with config_file as f:
            text = f.read()
    except UnicodeDecodeError as e:
        byte = e.object[e.start] if isinstance(e.object, bytes | bytearray) else None
        what = f"byte 0x{byte:02x} at offset {e.start}" if byte is not None else e.reason
        raise CliError(
            f"{name}: not a UTF-8 text file ({what}); a config file must be YAML text in UTF-8"
        ) from None
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CliError(f"{name}: not valid YAML: {e}".replace("\n", " ")) from None
