"""Leads: the envelopes of large messages to a network peer land in a receive kept posted for
them (transport/prepost.py), and keep their place among the sender's other messages."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from mpi4py import MPI

from geode_mpi import Geode
from geode_mpi.transport import mpi as mpi_transport
from geode_mpi.transport import mpi_setup
from geode_mpi.transport.mpi import MPITransport
from geode_mpi.transport.prepost import ROOM

TIMEOUT = 60.0
KiB = 2**10


def frames_for(source: int, k: int) -> tuple[bytes, list[np.ndarray[Any, Any]], bool]:
    """Message ``k`` from ``source``: (meta, frames, batched), large ones (leads) among small
    batched, unbatched and frameless ones, strided and several-frame ones, one whose envelope
    is too long for a lead."""
    meta = b"%d:%d " % (source, k)
    kind = k % 7
    if kind == 0:
        return meta, [np.arange(10, dtype=np.int16) + k], True
    if kind == 1:
        return meta, [np.full(40 * KiB, k, np.uint8) + source], False  # a lead
    if kind == 2:
        return meta, [], True
    if kind == 3:
        big = np.arange(3 * 30_000, dtype=np.int32)[::3] + k  # strided, and two frames
        return meta, [big, np.full(70 * KiB, source, np.uint8)], False
    if kind == 4:
        return meta * (ROOM // len(meta) + 1), [np.full(20 * KiB, k, np.uint8)], False
    if kind == 5:
        return meta, [np.full(1 * KiB, k, np.uint8)], False
    return meta, [np.arange(300 * KiB // 8, dtype=np.float64) - k], True  # a lead too


def leads_among(count: int) -> int:
    """How many of the first ``count`` messages go as leads (kinds 1, 3, 6)."""
    return sum(1 for k in range(count) if k % 7 in (1, 3, 6))


@pytest.fixture
def transport() -> Iterator[MPITransport]:
    """An MPI transport on COMM_WORLD sending to every rank as over a network (envelope
    first), closed at the end (skips below two ranks)."""
    if MPI.COMM_WORLD.Get_size() < 2:
        pytest.skip("needs two ranks")  # the same on every rank
    made = MPITransport(MPI.COMM_WORLD)
    made.frames_after = lambda rank: rank != made.rank
    yield made
    made.close(TIMEOUT)  # (cancels the standing receives)


def test_every_rank_gets_every_message_in_order_and_leads_land_in_standing_receives(
    transport: MPITransport,
) -> None:
    got: list[tuple[int, bytes, list[bytes]]] = []

    def sink(source: int, meta: memoryview, frames: Sequence[Any], nbytes: int) -> None:
        got.append((source, bytes(meta), [np.ascontiguousarray(f).tobytes() for f in frames]))

    transport.attach(sink)
    rank, size = transport.rank, transport.size
    count = 70
    tickets = []
    for k in range(count):  # to every other rank in turn, everyone at once
        for dest in range(size):
            if dest != rank:
                meta, frames, batched = frames_for(rank, k)
                tickets.append(transport.send(dest, meta, frames, batched))
    transport.flush()
    want = (size - 1) * count
    deadline = time.monotonic() + TIMEOUT
    assert transport.wait(lambda: len(got) == want and all(t.done for t in tickets), deadline), (
        f"{len(got)} of {want} arrived; {transport.pending_summary()}"
    )
    for source in range(size):
        mine = [(meta, frames) for s, meta, frames in got if s == source]
        assert len(mine) == (0 if source == rank else count)
        for k, (meta, frames) in enumerate(mine):
            want_meta, want_frames, _ = frames_for(source, k)
            assert meta == want_meta
            assert frames == [np.ascontiguousarray(f).tobytes() for f in want_frames]
    # Each peer's first lead is probed; it then has a standing receive, which takes the rest.
    leads = transport.leads
    assert leads.probed == size - 1
    assert leads.taken == (size - 1) * (leads_among(count) - 1)
    assert not leads.waiting
    assert not transport.busy


def test_a_peer_that_sent_no_lead_gets_no_standing_receive(transport: MPITransport) -> None:
    transport.attach(lambda source, meta, frames, nbytes: None)
    if transport.rank == 0:
        ticket = transport.send(1, b"small", [np.arange(4)], False)
        assert transport.wait(lambda: ticket.done, time.monotonic() + TIMEOUT)
    transport.drain(TIMEOUT)
    assert transport.leads.slot == {}
    assert (transport.leads.probed, transport.leads.taken) == (0, 0)


@pytest.fixture
def networked(monkeypatch: pytest.MonkeyPatch) -> Iterator[Geode]:
    """A Geode whose transport reaches every other rank as over a network."""
    monkeypatch.setattr(
        mpi_setup, "network_ranks", lambda comm: lambda rank: rank != comm.Get_rank()
    )
    made = Geode()
    yield made
    made.close(timeout=TIMEOUT)


def test_arrays_and_topic_messages_between_networked_geodes_arrive_in_order(
    networked: Geode,
) -> None:
    geode = networked
    transport = geode.transport
    size = transport.size
    here = geode.local_nodes[0]
    firsts = list(geode.nodes[:size])  # one node per rank (node k lives on rank k mod size)
    others = [node for node in firsts if node != here]
    topic = geode.topic("prepost", firsts, firsts)
    count = 30
    for k in range(count):
        for node in others:
            if k % 3 == 0:
                geode.send({"k": k}, dest=node)
            else:
                geode.send(np.full(50 * KiB, k, np.uint8), dest=node)
        if k % 5 == 0:
            topic.publish(np.full(30 * KiB + transport.rank, k, np.uint8), source=here)
    seen: dict[str, list[int]] = {node: [] for node in others}
    published: dict[str, list[int]] = {node: [] for node in firsts}
    want = count * len(others) + (count // 5) * size
    for _ in range(want):
        message = geode.receive(timeout=TIMEOUT)
        data = message.data
        if message.topic is not None:
            assert data.nbytes == 30 * KiB + geode.rank_of(message.source)
            published[message.source].append(int(data[0]))
        else:
            seen[message.source].append(data["k"] if isinstance(data, dict) else int(data[0]))
            if not isinstance(data, dict):
                assert data.nbytes == 50 * KiB and (data == data[0]).all()
    assert all(got == list(range(count)) for got in seen.values()), seen
    assert all(got == list(range(0, count, 5)) for got in published.values()), published
    if size > 1:
        assert isinstance(transport, MPITransport)
        assert transport.leads.taken > 0


def test_a_lead_that_overtakes_a_message_sent_before_it_waits_for_it(
    transport: MPITransport,
) -> None:
    got: list[bytes] = []
    transport.attach(lambda source, meta, frames, nbytes: got.append(bytes(meta)))
    big = np.arange(64 * KiB, dtype=np.uint8)
    if transport.rank == 0:
        tickets = [transport.send(1, b"first lead", [big], False)]
        transport.comm.Barrier()  # (rank 1 has taken it: it has a standing receive now)
        tickets.append(transport.send(1, b"meta alone", [], False))
        tickets.append(transport.send(1, b"second lead", [big], False))
        assert transport.wait(lambda: all(t.done for t in tickets), time.monotonic() + TIMEOUT)
    elif transport.rank == 1:
        assert transport.wait(lambda: got == [b"first lead"], time.monotonic() + TIMEOUT)
        transport.comm.Barrier()
        leads = transport.leads
        deadline = time.monotonic() + TIMEOUT
        # Only the standing receive is polled, so the message before the lead is not probed.
        while not leads.poll() and time.monotonic() < deadline:
            pass
        leads.repost()
        assert got == [b"first lead"]
        assert [number for number, _ in leads.waiting[0]] == [2], leads.summary()
        assert "1 lead(s) from rank 0 waiting for message 2" in transport.pending_summary()
        assert transport.wait(lambda: len(got) == 3, time.monotonic() + TIMEOUT)
        assert got == [b"first lead", b"meta alone", b"second lead"]
        assert not leads.waiting
        assert (leads.probed, leads.taken) == (1, 1)
    if transport.rank > 1:
        transport.comm.Barrier()


def test_a_lead_whose_frame_was_probed_first_posts_that_frames_receive_at_once(
    transport: MPITransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe on any tag can find a lead's frame in the same poll that the lead landed in
    its standing receive: the lead is then handed over by its fast path, which posts the
    probed frame's matched receive (not queued and parsed as a general envelope)."""
    got: list[tuple[bytes, bytes]] = []
    transport.attach(
        lambda source, meta, frames, nbytes: got.append((bytes(meta), bytes(frames[0])))
    )
    big = np.arange(64 * KiB, dtype=np.uint8)
    if transport.rank == 0:
        first = transport.send(1, b"first", [big], False)  # (probed: then a receive stands)
        assert transport.wait(lambda: first.done, time.monotonic() + TIMEOUT)
        MPI.COMM_WORLD.Barrier()
        second = transport.send(1, b"second", [big + 1], False)
        assert transport.wait(lambda: second.done, time.monotonic() + TIMEOUT)
    elif transport.rank == 1:
        assert transport.wait(lambda: len(got) == 1, time.monotonic() + TIMEOUT)
        MPI.COMM_WORLD.Barrier()
        deadline = time.monotonic() + TIMEOUT
        # The frame is visible to a probe once the lead sent before it has landed.
        while not transport.comm.Iprobe(0, mpi_transport.TAG_FRAME):
            assert time.monotonic() < deadline, "the second message's frame never came"
        queued: list[int] = []
        add = transport.leads.add
        monkeypatch.setattr(
            transport.leads, "add", lambda source, lead: (queued.append(source), add(source, lead))
        )
        transport._probe_arrivals()  # a probe on any tag first, as an idle spin does
        assert transport.wait(lambda: len(got) == 2, time.monotonic() + TIMEOUT)
        assert got == [(b"first", big.tobytes()), (b"second", (big + 1).tobytes())]
        assert queued == [], "the lead was queued and parsed as a general envelope"
        assert (transport.leads.probed, transport.leads.taken) == (1, 1)
    else:
        MPI.COMM_WORLD.Barrier()


