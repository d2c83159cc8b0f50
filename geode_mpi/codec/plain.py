"""A received plain Message built the fast way: its attributes set one by one.

On CPython 3.11+ an instance keeps its attributes inline until its ``__dict__`` is asked for;
setting them one by one is about 0.2 us a message cheaper than assigning a ``__dict__``
(benchmarks/README.md, "Round 33: the round trip"). The result is the same: a `Message`
whose ``__dict__`` holds data, id, seq, timestamp, source, dest (and reply_to on a reply).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from geode_mpi.message import Message

_new_message = object.__new__
Names = Sequence[str]


def plain_message(
    data: Any, mid: int, seq: int, ts: float, src: int, dst: int, reply_to: int, names: Names
) -> Message:
    """A received `Message` of ``data`` with the metadata its sender stamped (a node index
    this job does not have is kept as its number, as text)."""
    count = len(names)
    message: Message = _new_message(Message)
    message.data = data
    message.id = mid
    message.seq = seq
    message.timestamp = ts
    message.source = names[src] if src < count else str(src)
    message.dest = names[dst] if dst < count else str(dst)
    if reply_to >= 0:  # (not NO_REPLY, nor a request's REQUEST)
        message.reply_to = reply_to
    return message
