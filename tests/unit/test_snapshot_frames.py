"""Saved messages keep their array frames' bytes, whatever the arrays' dtype.

Before, `pack_messages` converted each frame with ``np.asarray(frame, np.uint8)``: a frame
that is a float64 array (an array inside a tuple or dict: a work queue's task `(k, array)`,
a retained topic message) was cast value by value, 9 bytes for 9 floats, and the restart
refused the checkpoint ("array frame holds 9 bytes, but dtype float64 and shape (9,) need
72"): a soak probe's job could not resume after SIGTERM.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from geode_mpi import Message, codec
from geode_mpi.persistence.snapshot_packing import pack_messages, unpack_messages

NAMES = ["node0", "node1"]
_BLANK = codec.Stamp(0, 0, 0.0, 0, 0)


@pytest.mark.parametrize(
    "data",
    [
        (3, np.full(9, 1.5)),
        {"a": np.arange(5.0), "b": np.arange(6, dtype=np.int32)},
        [np.arange(4, dtype=np.complex128), np.zeros((3, 2), np.float32)],
        np.arange(3000.0),
        (1, np.arange(12.0).reshape(3, 4)[:, ::2]),  # (not contiguous)
        (2, np.zeros(0)),
    ],
    ids=["tuple", "dict", "list", "array", "strided", "empty"],
)
def test_saved_messages_decode_to_the_arrays_sent(data: Any) -> None:
    encoded = [codec.encode(Message(data), _BLANK), codec.encode(Message("after"), _BLANK)]
    back = [
        codec.decode(meta, frames, NAMES)
        for meta, frames in unpack_messages(pack_messages(encoded))
    ]
    assert back[1].data == "after"
    got = back[0].data
    if isinstance(data, dict):
        assert got.keys() == data.keys()
        pairs = [(got[key], data[key]) for key in data]
    elif isinstance(data, np.ndarray):
        pairs = [(got, data)]
    else:
        assert len(got) == len(data)
        pairs = list(zip(got, data, strict=True))
    for value, sent in pairs:
        if isinstance(sent, np.ndarray):
            assert value.dtype == sent.dtype and value.shape == sent.shape
            np.testing.assert_array_equal(value, sent)
        else:
            assert value == sent
