"""Numpy arrays as (descriptor, frame): the frame is the array's own memory, never a pickle."""

from __future__ import annotations

import io
import math
import pickle
import struct
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, TypeGuard

from geode_mpi.base.ondemand import on_first_use

# order (b"C" or b"F"), dtype encoding (0 = dtype.str, 1 = pickled dtype), ndim, dtype length
_DESC = struct.Struct("<cBHI")
_DIM = struct.Struct("<q")


class _NoArray:
    """What `ndarray` is until numpy is imported: the type of no object."""


NO_ARRAY: type = _NoArray  # (what `ndarray` is until learnt: other codec modules test it)


# numpy.ndarray once numpy is imported (by anyone), else `_NoArray`. The codec's fast paths
# test ``type(x) is arrays.ndarray``, which costs what ``np.ndarray`` did; an array sent before
# this was learnt takes the general path, whose `is_ndarray` learns it.
ndarray: type[np.ndarray[Any, Any]] = _NoArray  # type: ignore[assignment]
_BYTE: Any = None  # numpy's uint8 dtype, once numpy is imported


def _learn(numpy: ModuleType) -> None:
    global ndarray, _BYTE
    _BYTE = numpy.dtype(numpy.uint8)
    ndarray = numpy.ndarray


if TYPE_CHECKING:
    import numpy as np
else:  # a job sending only Python objects never imports numpy (14-15 MB a rank)
    np = on_first_use("numpy", globals(), "np", then=_learn)


def is_ndarray(obj: object) -> TypeGuard[np.ndarray[Any, Any]]:
    """True if ``obj`` is exactly a numpy ndarray. Never imports numpy: no object is an array
    before someone imported it (``sys.modules`` says whether anyone has)."""
    if type(obj) is ndarray:
        return True
    if ndarray is not _NoArray:
        return False
    numpy = sys.modules.get("numpy")
    if numpy is None or getattr(numpy, "ndarray", None) is None:  # (or still importing)
        return False
    _learn(numpy)
    return type(obj) is ndarray


def is_raw_array(obj: object) -> bool:
    """True for arrays that travel as raw memory (exact ndarray, no Python objects inside)."""
    return is_ndarray(obj) and not obj.dtype.hasobject


# (dtype, shape, order) -> descriptor, for the dtypes that travel as their ``str`` (encoding
# 0): equal ones have equal strs. A structured dtype is kept in `_exact` instead, since numpy
# holds equal (with one hash) dtypes that travel differently: a numpy.record dtype and its
# numpy.void twin, or one with metadata and one without.
_described: dict[tuple[np.dtype[Any], tuple[int, ...], bytes], bytes] = {}
# (dtype, shape, order) -> (the dtype described, descriptor): for structured dtypes.
_exact: dict[tuple[np.dtype[Any], tuple[int, ...], bytes], tuple[np.dtype[Any], bytes]] = {}
_DESCRIBED_MAX = 4096


def array_frame(arr: np.ndarray[Any, Any]) -> tuple[bytes, np.ndarray[Any, Any]]:
    """Split an array into a descriptor and the frame to send.

    The frame is ``arr`` itself (C order), or ``arr.T`` for a Fortran-contiguous array, so that a
    transport sending the frame's elements in C order never has to copy a contiguous array.
    Non-contiguous arrays are returned as they are; the transport sends them strided.
    """
    if arr.ndim > 1 and not arr.flags.c_contiguous and arr.flags.f_contiguous:
        order, frame = b"F", arr.T
    else:
        order, frame = b"C", arr
    key = (arr.dtype, arr.shape, order)
    found = _described.get(key)
    if found is None:
        found = _describe_new(key)
    return found, frame


