"""The header's checksum of what C pickle reads of a message (its pickled data section, then its
rest section), and the DecodeErrors of a damaged checksum or data length."""

from __future__ import annotations

import zlib

from geode_mpi.codec import header
from geode_mpi.codec.header import FLAG_REST, KIND_ARRAY_DICT, KIND_PICKLE
from geode_mpi.errors import DecodeError

HEAD_SIZE = header.SIZE
# Adler-32, not CRC-32: 53 against 168 ns for a 73-byte pickle (a small dict) here, on each side
_checksum = zlib.adler32
_PICKLED_KINDS = (KIND_PICKLE, KIND_ARRAY_DICT)  # data sections the checksum covers


def _checksum_error(mid: int, src: int) -> DecodeError:
    return DecodeError(
        f"message {mid} from node index {src} does not match its checksum: its pickled bytes "
        "were damaged on the way (they are not unpickled)"
    )


def length_error(
    mid: int, src: int, data_len: int, size: int, start: int = HEAD_SIZE
) -> DecodeError:
    """A message whose data length field does not fit the rest of its meta (``size`` bytes,
    its data section from ``start``): all of it, or all but a rest section."""
    after = "its header" if start == HEAD_SIZE else "its header and class name"
    return DecodeError(
        f"message {mid} from node index {src} says its data is {data_len} bytes long, but "
        f"{size - start} follow {after}: its header was damaged on the way"
    )


def pickled_checksum(meta: bytes | memoryview, kind: int, flags: int, body: int) -> int:
    """The header's checksum of a message whose data section starts at ``body`` (see
    `_sections_checksum`): its data section if it is a pickle, then its rest section."""
    end = body + header.data_length(meta)
    pickled = meta[body:end] if kind in _PICKLED_KINDS else None
    return _sections_checksum(pickled, meta[end:] if flags & FLAG_REST else None)


def _sections_checksum(pickled: bytes | memoryview | None, rest: bytes | memoryview | None) -> int:
    """The Adler-32 of what C pickle reads of a message: its pickled data section (None: its
    data is not a pickle), then its rest section (None: it has none); 0 when neither."""
    if pickled is not None:
        check = _checksum(pickled)
        return _checksum(rest, check) if rest is not None else check
    return _checksum(rest) if rest is not None else 0
