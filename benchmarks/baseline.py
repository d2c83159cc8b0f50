"""The raw mpi4py baseline's shared pieces: what a hand-written message carries.

A geode_mpi Message is compared with the obvious mpi4py code: a dict with the same fields,
pickled by lowercase ``send``/``isend``/``bcast``, built afresh for each send as geode_mpi
builds its Message.
"""

from __future__ import annotations

import time
from typing import Any


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