def test_a_spin_lasts_until_a_large_send_is_done_not_only_its_lead(
    transport: MPITransport,
) -> None:
    """A large message to a network peer is two requests, its lead's and its frame's; the
    lead's completing alone must not end a spin (the wait would pause, yielding the core,
    while the frame's transfer needs both ends polling: Open MPI's ob1/tcp)."""
    got: list[bytes] = []
    transport.attach(lambda source, meta, frames, nbytes: got.append(bytes(meta)))
    big = np.zeros(4 * 2**20, np.uint8)  # past every eager limit on shared memory
    if transport.rank == 0:
        ticket = transport.send(1, b"large", [big], False)
        began = time.perf_counter()
        transport.spin(0.05)
        spun = time.perf_counter() - began
        MPI.COMM_WORLD.send(None, 1, tag=77)  # rank 1 may take it now
        # (Over ofi/tcp MPICH's Isend of the frame is complete once it returns: done at once.)
        assert spun >= 0.05 or ticket.done, f"spun {spun * 1e6:.0f} us, the send not done"
        assert transport.wait(lambda: ticket.done, time.monotonic() + TIMEOUT)
    elif transport.rank == 1:
        MPI.COMM_WORLD.recv(source=0, tag=77)
        assert transport.wait(lambda: got == [b"large"], time.monotonic() + TIMEOUT)


