"""Runs: many small messages of one pair and class, encoded once with one header.

A run's meta is a message header of kind `KIND_RUN` (the same 64-byte layout, so that the
delivery layer routes it as one message: its flags, first seq, source and dest sit where a
message's do), then the class name, then one f64 timestamp per message, then one pickle
(protocol 5) of the list of the messages' data (with the route byte `STATES`, of their
attributes: a subclass's own beside ``data``). Its id and seq fields are the first message's;
message ``i`` has id ``id + i`` and seq ``seq + i``; the data-frames field holds the count.
See docs/wire-format.md, "Runs".
"""

from __future__ import annotations

import operator
import pickle
import struct
import zlib
from array import array
from collections.abc import Collection, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, NamedTuple

from geode_mpi.codec import header
from geode_mpi.codec.classes import BASE_NAME, class_name, resolve, state_methods
from geode_mpi.codec.header import KIND_RUN, PLAIN, ROUTE_AT, SENDER_FLAGS, SIZE, VERSION
from geode_mpi.codec.peeking import peek
from geode_mpi.codec.pickling import ATOMIC
from geode_mpi.codec.wire import encode
from geode_mpi.codec.wire_parts import SET_ATTRIBUTE, Stamp, give_state
from geode_mpi.errors import DecodeError
from geode_mpi.message import RESERVED, Message

TEXT_MAX = 4096  # the longest str or bytes that joins a run (longer data is sent on its own)
# An int joins a run if abs(it) < INT_LIMIT: it fits in TEXT_MAX bytes, as the longest text.
INT_LIMIT = 1 << (8 * TEXT_MAX - 1)
INT_LOW = -INT_LIMIT  # (the bound below, negated once: a 4 KiB int)
ITEMS_MAX = 64  # the most items of a dict, list or tuple that joins a run
_COUNT = struct.Struct("<I")
_COUNT_AT = 40  # the header's data-frames field: a run's message count
_dumps = pickle.dumps
_loads = pickle.loads
_checksum = zlib.adler32
_new = object.__new__
_tuple_new = tuple.__new__
_atomic = ATOMIC.issuperset
_length_hint = operator.length_hint  # (a str's or bytes' length; 0 for a number or None)
_is_int = int.__instancecheck__  # (a bool too: never large)
_FIXED = ATOMIC - {str, bytes, int}  # atomic values of a fixed small size
STATES = 1  # a run's route byte when its payloads are its messages' attributes (`state_of`)
_STATES_BYTE = bytes((STATES,))


_wire_names: dict[type, bytes | None] = {}


def wire_name(cls: type[Message]) -> bytes | None:
    """The wire name of a class whose messages may travel in runs (b"" for `Message`); None
    for a class with ``__slots__`` (its state is not only its ``__dict__``), or its own
    ``__getstate__`` or ``__setstate__`` (its state is what they make of it)."""
    found = _wire_names.get(cls, False)
    if found is False:
        slotted = any("__slots__" in vars(klass) for klass in cls.__mro__[:-1])
        found = None if slotted or state_methods(cls) else class_name(cls).encode()
        if len(_wire_names) < 4096:
            _wire_names[cls] = found
    return found  # type: ignore[return-value]


def joinable(data: Any) -> bool:
    """Whether a message's ``data`` may travel in a run: a value C pickle takes whole with no
    array inside, and small (a run is one MPI message): an atomic value (`pickling.ATOMIC`),
    or a dict (its keys and values), list or tuple of at most `ITEMS_MAX` atomic values, which
    `kept` copies (a run is encoded later, when it is sealed: a dict changed after its
    ``isend`` must not change what was sent); no str or bytes longer than `TEXT_MAX` and no
    int of `INT_LIMIT` or more (in size), inside a container or not."""
    kind = type(data)
    if kind is str or kind is bytes:
        return len(data) <= TEXT_MAX
    if kind is int:
        return bool(INT_LOW < data < INT_LIMIT)
    if kind in ATOMIC:
        return True
    if kind is dict:  # (its keys too: a run's pickle is made later, and must not fail)
        return len(data) <= ITEMS_MAX and small_items(data.values()) and small_items(data)
    if kind is list or kind is tuple:
        return len(data) <= ITEMS_MAX and small_items(data)
    return False


def small_items(values: Iterable[Any]) -> bool:
    """Whether every one of ``values`` is atomic and small enough to join a run (see
    `joinable`): one Python loop, the quickest check of the few items of one message (where
    `small` checks a slice of many, by type)."""
    for value in values:
        kind = type(value)
        if kind is str:
            if len(value) > TEXT_MAX:
                return False
        elif kind is int:
            if value >= INT_LIMIT or value <= INT_LOW:
                return False
        elif kind not in _FIXED and (kind is not bytes or len(value) > TEXT_MAX):
            return False
    return True


