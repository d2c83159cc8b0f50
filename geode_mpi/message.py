"""The Message: user data plus the metadata geode_mpi fills in when it is sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

# Attributes that geode_mpi owns; everything else in a subclass's __dict__ travels as user state.
RESERVED = frozenset(
    {
        "data",
        "_headers",
        "id",
        "source",
        "dest",
        "seq",
        "timestamp",
        "reply_to",
        "topic",
        "work_queue",
        "_receipt",
        "_answered",
    }
)
ANSWERED = "_answered"  # set on a request its node's handler answered: it has its one reply


def data_alone(state: dict[str, Any]) -> bool:
    """Whether a message whose ``__dict__`` is ``state`` carries its data and nothing else:
    besides ``data``, only metadata that never travels (`RESERVED`: a message received or sent
    before, sent on as it is), and no headers."""
    return "data" in state and state.keys() <= RESERVED and not state.get("_headers")


class Receipt(Protocol):
    """What a received message calls to report how its processing went (the delivery layer)."""

    def ack(self) -> None: ...

    def nack(self, error: BaseException | None) -> None: ...


class Message:
    """A message: ``data`` of any picklable type (numpy arrays above all) plus metadata.

    Subclass it for your own message types; a subclass is received as that subclass, with the
    attributes it set in ``__init__`` restored (``__init__`` is not called again on receipt;
    the attributes are set directly, past a ``__setattr__`` of its own: a frozen dataclass
    works). A class's own ``__getstate__`` and ``__setstate__`` are honoured as pickle
    honours them (docs/point-to-point.md).

    Metadata is ``None`` until the message has been sent, and is set on the received copy:

    - ``id``: a job-unique integer (sender node index in the high bits, a counter below)
    - ``source`` / ``dest``: node names
    - ``type``: the class name, e.g. ``"MyMessage"``
    - ``seq``: the sequence number for this (source, dest) pair, starting at 0
    - ``timestamp``: the sender's clock (``time.time()``) when it was sent
    - ``headers``: a dict of user headers (small picklable values)
    - ``reply_to``: on a reply, the ``id`` of the message it answers
    - ``topic``: on a message published on a topic, the topic's name (None otherwise)
    - ``work_queue``: on a work queue's task, the queue's name (None otherwise)
    - ``priority``: the priority it was sent with (0 by default; higher is taken first)
    - ``ttl``: the time to live it was sent with, in seconds (None: no limit)

    Args:
        data: the payload.
        headers: optional user headers, copied into a new dict.
    """

    # Class-level defaults, so a subclass that forgets super().__init__() still works.
    data: Any = None
    id: int | None = None
    source: str | None = None
    dest: str | None = None
    seq: int | None = None
    timestamp: float | None = None
    reply_to: int | None = None
    topic: str | None = None
    work_queue: str | None = None
    priority: int = 0
    ttl: float | None = None
    _receipt: Receipt | None = None

    def __init__(self, data: Any = None, *, headers: Mapping[str, Any] | None = None) -> None:
        self.data = data
        if headers:
            self.headers = headers  # (the setter checks it is a mapping, and copies it)

    @property
    def headers(self) -> dict[str, Any]:
        """User headers; a fresh empty dict when none were given."""
        found = self.__dict__.get("_headers")
        if found is None:
            found = {}
            self.__dict__["_headers"] = found
        return found

    @headers.setter
    def headers(self, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(f"headers must be a mapping (a dict), got {value!r}")
        self.__dict__["_headers"] = dict(value)

    def ack(self) -> None:
        """Report this received message processed (on a node whose queue uses explicit acks).

        Until then it counts as unprocessed: its sender keeps it, and a checkpoint saves it.
        On a queue with automatic acks (the default) receiving it was the ack, and this does
        nothing; so does a second call.
        """
        receipt = self.__dict__.pop("_receipt", None)
        if receipt is not None:
            receipt.ack()

    def nack(self, error: BaseException | None = None) -> None:
        """Report that processing this received message failed: it is delivered again.

        It comes back (before later messages from the same source) after a back-off, until
        the queue's ``max_attempts``; then it goes to the dead letters with ``error``.
        Only on a node whose queue uses explicit acks; elsewhere it does nothing.
        """
        receipt = self.__dict__.pop("_receipt", None)
        if receipt is not None:
            receipt.nack(error)

    @property
    def type(self) -> str:
        """The message's class name."""
        return type(self).__name__

    def __repr__(self) -> str:
        data = repr(self.data)
        if len(data) > 60:
            data = data[:57] + "..."
        meta = ""
        if self.id is not None:
            meta = f" id={self.id} {self.source}->{self.dest} seq={self.seq}"
        return f"<{self.type}{meta} data={data}>"
