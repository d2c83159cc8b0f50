"""`MPITransport`'s set-up: the duplicated communicator and the state its parts share."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from mpi4py import MPI

from geode_mpi.base.backoff import tighten_timer_slack
from geode_mpi.base.gate import PROCESS_GATE
from geode_mpi.base.launch import launch_info, library_family
from geode_mpi.transport.base import SendTicket
from geode_mpi.transport.envelope import INLINE_MAX
from geode_mpi.transport.fanout import FanoutTable, FanTicket
from geode_mpi.transport.mpi_frames import _Held
from geode_mpi.transport.mpi_parts import MPIParts, _Arrival
from geode_mpi.transport.paths import network_ranks
from geode_mpi.transport.pool import BufferPool
from geode_mpi.transport.prepost import Leads
from geode_mpi.transport.relay import Relays
from geode_mpi.transport.shared import NodeShare
from geode_mpi.transport.tally import Tally


class Setup(MPIParts):
    """`MPITransport.__init__` (`MPITransport` inherits it; its Args are there)."""

    if TYPE_CHECKING:  # MPITransport's own (mpi_leads.py)

        def _lead_landed(self, source: int, lead: memoryview) -> None: ...

    def __init__(self, comm: MPI.Intracomm | None = None, *, inline_max: int = INLINE_MAX) -> None:
        super().__init__()
        level = MPI.Query_thread()
        if level < MPI.THREAD_MULTIPLE:
            # MPI lets one thread in at a time in the whole process, not per communicator:
            # every Geode's transport here takes the same gate, so two Geodes driven from
            # two threads never call MPI at once.
            self.gate = PROCESS_GATE
        if level < MPI.THREAD_SERIALIZED:  # geode_mpi's calls may come from any thread
            name = "single" if level == MPI.THREAD_SINGLE else "funneled"
            self.gate.main_only = f"MPI was started at thread level {name!r}"
        base = MPI.COMM_WORLD if comm is None else comm
        self.comm = base.Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.inline_max = inline_max
        self.sent_to = [0] * self.size
        self.received_from = [0] * self.size
        self._active: list[SendTicket] = []
        # Small envelopes waiting to go out together, per destination (see send()): the
        # batch's ticket, whose state holds the batch's parts until it goes out.
        self._batches: dict[int, SendTicket] = {}
        self._batch_since = 0.0  # when the oldest batch began (perf_counter; 0: none)
        self._lazy: dict[int, int] = {}  # dest -> lazy entries in its batch (batch_lazy)
        self._next_test = 0  # where the next poll starts testing, with many sends in flight
        # Per source, made as it first sends something that must wait (`_arrivals_from`,
        # `_frames_from`): a deque is 0.6 KB, and a rank of a big job hears from few peers.
        # A list, not a dict: a source's queue is looked up for every message it sends.
        self._arrivals: list[deque[_Arrival] | None] = [None] * self.size
        # Frames probed (matched, with their sizes) per source, not yet claimed by an envelope.
        self._frames_in: list[deque[_Held] | None] = [None] * self.size
        self._unposted: list[_Held] = []  # held frames whose receive is not posted yet
        self._early: list[_Held] = []  # held frames whose receive is posted (_post_late)
        self._waiting_sources: set[int] = set()
        self._status = MPI.Status()
        self._frame_status = MPI.Status()  # a posted frame's, as it completes (_complete_posted)
        self._closed = False
        self._tally = Tally(self.comm, self.rank, self.size)  # what drain and close count
        self._closing: MPI.Request | None = None  # close()'s barrier, once posted
        self._fanouts = FanoutTable(self.rank)  # the topic streams this rank is in
        self._fan: FanTicket | None = None  # the last small broadcast's (see _batch_to)
        self.pool = BufferPool()
        self._relays = Relays(self.comm, self.pool)  # large broadcasts down a tree
        self.shared = NodeShare(self.comm)  # large broadcasts on this node (transport/shared.py)
        self.oversubscribed = launch_info().oversubscribed
        self.family = library_family(MPI.Get_library_version())  # decides relays (shape_for)
        # Whether MPI reaches each rank over its network path (transport/paths.py). A large
        # message to such a rank sends its envelope first (FRAMES_AFTER): the frames' receives
        # are then posted as the envelope arrives, and the envelope does not wait behind the
        # frames' bytes (see _send_one_frame).
        self.network = network_ranks(self.comm)
        self.frames_after = self.network  # (a test may send everything as over a network)
        # Such a message's envelope goes as a lead, into a receive kept posted for it once its
        # sender has sent one (transport/prepost.py).
        self.leads = Leads(self.comm, self._lead_landed)
        tighten_timer_slack()

    @staticmethod
    def before_finalize(callback: Callable[[], None]) -> None:
        """Have ``callback()`` (the job's end: close every open Geode) run as MPI_Finalize
        begins, if the job calls ``MPI.Finalize()`` itself with a Geode still open: MPI deletes
        the attributes of ``COMM_SELF`` first, while it still works, so what the Geodes hold
        still goes and their close() still meets the other ranks'. Once per process; at a
        normal exit the Geodes are closed before (the `atexit` of `registry`), and then it
        has nothing left to do."""
        if _finalize_hook:
            return

        def delete(_comm: MPI.Comm, _keyval: int, _value: object) -> None:
            try:
                callback()
            except BaseException:  # (MPI_Finalize must go on: say what went wrong)
                import logging  # (not at start-up: only here)

                logging.getLogger("geode_mpi").exception(
                    "closing the open Geodes as MPI.Finalize() began failed"
                )

        keyval = MPI.Comm.Create_keyval(delete_fn=delete)
        MPI.COMM_SELF.Set_attr(keyval, None)
        _finalize_hook.append(keyval)


# The COMM_SELF attribute whose deletion at MPI_Finalize closes the open Geodes (once set)
_finalize_hook: list[int] = []
