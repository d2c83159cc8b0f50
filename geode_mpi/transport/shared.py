"""Node-local fan-out through MPI-3 shared memory: one copy of a large topic frame per node.

A large broadcast (`SHARED_MIN` bytes of out-of-band frames or more) to member ranks on the
root's node copies its frames once into the root's part of a per-node shared segment
(``MPI.Win.Allocate_shared`` over ``Split_type(COMM_TYPE_SHARED)``), and sends each such member a
*notice* instead of the frames: the slot's number and the frames' offsets, then the usual
envelope (`TAG_SHARED`). Members on other nodes keep the relayed or direct path. The notice
travels on the transport's one communicator like any other envelope, so per (root, member) it
keeps its place in the stream's order, and everything above (dedup, acks, checkpoints) sees an
ordinary arrival whose frames happen to be read-only views of the segment.

Ownership. Each rank owns one part of the segment: a table of flags (`SLOTS` rows, one byte per
rank of the node), a *filled* byte per slot, and the data its slots hold; only the owner
allocates in it (`SlotAllocator`, first fit). Before sending the notices it sets the flag of
every reading member; a reader clears its flag once nothing refers to the message's frames any
more (a `weakref.ref` callback on the object that owns the views' memory, the same reference
count that frees a receive buffer in transport/pool.py). A slot whose flags are all clear is free
again. One writer per byte, so no atomics; the copy, the flags and the filled byte are ordered
by ``Win.Sync`` and the notice's send.

The notice goes before the copy. The owner clears the slot's filled byte, sends the notices,
then copies and sets it; a reader that takes the notice meanwhile (its wake-up, reading the
notice, making the views: the time the copy takes anyway) waits for the byte, polling, before
it hands the message on (`FILL_TIMEOUT` at most). Nothing the owner does between the notices
and the byte waits for another rank, so that wait always ends. A zero-copy array's slot is
filled before its notices.

Zero-copy arrays (`NodeShare.lease`, ``Geode.zero_copy_array``). A slot taken before anything
is written, with this rank's own flag set while the array given out lives (its `Lease`'s
finalizer clears it). The array is the user's to fill; a publish seals it (read-only,
transport/sealed.py) and `place` announces that slot itself, no copy, once the flags of the
readers it names are clear (a reader still holding an earlier publish of it makes this one a
copy: only a reader clears its flag, so the owner sets a flag only when it finds it clear).

- A full segment (too little room, or `SLOTS` messages still held) never blocks: the broadcast
  takes the relayed or direct path instead, with copies of its own; a zero-copy array asked
  for then is process memory (counted in ``fallbacks``, a warning the first time).
- Views are read-only; ``array.copy()`` gives a private writable one.
- A checkpoint saves the data of held messages like any other (the file never refers to the
  segment), so a restart does not need it.
- A rank that dies ends the job (`abort.py`), so no slot outlives its readers.
- Close frees the window collectively over the node, unless some rank of the node still holds a
  view or a zero-copy array: then the segment stays mapped until the process exits (a view
  never dangles).

The segment is allocated lazily, at the first stream opened (every rank opens every stream, in
the same order), with ``GEODE_SHARED_BYTES`` per rank (`DEFAULT_BYTES`; 0 turns the path off).
``GEODE_SHARED_NODE_RANKS=k`` splits each node further into groups of k consecutive ranks (a node
of one rank has no segment): how the tests make a job look like several nodes on one machine.
"""

from __future__ import annotations

import os
import time
import warnings
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mpi4py import MPI

from geode_mpi.errors import DecodeError, GeodeTimeoutError
from geode_mpi.transport.base import Frame
from geode_mpi.transport.envelope import message_bytes, parse_envelope
from geode_mpi.transport.sealed import SHARED_MIN as SHARED_MIN  # (tests import it here)
from geode_mpi.transport.sealed import Sealable
from geode_mpi.transport.shared_lease import BYTES_VARIABLE, Leasing
from geode_mpi.transport.shared_notice import notice_prefix, read_notice_prefix
from geode_mpi.transport.shared_populate import describe, populate, user_stacklevel
from geode_mpi.transport.slots import ALIGN, SLOTS, SlotAllocator

if TYPE_CHECKING:
    import numpy as np
else:
    from geode_mpi.base.ondemand import on_first_use

    np = on_first_use("numpy", globals(), "np")

TAG_SHARED = 0  # a notice: an envelope whose large frames are in the root's shared slot
NODE_VARIABLE = "GEODE_SHARED_NODE_RANKS"
DEFAULT_BYTES = 128 * 2**20
FILL_TIMEOUT = 60.0  # seconds a reader waits for the owner's copy behind a notice (it never stalls)

