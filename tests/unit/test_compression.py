"""Compression of large frames (issue 17): settings, the wire table, errors, precedence."""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geode_mpi import Compression, DecodeError, Geode, Message, codec, share
from geode_mpi.codec import compression
from geode_mpi.codec.compression import expanded, setting, shrink
from geode_mpi.codec.header import FLAG_COMPRESSED, FLAGS_AT
from geode_mpi.core import geode as geode_module
from geode_mpi.transport import InProcHub

STAMP = codec.Stamp(7, 0, 0.0, 0, 1)
NAMES = ["node0", "node1"]
MiB = 1024 * 1024


def compressible(n: int, dtype: Any = np.float64) -> np.ndarray[Any, Any]:
    """Counts-like values: compress about 10 times with Blosc."""
    return (np.arange(n) % 7).astype(dtype)


def noise(n: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(1).standard_normal(n)


def over_the_wire(meta: bytes, frames: Any) -> Message:
    """Decode as a receiver does: from writable byte buffers (copies of the frames)."""
    received = [
        np.frombuffer(bytearray(np.ascontiguousarray(f).tobytes()), np.uint8) for f in frames
    ]
    return codec.decode(meta, received, NAMES)


DTYPES = ["<f8", "<f4", ">f8", "<i8", "<i2", "|u1", "|b1", "<c16", "<M8[s]"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["C", "F"])
def test_round_trip_keeps_dtype_shape_order_and_values(dtype: str, order: str) -> None:
    data = np.asarray(compressible(300 * 400, np.int64) % 2, dtype=dtype).reshape(300, 400)
    data = np.asarray(data, order=order)  # type: ignore[call-overload]
    meta, frames = codec.encode(Message(data, headers={"step": 3}), STAMP)
    small, packed = shrink(meta, frames, Compression("lz4"))
    assert small[FLAGS_AT] & FLAG_COMPRESSED and packed[0].nbytes < frames[0].nbytes / 3
    got = over_the_wire(small, packed)
    assert got.data.dtype == data.dtype and got.data.shape == data.shape
    assert got.data.flags.f_contiguous == (order == "F") or data.ndim < 2
    assert np.array_equal(got.data, data) and got.headers == {"step": 3}


def test_arrays_inside_a_pickled_object_are_compressed_and_come_back() -> None:
    value = {"a": compressible(100_000), "b": compressible(50_000, np.int32), "tag": "x"}
    meta, frames = codec.encode(Message(value), STAMP)
    small, packed = shrink(meta, frames, Compression("zstd", 3))
    assert [f.nbytes < g.nbytes / 3 for f, g in zip(packed, frames, strict=True)] == [True, True]
    got = over_the_wire(small, packed).data
    assert got["tag"] == "x" and np.array_equal(got["a"], value["a"])
    assert np.array_equal(got["b"], value["b"]) and got["b"].dtype == np.int32


def test_incompressible_data_travels_raw_after_one_sample() -> None:
    data = noise(MiB // 8)
    meta, frames = codec.encode(Message(data), STAMP)
    calls: list[int] = []
    from numcodecs import blosc

    real = blosc.compress

    def counted(source: Any, *args: Any) -> bytes:
        calls.append(memoryview(source).nbytes)
        return bytes(real(source, *args))

    blosc.compress = counted
    try:
        small, packed = shrink(meta, frames, Compression("lz4"))
    finally:
        blosc.compress = real
    assert small is meta and packed is frames  # unchanged, not even copied
    assert calls == [compression.SAMPLE]  # the sample only, not the whole MiB


def test_small_and_strided_frames_travel_raw() -> None:
    strided = compressible(2 * MiB // 8)[::2]
    for data, least in ((compressible(1000), compression.AUTO_MIN), (strided, 0)):
        meta, frames = codec.encode(Message(data), STAMP)
        assert shrink(meta, frames, Compression("lz4", min_size=least)) == (meta, frames)
        assert np.array_equal(over_the_wire(meta, frames).data, data)


def test_settings_parse_levels_and_refuse_the_rest() -> None:
    assert setting(None) is None
    assert setting("off") == Compression(None)
    assert setting("auto") == Compression("lz4", 5, auto=True, min_size=compression.AUTO_MIN)
    assert setting("zstd:3") == Compression("zstd", 3)
    assert setting("blosclz") == Compression("blosclz", 5)
    for bad in ("gzip", "zstd:0", "zstd:10", "lz4:x", "", True):
        with pytest.raises(ValueError, match="compress"):
            setting(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        setting(Compression("lz4", 12))


@pytest.mark.parametrize(
    ("arguments", "error", "text"),
    [
        (("lz4", 99), ValueError, "Compression level must be 1 to 9, got 99"),
        (("lz4", 0), ValueError, "Compression level must be 1 to 9, got 0"),
        (("lz4", "5"), TypeError, "Compression level must be an int, got '5'"),
        (("lz4", True), TypeError, "Compression level must be an int, got True"),
        (("gzip",), ValueError, "Compression codec must be None or one of .*, got 'gzip'"),
        (("lz4", 5, 1), TypeError, "Compression auto must be a bool, got 1"),
        (("lz4", 5, False, -1), ValueError, "Compression min_size must be >= 0, got -1"),
        (("lz4", 5, False, 1.5), TypeError, "Compression min_size must be an int, got 1.5"),
    ],
)
def test_a_compression_is_checked_when_made(
    arguments: tuple[Any, ...], error: type[Exception], text: str
) -> None:
    """Compression("lz4", 99) was only refused at the first send, and level "5" as a bare
    TypeError from a comparison."""
    with pytest.raises(error, match=f"^{text}$"):
        Compression(*arguments)


@pytest.mark.parametrize("chosen", ["lz4", "zstd", "blosclz"])
def test_a_0d_array_is_compressed_and_comes_back(chosen: str) -> None:
    """A 0-d array of items wider than a byte crashed the send with numpy's bare ValueError
    ("Changing the dtype of a 0d array ...")."""
    record = np.zeros((), dtype=[("a", "f8", (40_000,))])  # 320 KB in one 0-d element
    record["a"][:] = np.arange(40_000) % 3
    a, b = two_ranks(compress=chosen)
    a.send({"w": np.array(3.5)}, "node0", "node1")  # a frame of 8 bytes (min_size 0)
    a.send(record, "node0", "node1")
    assert sent_bytes(a) < record.nbytes / 3
    got = b.receive("node1", timeout=10).data["w"]
    assert got.shape == () and got.dtype == np.float64 and got == 3.5
    got = b.receive("node1", timeout=10).data
    assert got.shape == () and got.dtype == record.dtype and got.tobytes() == record.tobytes()


def test_a_0d_array_is_compressed_on_a_topic_and_under_auto(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(geode_module, "network_peers", lambda transport: lambda rank: rank == 1)
    record = np.zeros((), dtype=[("a", "i8", (40_000,))])  # compresses far more than twice
    a, b = two_ranks(compress="auto")
    a.send(record, "node0", "node1")
    topics = [g.topic("t", ["node0"], ["node1"], compress="zstd:1") for g in (a, b)]
    topics[0].publish({"w": np.array(2.5)}).wait(timeout=10)
    assert b.receive("node1", timeout=10).data.tobytes() == record.tobytes()
    assert b.receive("node1", topic="t", timeout=10).data["w"] == 2.5


def test_the_other_arrays_of_a_message_with_a_shared_one_are_compressed() -> None:
    """A shared array in a message switched compression off for its other arrays, and
    stats().sent_bytes counted the shared bytes a reference stood for."""
    a, b = two_ranks(compress="lz4")
    counts = compressible(MiB)  # 8 MiB that shrink about 10 times
    field = share(noise(MiB // 8))  # 1 MiB
    sizes = []
    for _ in range(2):
        before = sent_bytes(a)
        a.send({"c": counts, "f": field}, "node0", "node1")
        sizes.append(sent_bytes(a) - before)
        got = b.receive("node1", timeout=10).data
        assert np.array_equal(got["c"], counts) and np.array_equal(got["f"], field)
    assert field.nbytes < sizes[0] < field.nbytes + counts.nbytes / 3  # the field is stored
    assert sizes[1] < counts.nbytes / 3  # a reference to the field: its bytes stayed
    assert a.cache_stats().hits == 1 and a.cache_stats().wire_bytes == sum(sizes)


def test_a_publish_with_a_shared_array_compresses_the_others_and_counts_what_left() -> None:
    hub = InProcHub(3)
    geodes = [Geode(transport=hub.endpoint(rank), compress="lz4") for rank in range(3)]
    subs = ["node0", "node1", "node2"]  # node0 on the publisher's rank: a local copy
    topics = [g.topic("t", ["node0"], subs) for g in geodes]
    counts = compressible(MiB)
    field = share(noise(MiB // 8))
    sizes = []
    for _ in range(2):
        before = sent_bytes(geodes[0], "node0")
        topics[0].publish({"c": counts, "f": field}).wait(timeout=10)
        sizes.append(sent_bytes(geodes[0], "node0") - before)
        for rank, node in enumerate(subs):
            got = geodes[rank].receive(node, topic="t", timeout=10).data
            assert np.array_equal(got["c"], counts) and np.array_equal(got["f"], field)
    # node0's copy holds the field; each other subscriber's holds it once, then a reference
    local = field.nbytes + counts.nbytes / 3
    assert sizes[0] < local * 3 and sizes[1] < local + 2 * counts.nbytes / 3
    assert sizes[1] < sizes[0] - 2 * field.nbytes + 1024


def test_the_level_and_codec_are_written_in_the_table() -> None:
    data = compressible(200_000)
    meta, frames = codec.encode(Message(data), STAMP)
    one, packed_one = shrink(meta, frames, setting("zstd:1"))  # type: ignore[arg-type]
    nine, packed_nine = shrink(meta, frames, setting("zstd:9"))  # type: ignore[arg-type]
    for small, level in ((one, 1), (nine, 9)):
        index, codec_id, got_level, _, raw = struct.unpack_from("<IBBHQ", small, len(small) - 24)
        assert (index, codec_id, got_level, raw) == (
            0,
            compression.CODECS["zstd"],
            level,
            1_600_000,
        )
        assert small[-4:] == b"GZT1"
    assert packed_nine[0].nbytes <= packed_one[0].nbytes


@pytest.fixture
def without_numcodecs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [n for n in sys.modules if n == "numcodecs" or n.startswith("numcodecs.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "numcodecs", None)  # import numcodecs raises ImportError
    yield


def test_asking_for_compression_without_numcodecs_names_the_extra(without_numcodecs: None) -> None:
    for value in ("lz4", "auto"):
        with pytest.raises(ModuleNotFoundError, match=r"geode_mpi\[compress\]"):
            Geode(2, compress=value)
    assert setting("off") == Compression(None)  # off needs nothing


def test_a_compressed_frame_without_numcodecs_is_a_decode_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    meta, frames = codec.encode(Message(compressible(100_000)), STAMP)
    small, packed = shrink(meta, frames, Compression("lz4"))
    monkeypatch.setitem(sys.modules, "numcodecs", None)
    monkeypatch.delitem(sys.modules, "numcodecs.blosc")
    with pytest.raises(DecodeError, match=r"message 7 .*lz4.*geode_mpi\[compress\]"):
        over_the_wire(small, packed)


def damaged(where: str) -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    meta, frames = codec.encode(Message(compressible(100_000)), STAMP)
    small, packed = shrink(meta, frames, Compression("lz4"))
    frame = bytearray(packed[0].tobytes())
    table = bytearray(small)
    if where == "blosc header":
        frame[4] ^= 0xFF  # the raw size Blosc says
    elif where == "payload":
        frame[40] ^= 0xFF
    elif where == "truncated":
        frame = frame[:-10]
    elif where == "table size":
        table[-12] ^= 0x01  # the raw size the table says
    elif where == "table count":
        table[-8] = 200
    elif where == "codec id":
        table[-20] = 99
    return bytes(table), [np.frombuffer(frame, np.uint8)]


@pytest.mark.parametrize(
    "where", ["blosc header", "payload", "truncated", "table size", "table count", "codec id"]
)
def test_a_damaged_compressed_frame_or_table_is_a_decode_error(where: str) -> None:
    meta, frames = damaged(where)
    with pytest.raises(DecodeError, match="message 7 from node index 0"):
        codec.decode(meta, frames, NAMES)


def two_ranks(**options: Any) -> tuple[Geode, Geode]:
    hub = InProcHub(2)
    a, b = (Geode(transport=hub.endpoint(rank), **options) for rank in range(2))
    return a, b


def sent_bytes(geode: Geode, node: str = "node0") -> int:
    return geode.stats(node).sent_bytes


@pytest.mark.parametrize(
    ("geode_setting", "message_setting", "squeezed"),
    [
        (None, None, False),  # off by default
        ("lz4", None, True),
        ("lz4", "off", False),  # the message wins
        ("off", "zstd:2", True),
        (None, "auto", False),  # auto: the in-process hub is no network
    ],
)
def test_the_message_setting_wins_over_the_geodes(
    geode_setting: str | None, message_setting: str | None, squeezed: bool
) -> None:
    a, b = two_ranks(compress=geode_setting)
    data = compressible(MiB // 8)
    a.send(data, dest="node1", compress=message_setting)
    a.isend(data, dest="node1", compress=message_setting).wait(timeout=10)
    assert (sent_bytes(a) < data.nbytes) == squeezed
    for _ in range(2):
        assert np.array_equal(b.receive("node1", timeout=10).data, data)


def test_auto_compresses_towards_network_ranks_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geode_module, "network_peers", lambda transport: lambda rank: rank == 1)
    a, b = two_ranks(compress="auto", nodes=3)
    data = compressible(MiB // 8)
    a.send(data, dest="node1")  # on rank 1: over the network
    over_network = sent_bytes(a)
    a.send(data, dest="node2")  # on rank 0 itself
    assert over_network < data.nbytes / 3 and sent_bytes(a) > over_network + data.nbytes
    a.send(compressible(1000), dest="node1")  # too small to pay
    assert sent_bytes(a) > over_network + data.nbytes + 8000
    assert np.array_equal(b.receive("node1", timeout=10).data, data)
    assert np.array_equal(a.receive("node2", timeout=10).data, data)


@pytest.mark.parametrize(
    ("topic_setting", "message_setting", "squeezed"),
    [(None, None, True), ("off", None, False), ("off", "lz4", True), ("zstd", "off", False)],
)
def test_a_topic_setting_sits_between_the_geode_and_the_message(
    topic_setting: str | None, message_setting: str | None, squeezed: bool
) -> None:
    hub = InProcHub(4)
    geodes = [Geode(transport=hub.endpoint(rank), compress="lz4") for rank in range(4)]
    subs = ["node1", "node2", "node3"]
    topics = [g.topic("t", ["node0"], subs, compress=topic_setting) for g in geodes]
    shrunk: list[int] = []
    real = compression.shrink

    def counted(*args: Any) -> Any:
        shrunk.append(1)
        return real(*args)

    compression.shrink = counted  # type: ignore[assignment]
    try:
        data = compressible(MiB // 8)
        topics[0].publish(data, compress=message_setting).wait(timeout=10)
    finally:
        compression.shrink = real  # type: ignore[assignment]
    assert (sent_bytes(geodes[0]) < data.nbytes) == squeezed
    assert len(shrunk) == int(squeezed)  # once for the three subscribers
    for rank, node in enumerate(subs, start=1):
        assert np.array_equal(geodes[rank].receive(node, topic="t", timeout=10).data, data)


def test_checkpoints_save_decompressed_arrays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = compressible(MiB // 8)
    geode = Geode(2, checkpoint_dir=tmp_path, compress="lz4")
    geode.send(data, dest="node1")
    parcel = geode._runtime.inboxes[1].waiting[0]  # as it waits, still encoded
    meta, frames = parcel.meta, parcel.frames
    assert meta[FLAGS_AT] & FLAG_COMPRESSED and frames[0].nbytes < data.nbytes / 3
    plain, raw = expanded(meta, frames)
    assert not plain[FLAGS_AT] & FLAG_COMPRESSED and raw[0].nbytes == data.nbytes
    geode.checkpoint()
    geode.close()
    monkeypatch.setitem(sys.modules, "numcodecs", None)  # a restart needs no numcodecs
    monkeypatch.delitem(sys.modules, "numcodecs.blosc")
    restored = Geode(2, checkpoint_dir=tmp_path, restart=True)
    assert np.array_equal(restored.receive("node1", timeout=10).data, data)
    restored.close()


@pytest.mark.parametrize(
    ("environ", "network"),
    [
        ({}, False),
        ({"MPIR_CVAR_NOLOCAL": "1", "HYDI_CONTROL_FD": "5"}, True),
        ({"MPIR_CVAR_NOLOCAL": "0", "HYDI_CONTROL_FD": "5"}, False),
        ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_MCA_btl": "tcp,self"}, True),
        ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_MCA_btl": "^tcp"}, False),
        ({"OMPI_COMM_WORLD_SIZE": "2", "MPIR_CVAR_NOLOCAL": "1"}, False),  # not MPICH's
        # MPICH's aliases of MPIR_CVAR_NOLOCAL, and which one wins when several are set
        ({"MPICH_NOLOCAL": "1", "HYDI_CONTROL_FD": "5"}, True),
        ({"MPIR_PARAM_NOLOCAL": "yes", "HYDI_CONTROL_FD": "5"}, True),
        ({"MPICH_NO_LOCAL": "1", "HYDI_CONTROL_FD": "5"}, True),
        ({"MPICH_NOLOCAL": "1", "MPIR_CVAR_NOLOCAL": "0", "HYDI_CONTROL_FD": "5"}, False),
        ({"MPICH_NOLOCAL": "0", "MPIR_PARAM_NO_LOCAL": "1", "HYDI_CONTROL_FD": "5"}, False),
    ],
)
def test_the_network_path_within_a_host_follows_the_mpis_settings(
    environ: dict[str, str], network: bool
) -> None:
    from geode_mpi.transport.paths import network_within_host

    assert network_within_host(environ) is network


def test_the_in_process_transport_reaches_no_rank_over_a_network() -> None:
    from geode_mpi.transport import network_peers

    hub = InProcHub(2)
    reached = network_peers(hub.endpoint(0))
    assert (reached(0), reached(1)) == (False, False)


def test_auto_sends_compressed_only_frames_that_halve() -> None:
    x = np.linspace(0.0, 20.0, 2**18)
    smooth = np.sin(x) * np.exp(-x / 30.0) + 1e-3 * np.cos(50.0 * x)  # shrinks about 1.6 times
    meta, frames = codec.encode(Message(smooth), STAMP)
    assert shrink(meta, frames, setting("auto")) == (meta, frames)  # type: ignore[arg-type]
    _, packed = shrink(meta, frames, setting("lz4"))  # type: ignore[arg-type]
    assert smooth.nbytes / 2 < packed[0].nbytes < smooth.nbytes / 1.1