def _describe_new(key: tuple[np.dtype[Any], tuple[int, ...], bytes]) -> bytes:
    """`array_frame`'s descriptor for a key not in `_described` (and remember it)."""
    dtype, shape, order = key
    if dtype.names is None and dtype.subdtype is None:
        found = _describe(dtype, shape, order)
        if len(_described) >= _DESCRIBED_MAX:
            _described.clear()
        _described[key] = found
        return found
    known = _exact.get(key)
    if known is not None and (known[0] is dtype or alike(known[0], dtype)):
        return known[1]
    found = _describe(dtype, shape, order)
    if len(_exact) >= _DESCRIBED_MAX:
        _exact.clear()
    _exact[key] = (dtype, found)
    return found


def alike(one: np.dtype[Any], other: np.dtype[Any]) -> bool:
    """Whether two equal dtypes also travel alike: numpy's equality ignores their scalar type
    (numpy.record or numpy.void), metadata and aligned-struct flag (``align=True``), which a
    descriptor carries, at every level."""
    if one is other:
        return True
    if (
        one.type is not other.type
        or one.metadata != other.metadata
        or one.isalignedstruct is not other.isalignedstruct
    ):
        return False
    names = one.names
    if names is None:
        inner, others = one.subdtype, other.subdtype
        return inner is None or others is None or alike(inner[0], others[0])
    fields, others_fields = one.fields, other.fields
    assert fields is not None and others_fields is not None
    for name in names:  # noqa: SIM110 (a loop: 1.3 us for two fields, all() 3.2 us)
        if not alike(fields[name][0], others_fields[name][0]):
            return False
    return True


def _describe(dtype: np.dtype[Any], shape: tuple[int, ...], order: bytes) -> bytes:
    if dtype.names is None and dtype.subdtype is None:
        dt_kind, dt_bytes = 0, dtype.str.encode()
    else:
        dt_kind, dt_bytes = 1, pickle.dumps(dtype, protocol=5)
    parts = [_DESC.pack(order, dt_kind, len(shape), len(dt_bytes)), dt_bytes]
    parts.extend(_DIM.pack(n) for n in shape)
    return b"".join(parts)


_parsed: dict[bytes, tuple[np.dtype[Any], tuple[int, ...], bool, int]] = {}
_PARSED_MAX = 4096


def read_descriptor(
    meta: bytes | memoryview, offset: int, end: int | None = None
) -> tuple[np.dtype[Any], tuple[int, ...], bool, int]:
    """Parse a descriptor at ``offset``; return (dtype, shape, fortran, next offset).

    Parsed descriptors are cached: a job sends the same dtype and shape again and again.
    ``end``, when the caller knows it, is where the descriptor ends (saves parsing its length).
    """
    if end is not None:
        found = _parsed.get(bytes(meta[offset:end]))
        if found is not None:
            return found[0], found[1], found[2], end
    order, dt_kind, ndim, dt_len = _DESC.unpack_from(meta, offset)
    length = _DESC.size + dt_len + 8 * ndim
    key = bytes(meta[offset : offset + length])
    found = _parsed.get(key)
    if found is None:
        start = _DESC.size
        raw = key[start : start + dt_len]
        dtype = np.dtype(raw.decode()) if dt_kind == 0 else load_dtype(raw)
        dims = start + dt_len
        shape = tuple(_DIM.unpack_from(key, dims + 8 * k)[0] for k in range(ndim))
        found = (dtype, shape, order == b"F", length)
        if len(_parsed) >= _PARSED_MAX:
            _parsed.clear()
        _parsed[key] = found
    dtype, shape, fortran, length = found
    return dtype, shape, fortran, offset + length


# A small array's descriptor -> (dtype, the descriptor's length, element count, shape, Fortran
# order, whether the elements as read are already the array: 1-d)
_Small: TypeAlias = "tuple[np.dtype[Any], int, int, tuple[int, ...], bool, bool]"
_small: dict[bytes, _Small] = {}