_leaked: list[Any] = []  # windows whose views outlived close(): mapped until exit


def node_budget() -> int:
    """This rank's share of the segment in bytes (``GEODE_SHARED_BYTES``, else the default).

    Raises:
        ValueError: the variable is not a whole number >= 0.
    """
    text = os.environ.get(BYTES_VARIABLE, "").strip()
    if not text:
        return DEFAULT_BYTES
    if not text.isdigit():
        raise ValueError(f"{BYTES_VARIABLE} must be a whole number of bytes >= 0, got {text!r}")
    return int(text)


class NodeShare(Leasing):
    """This rank's view of its node's shared segment: its own slots, and the other parts.

    Args:
        comm: the transport's communicator.
    """

    def __init__(self, comm: MPI.Intracomm) -> None:
        self.comm = comm
        self.opened = False
        self.enabled = False  # a segment was made: large broadcasts to this node may use it
        self.budget = 0  # this rank's data part in bytes
        self.win: MPI.Win | None = None
        self.node: MPI.Intracomm | None = None
        self.local: dict[int, int] = {}  # comm rank -> node rank, for this node's other ranks
        self.me = 0  # this rank's node rank
        self.parts: list[np.ndarray[Any, Any]] = []  # every node rank's data part
        self.bases: list[int] = []  # the address of each (``ndarray.ctypes`` costs ~10 us)
        self.flags: list[np.ndarray[Any, Any]] = []  # every node rank's flag table
        # Every node rank's filled bytes, by slot: memoryviews, whose indexing costs a tenth of
        # numpy's (see transport/slots.py).
        self.filled: list[memoryview] = []
        self._copy: tuple[int, list[int], Sequence[Frame]] | None = None  # `fill`'s, pending
        self.slots: SlotAllocator | None = None
        self._memory: list[Any] = []  # every node rank's part, as MPI gave it (not numpy yet)
        self._table = 0  # bytes of flags before each part's data
        self._views = 0  # notices received here (counted under the gate)
        # One entry per notice whose views have all gone, appended by its finalizer from any
        # thread (list.append is atomic; a shared `-= 1` could lose a count and free the
        # window under a live view), folded into _gone under the gate.
        self._released: list[None] = []
        # What each live notice's memory owner (a weak reference to it) holds: (owner, slot).
        # A weakref's callback rather than weakref.finalize: a third of the cost per notice.
        self._holders: dict[weakref.ref[Sealable], tuple[int, int]] = {}
        self._splits: dict[tuple[int, ...], tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self._gone = 0
        self.shared = 0  # broadcasts sent through the segment
        self.zero_copy = 0  # of them, published from a zero-copy array (no copy at all)
        self.leased = 0  # zero-copy arrays made in the segment
        self.fallbacks = 0  # zero-copy arrays of SHARED_MIN or more made in process memory
        self._unleased: list[None] = []  # one per lease gone (appended by its finalizer)
        self._warned_lease = 0  # (shared_lease.py's `_warn`)
        self.unbacked = 0  # large broadcasts /dev/shm had no room for (sent as copies)
        # Nonzero (the errno) when /dev/shm had no room for this rank's own flag table at
        # `_map`: then its part is unusable (no slot taken, no zero-copy array made in it).
        self.table_error = 0
        self._warned_unbacked = False
        self._freed = False

    def open(self) -> None:
        """Allocate the segment (collective over the transport's communicator, once)."""
        if self.opened:
            return
        self.opened = True
        budget = self.comm.allreduce(node_budget(), MPI.MIN)  # every rank agrees: on or off
        if budget == 0:
            return  # (no communicator made: GEODE_SHARED_BYTES=0 turns the path off)
        node = MPI.Intracomm(self.comm.Split_type(MPI.COMM_TYPE_SHARED, self.comm.Get_rank()))
        group = os.environ.get(NODE_VARIABLE, "").strip()
        if group.isdigit() and int(group) > 0:
            split = MPI.Intracomm(node.Split(node.Get_rank() // int(group), node.Get_rank()))
            node.Free()
            node = split
        size = node.Get_size()
        if size == 1:
            node.Free()
            return
        table = -(-(SLOTS * size + SLOTS) // ALIGN) * ALIGN
        win = MPI.Win.Allocate_shared(table + budget, 1, comm=node)
        win.Lock_all(MPI.MODE_NOCHECK)
        self.win, self.node, self.me = win, node, node.Get_rank()
        self._memory = [win.Shared_query(rank)[0] for rank in range(size)]
        self._table, self.budget, self.enabled = table, budget, True
        here, there = node.Get_group(), self.comm.Get_group()
        ranks = here.Translate_ranks(list(range(size)), there)
        here.Free()
        there.Free()
        self.local = {int(rank): index for index, rank in enumerate(ranks) if index != self.me}
        self._splits.clear()

    def _map(self) -> SlotAllocator:
        """numpy views of every part, made at the first large broadcast (a job that sends no
        arrays never imports numpy), and this rank's allocator."""
        if self.slots is None:
            table, size = self._table, len(self._memory)
            for memory in self._memory:
                whole = np.asarray(memory).view(np.uint8)
                self.flags.append(whole[: SLOTS * size].reshape(SLOTS, size))
                self.filled.append(whole[SLOTS * size : SLOTS * size + SLOTS].data)
                self.parts.append(whole[table:])
                self.bases.append(int(whole.ctypes.data) + table)
            # This rank's table is written at its first slot (a row's flags, a filled byte):
            # back it now, or that write into a full /dev/shm raises SIGBUS. Other ranks only
            # touch it after a notice of this rank's, so after it is backed.
            self.table_error = populate(self.bases[self.me] - table, table)
            self.slots = SlotAllocator(self.budget, self.flags[self.me])
        return self.slots

    def split(self, members: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``members`` on this node (to share with) and the others (kept per stream's member
        tuple: ``local`` is fixed once the segment is made)."""
        key = tuple(members)
        known = self._splits.get(key)
        if known is None:
            local = self.local
            known = self._splits[key] = (
                tuple(member for member in members if member in local),
                tuple(member for member in members if member not in local),
            )
        return known

    def place(self, near: Sequence[int], oob: Sequence[Frame], envelope: bytes) -> bytes | None:
        """The notice of frames in a slot read by ``near``: a published zero-copy array's own
        (filled), else a slot to copy them into, by `fill` once the notices are sent; None
        when the segment has no room."""
        win = self.win
        assert win is not None
        slots = self.slots if self.slots is not None else self._map()
        # (no zero-copy array was ever made in this segment: none of these frames is one)
        slot, offsets = self._handed_over(near, oob) if self.leased else (-1, [])
        filled = self.filled[self.me]
        if slot < 0:
            local = self.local
            sizes = [frame.nbytes for frame in oob]
            if self.table_error:
                self._unbacked(self.table_error, sum(sizes))
                return None
            taken = slots.take(sizes, [local[m] for m in near])
            if taken is None:
                return None
            slot, offsets = taken
            if not self._backed(slot, offsets[0], offsets[-1] + sizes[-1] - offsets[0]):
                return None
            filled[slot] = 0  # (before the notices: a reader may see them at once)
            self._copy = (slot, offsets, oob)
        else:
            filled[slot] = 1
        win.Sync()
        self.shared += 1
        return notice_prefix(slot, offsets) + envelope

    def _backed(self, slot: int, offset: int, length: int) -> bool:
        """Back the bytes of ``slot`` that `fill` will copy to (`populate`); False, the slot
        given back and a warning the first time, if the file system has no room for them (a
        copy into them would kill the process with SIGBUS)."""
        error = self.back(offset, length)
        if not error:
            return True
        assert self.slots is not None
        self.slots.give_back(slot)
        self._unbacked(error, length)
        return False

    def _unbacked(self, error: int, length: int) -> None:
        """Count a large broadcast that /dev/shm has no room for (it goes as copies), with a
        warning the first time, at the user's line."""
        self.unbacked += 1
        if not self._warned_unbacked:
            self._warned_unbacked = True
            warnings.warn(
                f"geode_mpi: no room in /dev/shm for {length} bytes of a large topic message "
                f"in the node's shared segment ({describe(error)}); it and any other that does "
                "not fit go to this node's subscribers as copies instead (free space in "
                "/dev/shm, or set GEODE_SHARED_BYTES=0 to stop using it)",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )

    def fill(self) -> None:
        """Copy the frames `place` gave a slot (after its notices went) and mark it filled."""
        if self._copy is None:
            return
        slot, offsets, oob = self._copy
        self._copy = None
        part = self.parts[self.me]
        for frame, offset in zip(oob, offsets, strict=True):
            into = part[offset : offset + frame.nbytes]
            if frame.flags.c_contiguous:
                into[...] = frame
            else:  # a strided frame (`mpi_streams.flat_frames`): its elements in C order
                np.copyto(into.view(frame.dtype).reshape(frame.shape), frame)
        assert self.win is not None
        self.win.Sync()  # the data before the byte
        self.filled[self.me][slot] = 1

    def read(self, source: int, buffer: bytearray) -> tuple[memoryview, list[Any], int]:
        """A notice from ``source``: its meta, its frames (the large ones read-only views of
        the root's slot, freed when the last of them is) and its size in bytes.

        Raises:
            DecodeError: not a notice this rank can read.
        """
        owner = self.local.get(source)
        win = self.win
        if owner is None or win is None:
            raise DecodeError(f"rank {source} sent a shared-memory notice, not from this node")
        if self.slots is None:
            self._map()
        slot, offsets, start = read_notice_prefix(buffer, source)
        count = len(offsets)
        try:
            meta, inline, oob = parse_envelope(memoryview(buffer)[start:])
        except ValueError as exc:
            raise DecodeError(f"rank {source} sent a message geode_mpi cannot read: {exc}") from exc
        if len(oob) != count or not count:
            raise DecodeError(f"rank {source} sent a notice of frames outside its segment")
        first = offsets[0]
        end = first + oob[0][0]
        if count > 1:
            for offset, (size, _) in zip(offsets, oob, strict=True):
                if offset < first:
                    first = offset
                if offset + size > end:
                    end = offset + size
        if first < 0 or end > self.budget or any(size < 0 for size, _ in oob):
            raise DecodeError(f"rank {source} sent a notice of frames outside its segment")
        win.Sync()
        if not self.filled[owner][slot]:
            self._until_filled(source, owner, slot)
        holder = Sealable(self.bases[owner] + first, end - first, sealed=True)
        whole = np.asarray(holder)  # read-only; every view of it keeps holder alive
        self._holders[weakref.ref(holder, self._release)] = (owner, slot)
        self._views += 1
        if count == 1:  # the one frame is the whole of it
            frames = [whole if frame is None else frame for frame in inline]
        else:
            views = iter(
                whole[offset - first : offset - first + size]
                for offset, (size, _) in zip(offsets, oob, strict=True)
            )
            frames = [next(views) if frame is None else frame for frame in inline]
        return meta, frames, message_bytes(meta, inline, oob)

    def _until_filled(self, source: int, owner: int, slot: int) -> None:
        """Wait, polling, until rank ``source`` (node rank ``owner``) has copied the frames of
        its notice into ``slot`` (it sends the notice first: see the module's docstring)."""
        filled = self.filled[owner]
        assert self.win is not None
        deadline = time.monotonic() + FILL_TIMEOUT
        while not filled[slot]:
            os.sched_yield()  # (the owner, copying, may need this core)
            if time.monotonic() > deadline:
                raise GeodeTimeoutError(
                    f"rank {source} sent a shared-memory notice but did not fill its slot "
                    f"{slot} within {FILL_TIMEOUT} s"
                )
        self.win.Sync()  # the byte before the data

    def _release(self, holder: weakref.ref[Sealable]) -> None:
        # A notice's memory owner is gone (a weakref callback: any thread, any time): one
        # byte of this rank's, no MPI call.
        owner, slot = self._holders.pop(holder)
        self._released.append(None)
        if not self._freed:
            self.flags[owner][slot, self.me] = 0

    @property
    def held(self) -> int:
        """Notices received here whose views are still alive, and zero-copy arrays of this
        rank's part still alive."""
        count = len(self._released)
        del self._released[:count]  # (what a finalizer appends meanwhile stays)
        self._gone += count
        count = len(self._unleased)
        del self._unleased[:count]
        self._gone += count
        return self._views + self.leased - self._gone

    def close(self) -> None:
        """Free the segment, collectively over the node (every rank of the node calls it),
        unless a rank still holds views of it: then keep it mapped until the process exits."""
        win, node = self.win, self.node
        if win is None or node is None or self._freed:
            return
        self._freed = True
        held = node.allreduce(self.held, MPI.MAX)
        win.Unlock_all()
        if held:
            self._freed = False  # the views still release their slots: nobody reuses them
            _leaked.append((win, node))
            return
        self.parts.clear()
        self.bases.clear()
        self.flags.clear()
        self.filled.clear()
        self._memory.clear()
        self.enabled = False
        win.Free()
        node.Free()

    def summary(self) -> str:
        """What the segment holds, for diagnostics ("" when nothing)."""
        if self.slots is None:
            return ""
        self.slots.reclaim()
        if not (len(self.slots) or self.held):
            return ""
        return f"{len(self.slots)} shared slot(s) of this rank held, {self.held} held here"
