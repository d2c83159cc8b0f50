"""Which queued messages a receive accepts: by source node and by message type."""

from __future__ import annotations

from typing import Any

from geode_mpi import codec
from geode_mpi.codec import header
from geode_mpi.codec.runs import item_id, item_timestamp
from geode_mpi.errors import DecodeError
from geode_mpi.message import Message
from geode_mpi.queues import Key, Match, Parcel

TypeFilter = type[Message] | str | None
_TOPIC = codec.FLAG_TOPIC


def matcher(source: int | None, type_filter: TypeFilter) -> Match | None:
    """A test for parcels from node index ``source`` of type ``type_filter`` (None: any; a
    topic filter is `Channels.topic_match`'s).

    A class matches messages of that class and its subclasses; a string matches the class name
    (``"MyMessage"``) or its wire name (``"module:MyMessage"``).

    Raises:
        TypeError: ``type_filter`` is neither a Message subclass nor a string.
    """
    checks: list[Match] = []
    if source is not None:
        # A topic message's parcel comes from its stream: its publisher is in its header.
        checks.append(
            lambda parcel: (
                parcel.source == source
                or (bool(parcel.flags & _TOPIC) and header.source(parcel.meta) == source)
            )
        )
    if isinstance(type_filter, str):
        name = type_filter
        checks.append(lambda parcel: name in _type_names(parcel))
    elif type_filter is not None:
        if not (isinstance(type_filter, type) and issubclass(type_filter, Message)):
            raise TypeError(f"type must be a Message subclass or a class name, got {type_filter!r}")
        wanted = type_filter
        checks.append(lambda parcel: _is_instance_of(_class_name(parcel), wanted))
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    return lambda parcel: all(check(parcel) for check in checks)


def type_label(type_filter: TypeFilter) -> str | None:
    """The type filter as it is named in error messages."""
    if type_filter is None or isinstance(type_filter, str):
        return type_filter
    return type_filter.__name__


def _class_name(parcel: Parcel) -> str:
    return codec.peek(parcel.meta).class_name


def _type_names(parcel: Parcel) -> tuple[str, str]:
    wire_name = _class_name(parcel)
    return wire_name, codec.short_name(wire_name)


def _is_instance_of(class_name: str, wanted: type[Message]) -> bool:
    try:
        return issubclass(codec.resolve(class_name), wanted)
    except DecodeError:
        return False


ORDERS = ("arrival", "timestamp", "id")


def _by_id(parcel: Parcel) -> Any:
    return item_id(parcel.meta, parcel.frames)


def _by_timestamp(parcel: Parcel) -> Any:
    return item_timestamp(parcel.meta, parcel.frames)


def order_key(order: str | None) -> Key | None:
    """The queue key for a receive ``order``: None (arrival), "timestamp" or "id".

    Raises:
        ValueError: an unknown order.
    """
    if order is None or order == "arrival":
        return None
    if order == "timestamp":
        return _by_timestamp
    if order == "id":
        return _by_id
    raise ValueError(f"order must be one of {', '.join(ORDERS)} or None, got {order!r}")
