"""The ``geode_mpi`` logger, with `logging` imported when a record is first logged.

`logging` (with traceback and string: 0.4 MB of every rank) is there for warnings that most
jobs never get; issue 15 holds a job of Python objects within raw mpi4py's memory + 10 MB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

NAME = "geode_mpi"


class _Logger:
    """Stands for ``logging.getLogger("geode_mpi")``: each attribute read (``log.warning``,
    rare) is the real logger's, so a job's handlers and levels apply as before."""

    __slots__ = ()

    def __getattr__(self, attribute: str) -> Any:
        return getattr(load_logging().getLogger(NAME), attribute)

    def __repr__(self) -> str:
        return f"<logger {NAME!r}, logging imported on first use>"


def load_logging() -> Any:
    """Import `logging` now: before a signal handler might need it, say (an import inside a
    handler could find the module half made by the code it interrupted)."""
    import logging

    return logging


log: logging.Logger = _Logger()  # type: ignore[assignment]