def small_array(
    meta: bytes | memoryview, start: int, end: int, owned: bool = False
) -> np.ndarray[Any, Any]:
    """The small array stored inside meta: its descriptor at ``start``, then padding to a
    multiple of 8 bytes (of meta), then its bytes up to ``end``. A writable copy, not a view
    of meta (whose buffer it would keep alive: a batch's, or a message that may be delivered
    again), unless ``owned`` (nothing reads meta after this) and meta is a whole bytearray
    (one message's own receive buffer): then a view of it, which saves the copy.

    Raises:
        ValueError, struct.error: the bytes do not hold such an array.
    """
    _, _, ndim, dt_len = _DESC.unpack_from(meta, start)
    found = _small.get(bytes(meta[start : start + _DESC.size + dt_len + 8 * ndim]))
    if found is None:
        found = _learn_small(meta, start)
    dtype, length, count, shape, fortran, one_d = found
    at = start + length
    at += -at % 8
    nbytes = count * dtype.itemsize
    if end - at != nbytes:
        raise ValueError(
            f"a small array of {count} x {dtype} needs {nbytes} bytes, its section holds {end - at}"
        )
    if not nbytes:
        return np.empty(shape, dtype, order="F" if fortran else "C")
    data: np.ndarray[Any, Any]
    if (
        owned
        and type(meta) is memoryview
        and type(meta.obj) is bytearray
        and meta.nbytes == len(meta.obj)
    ):
        data = np.frombuffer(meta, dtype, count, at)  # (writable: a bytearray's memory)
    else:
        data = np.frombuffer(bytearray(meta[at:end]), dtype)
    if one_d:
        return data
    return data.reshape(shape[::-1]).T if fortran else data.reshape(shape)


def _learn_small(meta: bytes | memoryview, start: int) -> _Small:
    dtype, shape, fortran, end = read_descriptor(meta, start)
    found = (dtype, end - start, math.prod(shape), shape, fortran, len(shape) == 1)
    if len(_small) >= _PARSED_MAX:
        _small.clear()
    _small[bytes(meta[start:end])] = found
    return found


_PyUnpickler: Any = pickle._Unpickler  # the pure-Python one: its dispatch table can be changed


