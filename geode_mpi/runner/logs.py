"""Logging with the rank and node in every line: ``[rank 1/4 node1]``."""

from __future__ import annotations

import logging
import sys

from geode_mpi.base.failure import rank_label
from geode_mpi.core.registry import first_node

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


def level_number(level: str | int) -> int:
    """A logging level from its name (``"INFO"``) or number.

    Raises:
        ValueError: not a level name.
    """
    if isinstance(level, int):
        return level
    named = logging.getLevelName(level.upper())
    if not isinstance(named, int):
        raise ValueError(
            f"--log-level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}"
        )
    return named


def configure_logging(level: str | int | None, rank: int = 0, size: int = 1) -> None:
    """Label every log line with its rank and node.

    Args:
        level: None: records that no handler takes (geode_mpi's warnings, when the job set
            up no logging) are printed labelled; a job's own ``logging.basicConfig`` works as
            usual and receives geode_mpi's records. A level (``"INFO"``, ``"DEBUG"``): the
            root logger prints everything from that level on, the job's records too.
        rank / size: this rank and the number of ranks.

    Raises:
        ValueError: ``level`` is not a logging level name.
    """
    number = None if level is None else level_number(level)
    _install_label_factory(rank, size)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
    if number is None:
        handler.setLevel(logging.WARNING)
        logging.lastResort = handler  # used only while no handler is configured anywhere
        return
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(number)
