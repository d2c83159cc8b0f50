"""What a sender needs to send a message alone in its meta itself (`MPITransport.express_parts`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geode_mpi.transport.base import SendTicket

# (Isend bound to the communicator, the tag of a meta alone, the ticket of a finished send,
# the batches held per rank, envelopes sent per rank, the tracker of an unfinished Isend)
ExpressParts = tuple[
    Callable[[bytes, int, int], Any],
    int,
    SendTicket,
    dict[int, SendTicket],
    list[int],
    Callable[[int, bytes, Any], SendTicket],
]
