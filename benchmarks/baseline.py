"""The raw mpi4py baseline's shared pieces: what a hand-written message carries, the arrays.

A geode_mpi Message is compared with the obvious mpi4py code: a dict with the same fields,
pickled by lowercase ``send``/``isend``/``bcast``, built afresh for each send as geode_mpi
builds its Message.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def message_fields(seq: int, source: str, dest: str, data: Any) -> dict[str, Any]:
    """A raw message: the same fields a geode_mpi Message carries."""
    return {
        "id": seq,
        "source": source,
        "dest": dest,
        "type": "Message",
        "seq": seq,
        "timestamp": time.time(),
        "headers": {},
        "data": data,
    }


def arrays(size: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The ``uint8`` array to send (random, the same for every run of a size) and a zeroed
    receive buffer of its size for the raw methods (zeroed, so that a raw receive that wrote
    nothing fails the check)."""
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    return data, np.zeros(size, np.uint8)
