"""Over MPI, a structured dtype made with ``align=True`` arrives with its aligned-struct flag:
inside meta, inline, out of band, pickled inside a dict, and as a shared (cached) array."""

from __future__ import annotations

from typing import Any

import numpy as np
from payloads import ALIGNED, PACKED

from geode_mpi import Geode, share

TIMEOUT = 60.0


def values(dtype: np.dtype[Any], n: int, rank: int) -> np.ndarray[Any, Any]:
    array = np.zeros(n, dtype)
    array.view(np.uint8).reshape(n, -1)[:] = (np.arange(dtype.itemsize) + rank) % 256
    return array


def test_aligned_and_packed_twins_arrive_each_with_its_flag(geode: Geode) -> None:
    after = geode.nodes[(geode.rank + 1) % geode.size]
    before = (geode.rank - 1) % geode.size
    # (3: inside meta; 100: an inline frame; 100_000: out of band, 2.4 MB)
    for n in (3, 3, 100, 100_000):
        for dtype in (ALIGNED, PACKED):
            shared = share(values(dtype, n, geode.rank))
            for how in ("alone", "dict", "shared", "shared"):  # (again: by reference)
                sent = values(dtype, n, geode.rank)
                data: Any = shared if how == "shared" else sent
                handle = geode.isend(data if how != "dict" else {"x": data}, geode.node, after)
                got = geode.receive(geode.node, timeout=TIMEOUT).data
                handle.wait(timeout=TIMEOUT)
                got = got["x"] if how == "dict" else got
                assert got.dtype == dtype and got.dtype.isalignedstruct == dtype.isalignedstruct, (
                    f"rank {geode.rank}: {how} {n} x {dtype}: got aligned "
                    f"{got.dtype.isalignedstruct}, sent {dtype.isalignedstruct}"
                )
                assert got.dtype.fields["c"][0].isalignedstruct == dtype.isalignedstruct
                assert got.tolist() == values(dtype, n, before).tolist()  # (not the padding)