def small(values: Collection[Any], kinds: AbstractSet[object]) -> bool:
    """Whether atomic ``values``, of the types ``kinds`` (or fewer), are small enough to join
    a run: no str or bytes longer than `TEXT_MAX`, no int of `INT_LIMIT` or more in size.
    C loops (what a run's bulk join checks a slice of values with, most often values of one
    type); ``values`` is iterated once per check."""
    if kinds <= _FIXED:
        return True
    if len(kinds) == 1:
        if int in kinds:
            try:
                array("q", values)  # (the quickest check: each fits in 8 bytes)
            except OverflowError:
                return bool(min(values) > INT_LOW and max(values) < INT_LIMIT)
            return True
        return max(map(len, values)) <= TEXT_MAX  # (str or bytes)
    if (str in kinds or bytes in kinds) and max(map(_length_hint, values), default=0) > TEXT_MAX:
        return False
    return int not in kinds or max(map(abs, filter(_is_int, values)), default=0) < INT_LIMIT


def state_of(state: dict[str, Any]) -> dict[str, Any] | None:
    """What a run keeps of a message whose ``__dict__`` is ``state``, a subclass's message
    with attributes of its own beside ``data`` (``self.step = 3``): a copy of ``state`` (its
    dicts and lists copied too), if ``data`` and every attribute are `joinable` and none is
    one that geode_mpi sets (`RESERVED`: a received message, or one with headers); None if
    it cannot travel in a run."""
    if "data" not in state or len(state) > ITEMS_MAX:
        return None
    for key, value in state.items():
        if type(key) is not str or (key in RESERVED and key != "data") or not joinable(value):
            return None
    return {key: kept(value) for key, value in state.items()}


def kept(data: Any) -> Any:
    """What a run keeps of ``data`` that `joinable` accepted: a copy of a dict or list (its
    items are immutable), the value itself otherwise."""
    kind = type(data)
    return data.copy() if kind is dict or kind is list else data


def encode_run(
    name: bytes,
    flags: int,
    first_id: int,
    first_seq: int,
    source: int,
    dest: int,
    payloads: list[Any],
    stamps: list[float],
    states: bool = False,
) -> bytes:
    """The meta of a run: the messages' ``payloads`` and ``stamps`` (in order), of the class
    whose wire name is ``name`` (b"" for `Message`); with ``states``, each payload is the
    message's attributes (`state_of`), not its data."""
    section = _dumps(payloads, 5)
    head = PLAIN.pack(
        VERSION, KIND_RUN, flags & SENDER_FLAGS, first_id, first_seq, stamps[0], source, dest,
        len(name), len(payloads), len(section), header.NO_REPLY, _checksum(section),
    )  # fmt: skip
    if states:  # (the route byte, 0 in a run of data)
        head = b"".join((head[:ROUTE_AT], _STATES_BYTE, head[ROUTE_AT + 1 :]))
    return b"".join((head, name, array("d", stamps).tobytes(), section))


def count(meta: bytes | memoryview) -> int:
    """How many messages a run's meta holds."""
    return int(_COUNT.unpack_from(meta, _COUNT_AT)[0])


class RunItem(NamedTuple):
    """A queued message of a run, as its parcel's frames (`codec.decode` reads it)."""

    run: Run
    at: int  # its index in the run
    message: Message | None  # built with the run's others as it arrived (None: not built)


