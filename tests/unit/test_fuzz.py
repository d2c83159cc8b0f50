"""Hostile bytes: every malformed arrival raises DecodeError or is counted and dropped.

The fuzz run (tests/fuzz_arrival.py, 10^5 frames here) feeds mutated and random frames through
the real arrival path in a subprocess (it starts MPI as a one-rank singleton). The tests after
it pin each kind of damage the fuzzer found, on the in-process transport.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
import time

import numpy as np
import pytest
from mpirun import ROOT, clean_env, python
from test_runs import world as runs_world

from geode_mpi import DecodeError, Geode, Message, codec
from geode_mpi.codec import checksums, header, wire
from geode_mpi.delivery import control
from geode_mpi.transport import InProcHub, fanout
from geode_mpi.transport.envelope import build_envelope, parse_envelope

FUZZ = str(ROOT / "tests" / "fuzz_arrival.py")


def test_fuzz_100k_frames_through_the_real_arrival_path() -> None:
    result = python([FUZZ, "--frames", "100000", "--seed", "13"], timeout=280, env=clean_env())
    assert result.returncode == 0, result.explain()
    lines = result.stdout.splitlines()
    assert lines[0].startswith("100000 frames"), result.explain()
    assert "unexpected: 0" in lines, result.explain()
    # every way out was taken: the harness reaches the decoder, the drop and the error paths
    counts = {line.split(":")[0].strip(): line for line in lines[1:] if ":" in line}
    for outcome in ("DecodeError at arrival", "DecodeError at receive", "clean"):
        assert outcome in counts, result.explain()
    dropped = int(counts["counted and dropped at arrival"].split(":")[1])
    assert dropped > 1000, result.explain()


def test_fuzz_closes_and_frees_each_episodes_world() -> None:
    # An open Geode is held until closed: the fuzzer once kept every episode's, and each full
    # garbage collection walked them all (a 7 s "slow frame" at load 5-10 by frame 82766).
    result = python([FUZZ, "--frames", "4000", "--seed", "13"], timeout=120, env=clean_env())
    assert result.returncode == 0, result.explain()
    assert "  worlds alive at the end: 1" in result.stdout.splitlines(), result.explain()


# -- the codec ----------------------------------------------------------------------------


class Named(Message):
    pass


def _meta(message: Message, **fields: int) -> bytearray:
    meta, frames = codec.encode(message, codec.make_stamp(1, 0, 0.0, 0, 1))
    assert not frames
    out = bytearray(meta)
    offsets = {"name_len": header.NAME_LEN_AT, "data_len": header.DATA_LEN_AT}
    for field, value in fields.items():
        struct.pack_into("<H" if field == "name_len" else "<I", out, offsets[field], value)
    return out


def _sealed(meta: bytes | bytearray) -> bytes:
    """Meta with its checksum made to match again: damage that got past the checksum."""
    out = bytearray(meta)
    body = codec.peek(out).body
    check = checksums.pickled_checksum(out, out[1], out[2], body)
    struct.pack_into("<I", out, header.CHECKSUM_AT, check)
    return bytes(out)


def _with_name(name: bytes) -> bytearray:
    meta = _meta(Named("x"))
    old_len = struct.unpack_from("<H", meta, header.NAME_LEN_AT)[0]
    out = bytearray(meta[: wire.HEAD_SIZE]) + name + meta[wire.HEAD_SIZE + old_len :]
    struct.pack_into("<H", out, header.NAME_LEN_AT, len(name))
    return out


@pytest.mark.parametrize(
    "name",
    [b"\xff\xfe:Named", b":Named", b".relative:Named", b"tests.unit.test_fuzz", b"\x00:x"],
    ids=["not-utf8", "empty-module", "relative-module", "no-colon", "nul"],
)
def test_a_damaged_class_name_is_a_decode_error(name: bytes) -> None:
    meta = _with_name(name)
    with pytest.raises(DecodeError, match="class name|cannot find") as info:
        codec.decode(meta, [], ["a", "b"])
    assert info.value.__cause__ is not None


def test_a_class_name_longer_than_meta_is_a_decode_error() -> None:
    meta = _meta(Named("x"), name_len=60000)
    with pytest.raises(DecodeError, match="class name"):
        codec.decode(meta, [], ["a", "b"])
    with pytest.raises(DecodeError, match="class name"):
        codec.peek(meta)


@pytest.mark.parametrize("rest", [7, (1, 2, 3), ({"h": 1}, [1]), (["not", "a dict"], None)])
def test_a_rest_section_of_the_wrong_shape_is_a_decode_error(rest: object) -> None:
    message = Message("x", headers={"h": 1})
    meta, _ = codec.encode(message, codec.make_stamp(1, 0, 0.0, 0, 1))
    end = wire.HEAD_SIZE + header.data_length(meta)
    damaged = _sealed(bytes(meta[:end]) + pickle.dumps(rest, 5))
    with pytest.raises(DecodeError, match="cannot decode") as info:
        codec.decode(damaged, [], ["a", "b"])
    assert info.value.__cause__ is not None


def test_an_array_frame_that_is_missing_is_a_decode_error() -> None:
    meta, frames = codec.encode(Named(np.arange(5000.0)), codec.make_stamp(1, 0, 0.0, 0, 1))
    assert len(frames) == 1
    with pytest.raises(DecodeError, match="IndexError"):
        codec.decode(meta, [], ["a", "b"])


# -- the envelope -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "value"), [(4, 2), (4, 2**20), (4, 2**32 - 1), (8, 2**31)], ids=str
)
def test_an_envelope_announcing_more_than_it_holds_is_a_decode_error(
    offset: int, value: int
) -> None:
    envelope, _ = build_envelope(b"meta", [np.arange(4.0)], 1024)
    damaged = bytearray(envelope)
    struct.pack_into("<I", damaged, offset, value)  # the frame count, or the meta length
    with pytest.raises(DecodeError, match="do not fit|inline frames that end"):
        parse_envelope(damaged)


def test_inline_frames_past_the_end_of_the_envelope_are_a_decode_error() -> None:
    envelope, _ = build_envelope(b"meta", [np.arange(4.0)], 1024)
    with pytest.raises(DecodeError, match="inline frames that end at byte"):
        parse_envelope(bytearray(envelope[:-8]))


# -- the engine: count and drop at arrival, DecodeError at receive --------------------------


@pytest.fixture
def pair_of_ranks() -> list[Geode]:
    hub = InProcHub(2)
    geodes = [Geode(2, transport=hub.endpoint(rank)) for rank in range(2)]
    yield geodes
    for geode in geodes:
        geode.close()


def _good(seq: int, source: int = 0, dest: int = 1, flags: int = 0) -> bytes:
    meta, _ = codec.encode(Message("ok"), codec.make_stamp(seq, seq, 0.0, source, dest), flags)
    return meta


def _deliver(geode: Geode, meta: bytes, frames: tuple[()] = ()) -> None:
    geode._transport.deliver(0, memoryview(meta), frames, len(meta))


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x03",
        _good(0)[:30],  # a short header
        bytes([header.VERSION + 1]) + _good(0)[1:],  # another codec version, first of its pair
        _good(0, dest=9),  # a node nobody hosts
        _good(0, source=99),  # from a node index this job does not have
        _good(0, dest=7, flags=codec.FLAG_TOPIC),  # a topic nobody created
        codec.encode_control(0, 1, b""),  # an empty control record
        codec.encode_control(0, 1, b"\x01\x00\x00"),  # a short ack
        codec.encode_control(0, 1, control.encode_ack(5, [(0, 3)])),  # for nothing sent
        codec.encode_control(0, 1, control.encode_wave(9, 1)),  # an unknown record type
    ],
    ids=[
        "empty",
        "one-byte",
        "short-header",
        "version",
        "dest",
        "source",
        "topic",
        "empty-control",
        "short-ack",
        "ack-for-nothing",
        "wave-type",
    ],
)
def test_an_arrival_that_cannot_be_routed_is_counted_and_dropped(
    pair_of_ranks: list[Geode], garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    _, receiver = pair_of_ranks
    with caplog.at_level(logging.WARNING, logger="geode_mpi"):
        _deliver(receiver, garbage)
        _deliver(receiver, _good(0))  # the next good message arrives as if nothing happened
    assert receiver._runtime.engine.malformed == {0: 1}
    assert "dropped a malformed arrival from rank 0" in caplog.text
    assert receiver.receive(timeout=5).data == "ok"
    assert receiver.try_receive() is None
    assert receiver.dead_letters() == []


def test_a_run_of_frame_less_arrivals_drops_only_the_bad_one(pair_of_ranks: list[Geode]) -> None:
    _, receiver = pair_of_ranks
    _deliver(receiver, _good(0))  # the pair exists: the run takes the fast path
    metas = [memoryview(m) for m in (_good(1), b"\x03\x00", _good(2), b"", _good(3))]
    receiver._runtime.engine.sink_run(0, metas)
    assert receiver._runtime.engine.malformed == {0: 2}
    assert [receiver.receive(timeout=5).id for _ in range(4)] == [0, 1, 2, 3]


def test_warnings_stop_after_ten_then_come_at_powers_of_ten(
    pair_of_ranks: list[Geode], caplog: pytest.LogCaptureFixture
) -> None:
    _, receiver = pair_of_ranks
    with caplog.at_level(logging.WARNING, logger="geode_mpi"):
        for _ in range(1000):
            _deliver(receiver, b"junk")
    assert receiver._runtime.engine.malformed == {0: 1000}
    assert len(caplog.records) == 10 + 2  # 1..10, 100, 1000


def test_a_damaged_body_raises_decode_error_at_receive_and_is_a_dead_letter(
    pair_of_ranks: list[Geode],
) -> None:
    _, receiver = pair_of_ranks
    _deliver(receiver, _good(0))
    meta = bytearray(_good(1))
    meta[wire.HEAD_SIZE] = 0x80  # a text message whose UTF-8 is damaged
    _deliver(receiver, bytes(meta))
    assert receiver.receive(timeout=5).id == 0
    with pytest.raises(DecodeError, match="UnicodeDecodeError") as info:
        receiver.receive(timeout=5)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
    (dead,) = receiver.dead_letters()
    assert dead.source == "node0" and dead.message is None and dead.seq == 1


def test_a_work_queue_flag_on_a_plain_message_is_a_decode_error(
    pair_of_ranks: list[Geode],
) -> None:
    _, receiver = pair_of_ranks
    _deliver(receiver, _good(0, flags=codec.FLAG_WORK))
    with pytest.raises(DecodeError, match="work queue"):
        receiver.receive(timeout=5)
    assert len(receiver.dead_letters()) == 1


def test_an_ack_range_of_2_64_does_not_hang(pair_of_ranks: list[Geode]) -> None:
    sender, receiver = pair_of_ranks
    sender.send("one", dest="node1")
    assert receiver.receive(timeout=5).data == "one"
    started = time.monotonic()
    payload = control.encode_ack(1, [(0, 2**64 - 1)])
    sender._transport.deliver(1, memoryview(codec.encode_control(1, 0, payload)), (), 0)
    assert time.monotonic() - started < 1.0
    assert sender._runtime.engine.malformed == {}


# -- control records and damaged envelopes among real messages ------------------------------

_FORGED_CONTROL = [
    control.encode_wave(9, 1),  # an unknown record type
    b"",  # empty
    b"\x07junk",  # an unknown type, short
    b"\x01\x00\x00",  # a short ack
    control.encode_ack(5, [(0, 3)]),  # acknowledges nothing sent
]


def test_not_one_drops_a_forged_control_record_itself(pair_of_ranks: list[Geode]) -> None:
    """`Engine._not_one` raised a control record's DecodeError, relying on its callers'
    own try (`sink`, `sink_run`); it now counts and drops it like a damaged run."""
    _, receiver = pair_of_ranks
    engine = receiver._runtime.engine
    for payload in _FORGED_CONTROL:
        engine._not_one(0, memoryview(codec.encode_control(0, 1, payload)))
    assert engine.malformed == {0: len(_FORGED_CONTROL)}


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "run-of-arrivals"])
def test_forged_control_records_between_messages_lose_none_of_them(
    pair_of_ranks: list[Geode], batched: bool
) -> None:
    _, receiver = pair_of_ranks
    engine = receiver._runtime.engine
    _deliver(receiver, _good(0))  # the pair exists: a run of arrivals takes the fast path
    metas = []
    for seq, payload in enumerate(_FORGED_CONTROL, 1):
        metas += [_good(seq), codec.encode_control(0, 1, payload)]
    metas.append(_good(len(_FORGED_CONTROL) + 1))
    if batched:
        engine.sink_run(0, [memoryview(meta) for meta in metas])
    else:
        for meta in metas:
            _deliver(receiver, meta)
    assert engine.malformed == {0: len(_FORGED_CONTROL)}
    ids = [receiver.receive(timeout=5).id for _ in range(len(_FORGED_CONTROL) + 2)]
    assert ids == list(range(len(_FORGED_CONTROL) + 2))
    assert receiver.try_receive() is None
    assert receiver.dead_letters() == []


@pytest.mark.parametrize("way", ["plain", "run", "filtered", "async", "messages-run"])
def test_a_damaged_envelope_met_by_a_receives_own_poll_loses_no_message(
    way: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every 16th receive that finds a message queued polls after taking it
    (`POLL_EVERY_RECEIVES`); the transport's DecodeError (a damaged envelope, raised by the
    call making progress) used to lose that message. It is raised by the next poll."""
    sender, receiver, _ = runs_world()  # (its sender batches as MPI does: isends make runs)
    sender.send("start", dest="node1")  # the pair exists: isends join a run (one queue entry)
    assert receiver.receive().data == "start"
    count = 40
    for k in range(count):
        if way.endswith("run"):
            sender.isend(k, dest="node1")
        else:
            sender.send(k, dest="node1")
    sender.flush()
    transport = receiver._transport
    real = transport.progress
    damaged = [DecodeError("rank 0 sent a message geode_mpi cannot read: forged")]

    def progress() -> bool:
        if damaged:
            raise damaged.pop()
        return real()

    monkeypatch.setattr(transport, "progress", progress)
    receiver._runtime.receives = 0  # the 16th receive from now polls
    got: list[int] = []
    errors: list[DecodeError] = []

    async def iterate() -> None:
        async for message in receiver.messages():
            got.append(message.data)
            if len(got) == count:
                break

    for _ in range(1 if way == "messages-run" else count):
        try:
            if way == "messages-run":
                asyncio.run(iterate())
            elif way == "filtered":
                got.append(receiver.receive(source="node0").data)
            elif way == "async":
                got.append(asyncio.run(receiver.areceive()).data)
            else:
                got.append(receiver.receive().data)
        except DecodeError as exc:
            errors.append(exc)
    assert got == list(range(count))
    assert errors == []
    with pytest.raises(DecodeError, match="forged"):  # the next call that polls says it
        receiver.try_receive()
    assert receiver.try_receive() is None
    for geode in (sender, receiver):
        geode.close()


