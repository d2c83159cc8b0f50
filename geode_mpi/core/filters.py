"""Which queued messages a receive accepts: by source node and by message type."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

from geode_mpi import codec
from geode_mpi.codec import header
from geode_mpi.codec.classes import resolve, short_name
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
        checks.append(_by_class_name(lambda wire_name: name in (wire_name, short_name(wire_name))))
    elif type_filter is not None:
        if not (isinstance(type_filter, type) and issubclass(type_filter, Message)):
            raise TypeError(f"type must be a Message subclass or a class name, got {type_filter!r}")
        wanted = type_filter
        checks.append(_by_class_name(lambda wire_name: issubclass(resolve(wire_name), wanted)))
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


def _by_class_name(test: Callable[[str], bool]) -> Match:
    """A match of parcels whose class's wire name (`codec.class_name_of`: the name bytes,
    looked up, not the whole header) passes ``test``; False where the class cannot be
    resolved here. ``test`` runs on every parcel, since what a name resolves to may change (a
    job script's class defined again)."""

    def check(parcel: Parcel) -> bool:
        wire_name = codec.class_name_of(parcel.meta)
        try:
            return test(wire_name)
        except DecodeError:  # not importable here
            return False

    return check


def unfound_classes(parcels: Iterable[Parcel], most: int = 100_000) -> Counter[str]:
    """The wire names of the classes of ``parcels`` (the first ``most``) that this rank cannot
    resolve, counted: messages no type filter matches (a class renamed or moved since they were
    sent or checkpointed)."""
    known: dict[str, bool] = {}
    unfound: Counter[str] = Counter()
    for parcel in islice(parcels, most):
        wire_name = codec.class_name_of(parcel.meta)
        found = known.get(wire_name)
        if found is None:
            try:
                resolve(wire_name)
            except DecodeError:
                found = False
            else:
                found = True
            known[wire_name] = found
        if not found:
            unfound[wire_name] += 1
    return unfound


def unfound_text(unfound: Counter[str]) -> str:
    """``3 of class 'Tok' (module '__main__')``, for each class of `unfound_classes`, and the
    way out: keep the old name importable."""
    ranked = unfound.most_common()
    classes = []
    for wire_name, count in ranked:
        module, _, qualname = wire_name.partition(":")
        classes.append(f"{count} of class {qualname!r} (module {module!r})")
    old = short_name(ranked[0][0])
    return (
        f"{', '.join(classes)}, which this rank cannot find: no type filter matches them (a "
        "class renamed or moved since they were sent or checkpointed? keep the old name "
        f"importable where it was, e.g. {old} = NewName)"
    )


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