class Run:
    """A run as received: its messages' data and stamps, decoded once."""

    __slots__ = (
        "_cls",
        "dst",
        "dstname",
        "first_id",
        "first_seq",
        "flags",
        "name",
        "payloads",
        "plain",
        "src",
        "srcname",
        "stamps",
        "states",
    )

    def __init__(self, meta: bytes | memoryview, names: Sequence[str]) -> None:
        info = peek(meta)  # the version, the lengths and the class name, checked
        mid, seq, _, src, dst = info.stamp
        if info.kind != KIND_RUN:
            raise DecodeError(f"message {mid} from node index {src} is not a run")
        n = info.n_data
        stamps_at = info.body
        section_at = stamps_at + 8 * n
        end = section_at + info.data_len
        if end != len(meta) or n == 0:
            raise DecodeError(
                f"run {mid} from node index {src}: {n} messages in {len(meta)} bytes do not add up"
            )
        section = meta[section_at:end]
        if _checksum(section) != header.checksum(meta):
            raise DecodeError(
                f"run {mid} from node index {src} does not match its checksum: its pickled "
                "bytes were damaged on the way (they are not unpickled)"
            )
        route = meta[ROUTE_AT]
        if route not in (0, STATES):
            raise DecodeError(f"run {mid} from node index {src} has route byte {route}")
        payloads = _loads(section)
        if type(payloads) is not list or len(payloads) != n:
            raise DecodeError(f"run {mid} from node index {src}: its data is not {n} items")
        self.states = route == STATES  # each payload a message's attributes (`state_of`)
        if self.states and not all(type(state) is dict for state in payloads):
            raise DecodeError(f"run {mid} from node index {src}: its states are not dicts")
        self.payloads: list[Any] = payloads
        self.stamps = stamps = array("d")
        stamps.frombytes(meta[stamps_at:section_at])
        self.first_id: int = mid
        self.first_seq: int = seq
        self.flags: int = info.flags
        self.name: str = info.class_name
        self._cls: type[Message] | None = Message if info.class_name == BASE_NAME else None
        # Whether the class lets its messages' ``__dict__`` be set plainly (found with it)
        self.plain = True
        self.src: int = src
        self.dst: int = dst
        count = len(names)
        self.srcname = names[src] if src < count else str(src)
        self.dstname = names[dst] if dst < count else str(dst)

    def cls(self) -> type[Message]:
        """The messages' class (found once).

        Raises:
            DecodeError: it cannot be imported here.
        """
        found = self._cls
        if found is None:
            found = self._cls = resolve(self.name)
            self.plain = found.__setattr__ is SET_ATTRIBUTE  # (a frozen dataclass's: not)
        return found

    def state(self, index: int) -> dict[str, Any]:
        """Message ``index``'s attributes as its sender set them (its ``data`` alone, unless
        the run carries `states`)."""
        payload = self.payloads[index]
        return dict(payload) if self.states else {"data": payload}

    def message(self, index: int) -> Message:
        """Message ``index`` of the run, as `codec.decode` gives a message sent alone."""
        message = _new(self.cls())
        state = self.state(index)
        state.update(
            id=self.first_id + index,
            seq=self.first_seq + index,
            timestamp=self.stamps[index],
            source=self.srcname,
            dest=self.dstname,
        )
        if self.plain:  # (`give_state`, without its call and its look-up)
            message.__dict__ = state
        else:
            SET_ATTRIBUTE(message, "__dict__", state)
        return message

    def messages(self) -> list[Message] | None:
        """Every message of the run, built in one pass (None if the class is not found here:
        each message's decode then says so)."""
        try:
            cls = self.cls()
        except DecodeError:
            return None
        if self.states:
            return [self.message(index) for index in range(len(self.payloads))]
        return build(cls, self.payloads, self.stamps, self.first_id, self.first_seq,
                     self.srcname, self.dstname)  # fmt: skip

    def single(self, index: int) -> bytes:
        """The meta of message ``index`` encoded alone, as if sent on its own (for the paths
        that keep messages one by one: checkpoints, a queue that drops its oldest)."""
        message = _new(self.cls())
        give_state(message, self.state(index))
        stamp = _tuple_new(
            Stamp,
            (self.first_id + index, self.first_seq + index, self.stamps[index], self.src, self.dst),
        )
        meta, frames = encode(message, stamp, self.flags)
        if frames:  # (joinable data has no array: never)
            raise DecodeError(f"message {stamp.id} of a run encodes with frames")
        return meta


def build(
    cls: type[Message],
    payloads: list[Any],
    stamps: Sequence[float],
    first_id: int,
    first_seq: int,
    source: str,
    dest: str,
) -> list[Message]:
    """The messages of a run of data (not `Run.states`), all in one pass: what a message
    decoded alone is, its ``__dict__`` set whole (about 0.4 us a message, where one built
    on its own costs twice that)."""
    if cls.__setattr__ is not SET_ATTRIBUTE:  # (a frozen dataclass's refuses __dict__)
        plain = build(Message, payloads, stamps, first_id, first_seq, source, dest)
        return [_renewed(cls, message.__dict__) for message in plain]
    new = _new
    built = [new(cls) for _ in payloads]
    end = len(payloads)
    for message, data, mid, seq, stamp in zip(
        built,
        payloads,
        range(first_id, first_id + end),
        range(first_seq, first_seq + end),
        stamps,
        strict=True,
    ):
        message.__dict__ = {
            "data": data,
            "id": mid,
            "seq": seq,
            "timestamp": stamp,
            "source": source,
            "dest": dest,
        }
    return built


def _renewed(cls: type[Message], state: dict[str, Any]) -> Message:
    """A message of ``cls`` with ``state`` as its ``__dict__``, past its own ``__setattr__``."""
    message = _new(cls)
    give_state(message, state)
    return message


def is_run(meta: bytes | memoryview) -> bool:
    """True if ``meta`` is a run's (not one message's)."""
    return len(meta) >= SIZE and meta[header.KIND_AT] == KIND_RUN


def item_id(meta: bytes | memoryview, frames: Sequence[Any]) -> int:
    """The id of a queued message, one of a run's or not (for ``order="id"``)."""
    if is_run(meta):
        return header.message_id(meta) + int(frames[1])
    return header.message_id(meta)


def item_timestamp(meta: bytes | memoryview, frames: Sequence[Any]) -> float:
    """The timestamp of a queued message, one of a run's or not (``order="timestamp"``)."""
    if is_run(meta):
        return float(frames[0].stamps[frames[1]])
    return header.timestamp(meta)