def test_crossing_large_messages_each_arrive_while_their_ranks_spin_on_one_transfer(
    transport: MPITransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one transfer in flight a spin watches only it (`_spin_one`), yet a peer's lead
    that lands meanwhile must end the spin: every rank sends a large message to the next
    while the previous one sends to it, and each must arrive within one long spin."""
    got: list[tuple[int, bytes]] = []
    transport.attach(lambda source, meta, frames, nbytes: got.append((source, bytes(frames[0]))))
    spun_one: list[int] = []
    spin_one = transport._spin_one
    monkeypatch.setattr(
        transport,
        "_spin_one",
        lambda requests, seconds: (spun_one.append(1), spin_one(requests, seconds))[1],
    )
    rank, size = transport.rank, transport.size
    peer, sender = (rank + 1) % size, (rank - 1) % size
    big = np.full(2**20, rank, np.uint8)
    for round_number in range(2):  # (the first probes each lead; a receive stands for the next)
        MPI.COMM_WORLD.Barrier()
        ticket = transport.send(peer, b"crossing", [big + round_number], False)
        began = time.perf_counter()
        while not (ticket.done and len(got) == round_number + 1):
            transport.spin(20.0)  # one spin ignoring the lead would last 20 s
            assert time.perf_counter() - began < TIMEOUT
        took = time.perf_counter() - began
        assert took < 10, f"the exchange took {took:.2f} s: a spin missed the peer's lead"
        assert got[-1] == (sender, (np.full(2**20, sender, np.uint8) + round_number).tobytes())
    # (Ranks outnumbering cores keep the general spin, which yields the core now and then.)
    assert spun_one or transport.oversubscribed, "no spin watched one transfer"
