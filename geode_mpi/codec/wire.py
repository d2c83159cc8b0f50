"""A Message as (meta, frames): a small fixed header, the class name, the payload, raw buffers.

Meta is the header (`geode_mpi.codec.header`, documented in docs/wire-format.md), then the class
name (UTF-8), the route section (a group message on its way to the sequencer), the data section
and the rest section (to the end).

A control record (kind 3) has the same header and the delivery layer's bytes as its data
section; the codec never interprets them.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.codec import arrays, header, maps, pickling
from geode_mpi.codec.arrays import (
    array_frame,
    is_raw_array,
)
from geode_mpi.codec.checksums import _PICKLED_KINDS, _checksum, _sections_checksum
from geode_mpi.codec.classes import class_name, state_methods
from geode_mpi.codec.fastpickle import _plain_misses, plain_pickle
from geode_mpi.codec.header import (
    FLAG_REST,
    KIND_ARRAY,
    KIND_ARRAY_DICT,
    KIND_PICKLE,
    KIND_SMALL_ARRAY,
    KIND_TEXT,
    NO_REPLY,
    SENDER_FLAGS,
    VERSION,
    Route,
)
from geode_mpi.codec.own_state import _own_state
from geode_mpi.codec.wire_parts import Peek as Peek
from geode_mpi.codec.wire_parts import Stamp as Stamp
from geode_mpi.codec.wire_parts import (
    _first_unpicklable,
    _remember_template,
    _slot_names,
    _templates,
    _wire_names,
    exact_template,
)
from geode_mpi.errors import EncodeError
from geode_mpi.message import RESERVED, Message

if TYPE_CHECKING:  # numpy is imported by whoever sends arrays, or to decode one (arrays.py)
    import numpy as np

SMALL_ARRAY_MAX = 2048  # bytes; a frame costs more than copying this much
_HEAD = header.HEAD
_PLAIN = header.PLAIN
HEAD_SIZE = header.SIZE
_PAD = bytes(8)


def _plain_section(data: Any) -> tuple[bytes, int, int]:
    """The data section, kind and checksum of data that `pickling.is_plain` accepted."""
    if type(data) is str:
        try:
            return data.encode(), KIND_TEXT, 0  # UTF-8: cheaper than pickle, both ways
        except UnicodeEncodeError:  # a lone surrogate: pickle keeps it
            pass
    section = pickle.dumps(data, 5)  # (protocol 5; a keyword costs more here)
    return section, KIND_PICKLE, _checksum(section)


_ATOMIC = pickling.ATOMIC
_NO_FRAMES: tuple[()] = ()  # what a message without frames returns: shared, never changed


def _head(
    kind: int,
    flags: int,
    stamp: Stamp,
    name_len: int,
    n_data: int,
    section_len: int,
    reply_to: int,
    crc: int,
) -> bytes:
    """The header of a message without headers or attributes (encode's fast paths)."""
    mid, seq, ts, src, dst = stamp  # unpacked here: cheaper than *stamp in the call
    return _PLAIN.pack(
        VERSION,
        kind,
        flags & SENDER_FLAGS,
        mid,
        seq,
        ts,
        src,
        dst,
        name_len,
        n_data,
        section_len,
        reply_to,
        crc,
    )


def encode(
    message: Message,
    stamp: Stamp,
    flags: int = 0,
    reply_to: int = NO_REPLY,
    route: Route | None = None,
) -> tuple[bytes, Sequence[np.ndarray[Any, Any]]]:
    """Encode a message for the wire.

    Args:
        message: the message.
        stamp: its metadata.
        flags: delivery flags (`FLAG_TRACKED`, `FLAG_WAITED`, `FLAG_RESENT`).
        reply_to: the id of the message this one answers, or `NO_REPLY`.
        route: where a sequencer or dispatcher sends it on, and its priority and ttl
            (`header.Route`), if anything.

    Returns:
        ``(meta, frames)``: meta is bytes; frames are numpy arrays to send as raw memory, in
        order (possibly non-contiguous: a transport sends their elements in C order).

    Raises:
        EncodeError: the data, headers or attributes cannot be pickled. Nothing is sent.
    """
    data = message.data
    cls = type(message)
    state = message.__dict__
    # Only data in its __dict__ (not a subclass's one other attribute, its data the class's
    # default: one that forgot super().__init__() keeps that attribute)
    alone = len(state) == 1 and "data" in state
    if type(data) is str and route is None:  # the commonest small message: a text, UTF-8
        known = _wire_names.get(cls)
        if known is not None and not known[1] and alone:
            try:
                text = data.encode()
            except UnicodeEncodeError:  # a lone surrogate: pickle keeps it (below)
                pass
            else:
                if len(text) <= _U32_MAX:
                    mid, seq, ts, src, dst = stamp
                    head = _PLAIN.pack(
                        VERSION, KIND_TEXT, flags & SENDER_FLAGS, mid, seq, ts, src, dst,
                        len(known[0]), 0, len(text), reply_to, 0,
                    )  # fmt: skip
                    return b"".join((head, known[0], text)), _NO_FRAMES
    if type(data) is arrays.ndarray and alone and route is None:
        # A small plain array alone in its message: from a template made the first time this
        # class, dtype and shape were sent (the commonest small message there is).
        template = _templates.get((cls, data.dtype, data.shape))
        if template is not None and data.flags.c_contiguous:  # a strided 1-D array is not
            prefix, name_len, section_len = template
            head = _head(KIND_SMALL_ARRAY, flags, stamp, name_len, 0, section_len, reply_to, 0)
            # C-contiguous, so join reads its bytes straight from its buffer.
            return b"".join((head, prefix, data)), _NO_FRAMES  # type: ignore[arg-type]
        known = _wire_names.get(cls)
        if (
            known is not None
            and not known[1]
            and data.nbytes > SMALL_ARRAY_MAX
            and not data.dtype.hasobject
        ):
            # A large plain array alone in its message: the general path's result, sooner.
            try:
                descriptor, frame = array_frame(data)
            except Exception as exc:  # a structured dtype pickles its metadata
                raise EncodeError("message data", type(data), exc) from exc
            head = _head(KIND_ARRAY, flags, stamp, len(known[0]), 1, len(descriptor), reply_to, 0)
            return b"".join((head, known[0], descriptor)), [frame]
        if template is None and data.dtype.names is not None and data.flags.c_contiguous:
            # A small structured array: its template is kept apart (`exact_template`).
            template = exact_template(cls, data)
            if template is not None:
                prefix, name_len, section_len = template
                head = _head(KIND_SMALL_ARRAY, flags, stamp, name_len, 0, section_len, reply_to, 0)
                return b"".join((head, prefix, data)), _NO_FRAMES  # type: ignore[arg-type]
    elif alone and route is None:
        known = _wire_names.get(cls)
        if known is not None and not known[1]:  # a str, int, small dict of them ...: no frames
            # `_plain_section` and `_head` inline: each call was ~3-5% of encoding a message.
            # (A text is encoded above; one here has a lone surrogate: pickle keeps it.)
            if _plain_misses[0] and type(data) not in _ATOMIC:
                _plain_misses[0] -= 1  # arrays were met lately: the general path at once
                if type(data) is dict:  # (unless a dict holding arrays: kind 6, now)
                    found = _split_dict(data, known[0], stamp, flags, reply_to)
                    if found is not None:
                        return found
                section = None
            else:
                section = plain_pickle(data)
            if section is not None and len(section) <= _U32_MAX:
                mid, seq, ts, src, dst = stamp
                head = _PLAIN.pack(
                    VERSION, KIND_PICKLE, flags & SENDER_FLAGS, mid, seq, ts, src, dst,
                    len(known[0]), 0, len(section), reply_to, _checksum(section),
                )  # fmt: skip
                return b"".join((head, known[0], section)), _NO_FRAMES
    frames: list[np.ndarray[Any, Any]] = []
    known = _wire_names.get(cls)
    if known is None:
        methods = state_methods(cls)
        special = bool(_slot_names(cls)) or bool(methods)
        known = _wire_names[cls] = (class_name(cls).encode(), special, methods)
    name, slotted, methods = known  # (slotted: slots, or its own __getstate__ or __setstate__)
    routing = b"" if route is None else route.section()
    extras: Any
    if alone and not slotted:  # the common case
        headers = extras = None
        has_rest = False
    elif methods:
        # (data, headers and the state all in the rest section: one pickle, which sends an
        # object the state shares with data once)
        headers, extras = _own_state(message, methods)
        data = None
        has_rest = True
    else:
        headers = state.get("_headers") or None
        extras = {k: v for k, v in state.items() if k not in RESERVED}
        for slot in _slot_names(cls):
            if hasattr(message, slot):
                extras[slot] = getattr(message, slot)
        extras = extras or None
        has_rest = headers is not None or extras is not None
    try:
        if is_raw_array(data):
            descriptor, frame = array_frame(data)
            if data.nbytes <= SMALL_ARRAY_MAX:
                kind = KIND_SMALL_ARRAY
                pad = -(HEAD_SIZE + len(name) + len(routing) + len(descriptor)) % 8
                section = b"".join((descriptor, _PAD[:pad], frame.tobytes()))
                if not has_rest and frame is data and not slotted and route is None:
                    _remember_template(cls, data, name, descriptor + _PAD[:pad], len(section))
            else:
                kind = KIND_ARRAY
                section = descriptor
                frames.append(frame)
        elif pickling.is_plain(data):
            section, kind, _ = _plain_section(data)
        elif type(data) is dict and (split := maps.split(data, frames)) is not None:
            kind, section = KIND_ARRAY_DICT, split
        else:
            kind = KIND_PICKLE
            section = pickling.dumps(data, frames)
    except Exception as exc:
        raise EncodeError("message data", type(data), exc) from exc
    n_data_frames = len(frames)
    rest = b""
    if has_rest:
        try:
            rest = pickling.dumps((headers, extras), frames)
        except Exception as exc:
            if methods:  # (data, and what __getstate__ returned)
                got = extras[1]
                extras = {"data": extras[0], **(got if type(got) is dict else {"state": got})}
            bad = _first_unpicklable(headers, extras)
            raise EncodeError(f"{type(message).__name__} {bad[0]}", type(bad[1]), exc) from exc
    if len(section) > _U32_MAX or len(rest) > _U32_MAX:
        raise EncodeError(
            "message data" if len(section) > _U32_MAX else f"{cls.__name__} headers/attributes",
            type(data),
            ValueError(
                f"it pickles to {max(len(section), len(rest))} bytes outside numpy arrays; "
                "the limit is 4 GiB (arrays of any size travel apart: send big buffers as "
                "numpy arrays)"
            ),
        )
    flags = (flags & SENDER_FLAGS) | (FLAG_REST if has_rest else 0)
    pickled = section if kind in _PICKLED_KINDS else None
    crc = _sections_checksum(pickled, rest if has_rest else None)
    which, number = (0, 0) if route is None else (route.route_byte(), route.number_field())
    # Stamp's fields are in header order: id, seq, timestamp, source, dest.
    head = _HEAD.pack(
        VERSION,
        kind,
        flags,
        which,
        *stamp,
        len(name),
        len(routing),
        n_data_frames,
        len(section),
        reply_to,
        crc,
        number,
    )
    return b"".join((head, name, routing, section, rest)), frames


def _split_dict(
    data: dict[Any, Any], name: bytes, stamp: Stamp, flags: int, reply_to: int
) -> tuple[bytes, list[np.ndarray[Any, Any]]] | None:
    """`encode` of a message of class wire name ``name`` whose only attribute is ``data``, a
    dict holding arrays (`maps.split`), with no route; None if kind 6 does not take it."""
    frames: list[np.ndarray[Any, Any]] = []
    try:
        section = maps.split(data, frames)
    except Exception:  # (a dtype that cannot be described: the general path says so)
        return None
    if section is None or len(section) > _U32_MAX:
        return None
    crc = _checksum(section)
    head = _head(KIND_ARRAY_DICT, flags, stamp, len(name), len(frames), len(section), reply_to, crc)
    return b"".join((head, name, section)), frames


_tuple_new = tuple.__new__
# What a lane's express send reads (delivery/direct.py) to send as `encode` does: the small
# arrays' templates, and the messages still to send the general way after arrays were met.
array_templates = _templates
plain_misses = _plain_misses


_U32_MAX = 2**32 - 1
