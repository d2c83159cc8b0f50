"""Trace events of single messages (``--trace``): a send, a publish, a receive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from geode_mpi.message import Message
from geode_mpi.tracing import TRACER, flow_id, now_us

# -- tracing (called only when TRACER.on) ---------------------------------------------------


def trace_send(
    names: Sequence[str],
    stamp: Any,
    message: Message,
    meta: bytes,
    frames: Sequence[Any],
    begun: float,
) -> None:
    """A send slice on the source node, with an arrow towards the destination's receive."""
    message_id, seq, _, src, dst = stamp
    nbytes = len(meta) + sum(frame.nbytes for frame in frames)
    TRACER.span(
        f"send {type(message).__name__}",
        src,
        begun,
        {"id": message_id, "dest": names[dst], "seq": seq, "bytes": nbytes},
        (flow_id(message_id, dst),),
    )


def trace_publish(
    topic: str, message_id: int, source: int, subscribers: Sequence[int], begun: float, nbytes: int
) -> None:
    """A publish slice on the publisher, with an arrow towards each subscriber's receive."""
    TRACER.span(
        f"publish {topic}",
        source,
        begun,
        {"id": message_id, "subscribers": len(subscribers), "bytes": nbytes},
        tuple(flow_id(message_id, sub) for sub in subscribers),
    )


def trace_receive(index: int, message: Message, what: str, begun: float | None = None) -> None:
    """A receive (or handler) slice on node ``index``, where the message's arrow ends."""
    if message.id is None:
        return
    TRACER.span(
        what,
        index,
        now_us() if begun is None else begun,
        {"id": message.id, "source": message.source, "seq": message.seq},
        flow_in=flow_id(message.id, index),
    )
