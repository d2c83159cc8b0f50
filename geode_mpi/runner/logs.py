"""Logging with the rank and node in every line: ``[rank 1/4 node1]``."""

from __future__ import annotations

import logging
import sys

from geode_mpi.core.registry import first_node
from geode_mpi.transport.abort import rank_label

FORMAT = "%(asctime)s %(geode_label)s %(levelname)s %(name)s: %(message)s"
_factory_installed = False


def _install_label_factory(rank: int, size: int) -> None:
    """Give every log record a ``geode_label`` attribute (usable in any format string)."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.geode_label = rank_label(rank, size, first_node())
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def configure_logging(level: str | int | None, rank: int = 0, size: int = 1) -> None:
    """Label every log line with its rank and node.

    Args:
        level: None: only geode_mpi's own warnings go to standard error, labelled (the job's
            ``logging.basicConfig`` still works as usual). A level (``"INFO"``, ``"DEBUG"``):
            the root logger prints everything from that level on, the job's records too.
        rank / size: this rank and the number of ranks.

    Raises:
        ValueError: ``level`` is not a logging level name.
    """
    if isinstance(level, str):
        named = logging.getLevelName(level.upper())
        if not isinstance(named, int):
            raise ValueError(
                f"--log-level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}"
            )
        level = named
    _install_label_factory(rank, size)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
    if level is None:
        library = logging.getLogger("geode_mpi")
        if not library.handlers:
            library.addHandler(handler)
            library.setLevel(logging.WARNING)
            library.propagate = False
        return
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