class _DtypeUnpickler(_PyUnpickler):  # type: ignore[misc]
    """Unpickles a dtype without numpy's ``dtype.__setstate__``, which crashes the process on a
    damaged state: only ``numpy.dtype`` may be named, and each state is rebuilt through numpy's
    public constructor, which checks it (the pure-Python unpickler: dtypes are parsed once).
    ``numpy.record`` may be named too: a record dtype's pickle makes it from that class."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "numpy" and name == "dtype":
            return _new_dtype
        if module == "numpy" and name == "record":
            return np.record
        raise pickle.UnpicklingError(f"a dtype's pickle names {module}.{name}")

    def load_build(self) -> None:
        state = self.stack.pop()
        made = self.stack[-1]
        built = _dtype_from_state(made, state)
        self.stack[-1] = built
        for key, value in list(self.memo.items()):
            if value is made:
                self.memo[key] = built

    def load_bytearray8(self) -> None:
        # The pure-Python unpickler allocates the length this opcode names before it reads
        # (a damaged one asked for 5 GiB); no dtype's pickle holds a bytearray.
        raise pickle.UnpicklingError("a dtype's pickle holds a bytearray")

    dispatch: ClassVar[dict[int, Any]] = dict(_PyUnpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


def _new_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype[Any]:
    if (
        (type(spec) is not str and spec is not np.record)
        or type(align) is not bool
        or type(copy) is not bool
    ):
        raise TypeError("a dtype's pickle calls numpy.dtype with arguments it never uses")
    return np.dtype(spec, align, copy)


def _dtype(value: Any) -> np.dtype[Any]:
    if not isinstance(value, np.dtype):
        raise TypeError(f"expected a dtype in a dtype's state, got {type(value).__name__}")
    return value


_ALIGNED_STRUCT = 0x80  # numpy's NPY_ALIGNED_STRUCT, in a dtype state's flags: ``align=True``


def _dtype_from_state(made: Any, state: Any) -> np.dtype[Any]:
    """The dtype that ``made.__setstate__(state)`` would give, built by ``np.dtype``."""
    if not isinstance(made, np.dtype) or type(state) is not tuple or len(state) not in (8, 9):
        raise TypeError("not a dtype's pickled state")
    _, byteorder, subarray, names, fields, elsize, _, flags = state[:8]
    dtype: np.dtype[Any]
    if subarray is not None:
        base, shape = subarray
        dtype = np.dtype((_dtype(base), tuple(int(n) for n in shape)))
    elif names is not None:
        entries = [fields[name] for name in names]
        spec = {
            "names": [str(name) for name in names],
            "formats": [_dtype(entry[0]) for entry in entries],
            "offsets": [int(entry[1]) for entry in entries],
            "titles": [entry[2] if len(entry) > 2 else None for entry in entries],
            "itemsize": int(elsize),
        }
        # (``align=True`` keeps the offsets given, checks them, and sets the flag)
        aligned = type(flags) is int and flags & _ALIGNED_STRUCT != 0
        dtype = np.dtype(spec, align=aligned)  # type: ignore[call-overload]
        if made.type is np.record:  # (a record dtype: made from numpy.record, its fields here)
            dtype = np.dtype((np.record, dtype))
    else:
        dtype = made.newbyteorder(byteorder) if byteorder in ("<", ">") else made
    metadata = state[8] if len(state) == 9 else None
    if made.kind in "mM":  # (a datetime64 or timedelta64: made generic, its unit here)
        metadata, dtype = _time_state(made, byteorder, metadata)
    if metadata is not None:
        dtype = np.dtype(dtype, metadata=dict(metadata))
    return dtype


def _time_state(made: np.dtype[Any], byteorder: Any, extra: Any) -> tuple[Any, np.dtype[Any]]:
    """The metadata and the dtype of a datetime64 or timedelta64 dtype's state, whose last
    item is (metadata, (unit, count, 1, 1)) where other dtypes' is the metadata alone."""
    metadata, (unit, count, _, _) = extra
    if type(unit) is not bytes or type(count) is not int:
        raise TypeError("not a datetime dtype's pickled state")
    order = byteorder if byteorder in ("<", ">") else "="
    code = made.char + "8"
    if unit != b"generic":
        code += f"[{count}{unit.decode()}]"
    return metadata, np.dtype(order + code)


def load_dtype(raw: bytes) -> np.dtype[Any]:
    """A dtype from its pickle (a descriptor's encoding 1), without trusting the pickle.

    Raises:
        Exception: the bytes are not the pickle of a dtype (any type: the caller's decode
            turns it into DecodeError).
    """
    dtype = _DtypeUnpickler(io.BytesIO(raw)).load()
    return _dtype(dtype)


def rebuild_array(
    buffer: Any, dtype: np.dtype[Any], shape: tuple[int, ...], fortran: bool
) -> np.ndarray[Any, Any]:
    """View a received byte buffer (writable uint8 array or memoryview) as its array, no copy.

    Raises:
        ValueError: the buffer size does not match the descriptor.
    """
    if dtype.itemsize == 0:
        return np.empty(shape, dtype)
    try:
        array: np.ndarray[Any, Any]
        if type(buffer) is np.ndarray and buffer.dtype == _BYTE and buffer.ndim == 1:
            # A received frame (a uint8 buffer): itself, or a view of it, is cheaper than a
            # new array through the buffer protocol.
            array = buffer if dtype == _BYTE else buffer.view(dtype)
        else:
            array = np.frombuffer(buffer, dtype)
        if fortran:
            return array.reshape(shape[::-1]).T  # type: ignore[no-any-return]
        return array if array.shape == shape else array.reshape(shape)
    except ValueError:
        held = memoryview(buffer).nbytes
        raise ValueError(
            f"array frame holds {held} bytes, but dtype {dtype} and shape {shape} "
            f"need {math.prod(shape) * dtype.itemsize}"
        ) from None