# -- topic streams' end markers --------------------------------------------------------------


def test_a_forged_stream_end_marker_is_a_decode_error() -> None:
    assert fanout.read_end_marker(fanout.end_marker(2**40), 1) == 2**40
    for forged, why in (
        (fanout.end_marker(7)[:-1], "of 11 bytes, not 12"),
        (fanout.end_marker(7) + b"x", "of 13 bytes, not 12"),
        (b"GDBS" + fanout.end_marker(7)[4:], "with magic b'GDBS'"),
    ):
        with pytest.raises(DecodeError, match=f"rank 3 sent a stream end marker {why}"):
            fanout.read_end_marker(forged, 3)


# A small array of a structured dtype whose pickled state the fuzzer damaged: numpy's
# dtype.__setstate__ crashed the process on it (segmentation fault), in a subprocess here.
DAMAGED_DTYPE_V3 = bytes.fromhex(
    "0302000001000000000000000000000000000000000000000000000001000000000000000000000000000000"
    "d4000000ffffffffffffffff430101009f00000080059594000000000000008c056e756d7079948c05647479"
    "70659493948c0356313294898887945294284b038c017c944e8c0161948c01629486947d9428680768028c02"
    "693494898887945294284b038c013c944e4b0c4b014b107494622e0300000000000000000000000000000000"
    "000000000000000000000003680e4e4e4e4affffffff4affffffff4b007494624b048694754b0c4b014b1074"
    "94622e0300000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000"
)
# (found in codec version 3: its 56-byte header, made a version 4 one)
DAMAGED_DTYPE = bytes([header.VERSION]) + DAMAGED_DTYPE_V3[1:56] + bytes(8) + DAMAGED_DTYPE_V3[56:]


