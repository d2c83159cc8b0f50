"""The data section of a message's data when C pickle alone gives it (`plain_pickle`: data
that holds no numpy array), and the skips of that try after arrays were met."""

from __future__ import annotations

import pickle
from typing import Any

from geode_mpi.codec import pickling

_ATOMIC = pickling.ATOMIC
_dumps = pickle.dumps
# A message's data that holds no numpy array pickles the same with C pickle alone as with the
# array-aware pickler (`pickling.dumps`), which differs only in sending arrays out of band,
# strided ones too. Protocol 5 hands every contiguous array's buffer to the buffer callback,
# and pickles the other arrays (strided, datetime64, objects) in band by numpy's
# ``_reconstruct``, named by a STACK_GLOBAL opcode. A pickle that made no callback and holds no
# such name is the general path's. (The name may also occur in a string: such data takes the
# general path, which gives the same result.)
_STACK_GLOBAL = pickle.STACK_GLOBAL[0]  # an int: `int in bytes` is a memchr, `bytes in` slower
# After data with arrays, this many messages go straight to the general path: a job that sends
# arrays in dicts should not pickle each one twice (a wasted C pickle costs ~3 us then).
_PLAIN_SKIPS = 64
_plain_misses = [0]  # (a heuristic: a race between threads on it costs only speed)


class _BufferRefused(Exception):
    """The fast path's pickle met an out-of-band buffer (an array): the general path sends it."""


def _refuse_buffer(_buffer: pickle.PickleBuffer) -> None:
    raise _BufferRefused


def plain_pickle(data: Any) -> bytes | None:
    """The data section of ``data`` when C pickle alone gives it: data of `pickling.ATOMIC`
    types, or data that holds no numpy array (see `_refuse_buffer`: cheaper than asking
    `pickling.is_plain` first, and C speed for objects of classes). None for data holding an
    array, or that does not pickle: the general path's (`encode`, which says what is wrong).
    Callers send data of other types the general way while arrays were met lately
    (`_plain_misses`)."""
    if type(data) in _ATOMIC:
        return _dumps(data, 5)  # (protocol 5; a keyword costs more here)
    try:
        section = _dumps(data, 5, buffer_callback=_refuse_buffer)
    except Exception:  # an array (or unpicklable): the general path
        _plain_misses[0] = _PLAIN_SKIPS
        return None
    if _STACK_GLOBAL in section and section.find(b"_reconstruct") >= 0:
        _plain_misses[0] = _PLAIN_SKIPS
        return None  # an array pickled in band: the general path
    return section
