"""A module imported when its name is first used, not when the module naming it is imported.

A job that sends only Python objects never needs numpy (14-15 MB a rank), so the modules that
use numpy name it through `on_first_use`:

    if TYPE_CHECKING:
        import numpy as np
    else:
        np = on_first_use("numpy", globals(), "np")

Unlike importlib's ``LazyLoader`` this puts nothing in ``sys.modules`` before the real import,
so ``sys.modules.get("numpy")`` still tells whether anyone imported numpy (which is how the
codec tells an ndarray without importing it: `geode_mpi.codec.arrays.is_ndarray`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any


class _StandIn:
    """Stands for module ``name`` in ``namespace`` under ``alias`` until an attribute of it is
    first read: then imports it and puts it in its own place, so that later reads are plain
    global lookups (no cost left on any path)."""

    __slots__ = ("_alias", "_name", "_namespace", "_then")

    def __init__(
        self,
        name: str,
        namespace: dict[str, Any],
        alias: str,
        then: Callable[[ModuleType], None] | None,
    ) -> None:
        self._name = name
        self._namespace = namespace
        self._alias = alias
        self._then = then

    def __getattr__(self, attribute: str) -> Any:
        module = importlib.import_module(self._name)
        if self._then is not None:
            self._then(module)
        self._namespace[self._alias] = module
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


def on_first_use(
    name: str,
    namespace: dict[str, Any],
    alias: str,
    then: Callable[[ModuleType], None] | None = None,
) -> Any:
    """A stand-in for module ``name``, bound in ``namespace`` (a module's ``globals()``) as
    ``alias``, that imports the module when one of its attributes is first read, and then
    calls ``then(module)`` (to set what the namespace derives from it) before any code of that
    namespace uses it."""
    return _StandIn(name, namespace, alias, then)
