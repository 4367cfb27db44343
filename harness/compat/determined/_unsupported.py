"""Errors for the parts of Determined's API this layer does not implement.

Determined's package is large (Keras, DeepSpeed, Horovod, the experimental SDK, …); a user
reaching for a part Flotilla lacks should learn which part, not get an ``AttributeError`` from
deep inside their script. Modules of the layer end with ``__getattr__ = missing(__name__)``, and
:class:`MissingModuleFinder` answers imports of submodules that do not exist.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NoReturn

DOCS = 'docs/core-api.md, section "Determined code unchanged"'


class UnsupportedAPIError(NotImplementedError):
    """A part of Determined's API that Flotilla's ``determined`` layer does not implement.

    A ``NotImplementedError``, not an ``AttributeError``: ``from determined import X`` turns an
    ``AttributeError`` into a bare "cannot import name", losing the explanation.
    """


def unsupported(api: str, hint: str = "") -> NoReturn:
    message = f"{api} is not implemented by Flotilla's determined layer (see {DOCS})"
    raise UnsupportedAPIError(f"{message}; {hint}" if hint else message)


def missing(module: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` raising :class:`UnsupportedAPIError` for public names."""

    def __getattr__(name: str) -> Any:
        if name.startswith("_"):  # dunders and private names: probes (hasattr) must work
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        unsupported(f"{module}.{name}")

    return __getattr__


def missing_attribute(cls: str) -> Callable[[Any, str], Any]:
    """A class ``__getattr__`` raising :class:`UnsupportedAPIError` for public names."""

    def __getattr__(self: Any, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(f"{cls!r} object has no attribute {name!r}")
        unsupported(f"{cls}.{name}")

    return __getattr__


class MissingModuleFinder(importlib.abc.MetaPathFinder):
    """Last on ``sys.meta_path``: asked only once every other finder found nothing, it turns
    ``import determined.keras`` into an error that names the missing module."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.startswith("determined."):
            message = f"{fullname} is not implemented by Flotilla's determined layer (see {DOCS})"
            raise ModuleNotFoundError(message, name=fullname)
        return None
