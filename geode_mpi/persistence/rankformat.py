"""The layout of a rank's checkpoint file: its format, the names of its attributes and datasets,
what the manifest records of it (`RankFile`), and `_lazy`, which loads h5py at first use."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from geode_mpi.base.record import Frozen, fill


def _lazy(name: str) -> Any:
    """Module ``name``, executed at its first attribute access (importlib's LazyLoader)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The version of this layout; a reader refuses others. 2: JSON leaves for small dicts. 3: no
# variable-length strings: root attributes as one JSON uint8 attribute, kinds fixed-length.
# 4: the tree as an index, a blob and the large values (`geode_mpi.persistence.layout`), not a
# group per mapping and a dataset per leaf. 5: every dataset contiguous with the CRC-32 of its
# bytes, taken from memory, as an attribute, instead of fletcher32 in chunks (the checksummed
# chunks cost 1.1 ms of CPU a MiB to write against 0.65 contiguous, the CRC 0.25). Formats 3
# and 4 are still read.
FORMAT = 5
READS = (3, 4, 5)
_INDEX = "geode_index"  # format 4: the tree's index, JSON
_BLOB = "geode_blob"  # format 4: the small values' bytes
_FORMAT_ATTR = b"geode_format"
_ATTRS_ATTR = b"geode_attrs"  # the caller's attributes, as JSON text in a uint8 attribute
_KIND = b"geode_kind"  # attribute naming what a dataset holds
_KINDS = (b"array", b"bytes", b"json")
_CRC = b"geode_crc32"  # format 5: a dataset's CRC-32 (zlib's), a uint32 attribute
# Array dtypes whose bytes HDF5 gives back as they were written, so that a CRC of the array in
# memory matches one of the array read back; others (structured, strings, dates) keep format
# 4's fletcher32 chunks.
_CRC_KINDS = "biufc"
# Chunks of the fletcher32 datasets. h5py's own choice (chunks=True: 32 to 64 KiB for 1 MiB)
# made a 1 MiB dataset cost 2.4 ms of CPU to write against 0.65 contiguous; 256 KiB chunks,
# 1.1 ms (512 KiB and more: 2.2, the default chunk cache is 1 MiB).
CHUNK_BYTES = 256 * 1024
_MAX_DEPTH = 32  # groups nested deeper than any tree the writer makes: damage (or a cycle)
_MAX_ATTRS_BYTES = 1 << 16


class RankFile(Frozen):
    """What the manifest records of one rank's file."""

    name: str
    size: int
    sha256: str
    __match_args__ = ("name", "size", "sha256")

    def __init__(self, name: str, size: int, sha256: str) -> None:
        fill(self, name, size, sha256)


def rank_name(rank: int) -> str:
    return f"rank-{rank:04d}.h5"