def test_a_damaged_dtype_pickle_is_a_decode_error_not_a_crash() -> None:
    code = (
        "from geode_mpi import DecodeError, codec\n"
        f"meta = bytearray({DAMAGED_DTYPE!r})\n"
        "try:\n"
        "    codec.decode(meta, [], ['a', 'b'])\n"
        "except DecodeError as exc:\n"
        "    print('DecodeError', type(exc.__cause__).__name__)\n"
    )
    result = python(["-c", code], timeout=60, env=clean_env())
    assert result.returncode == 0, result.explain()
    assert result.stdout.split() == ["DecodeError", "TypeError"], result.explain()


def test_structured_and_subarray_dtypes_still_round_trip() -> None:
    dtypes = [
        np.dtype([("a", "<i4"), ("b", ">f8")]),
        np.dtype([("a", "<i4"), ("b", "<f8")], align=True),
        np.dtype([(("title", "a"), ">i2"), ("s", [("x", "u1")], (2,))]),
        np.dtype(("<f4", (2, 3))),
    ]
    for dtype in dtypes:
        data = np.zeros(3, dtype)
        meta, frames = codec.encode(Message(data), codec.make_stamp(1, 0, 0.0, 0, 1))
        got = codec.decode(meta, frames, ["a", "b"]).data
        assert got.dtype == data.dtype and got.shape == data.shape
