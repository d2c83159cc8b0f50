"""The Geode: the public face of a job on this rank (its runtime does the work)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any

from geode_mpi.base.failure import ends_well
from geode_mpi.codec.compression import Compression, setting
from geode_mpi.core.channels import Channels
from geode_mpi.core.checkpoint_policy import check_policy
from geode_mpi.core.checkpointing import Checkpointer
from geode_mpi.core.facade_aio import Asyncio
from geode_mpi.core.facade_bulk import Bulk
from geode_mpi.core.facade_channels import ChannelCalls
from geode_mpi.core.facade_checkpoints import Checkpoints
from geode_mpi.core.facade_lifecycle import Lifecycle
from geode_mpi.core.facade_nodes import NodeCalls
from geode_mpi.core.facade_processing import Processing
from geode_mpi.core.facade_receiving import ReceiveCalls
from geode_mpi.core.facade_sending import SendCalls
from geode_mpi.core.groups import Sequencer
from geode_mpi.core.observe import (
    Observed,
    check_outputs,
    start_notice,
    start_observing,
    start_watchdog,
    stop_notice,
    stop_watchdog,
)
from geode_mpi.core.placement import Placement, node_names
from geode_mpi.core.processing import Processor
from geode_mpi.core.registry import close_all, register, unregister
from geode_mpi.core.runtime import NO_FAST_QUEUE, Runtime
from geode_mpi.core.termination import term_grace as term_grace_of
from geode_mpi.delivery import QueueConfig
from geode_mpi.delivery.cache import budget_of
from geode_mpi.delivery.config import configs_text, node_configs
from geode_mpi.errors import RestartDirError, check_flag, check_timeout
from geode_mpi.tracing import TRACER
from geode_mpi.transport import (
    SETTINGS,
    Collectives,
    PointToPoint,
    StartupNotice,
    Transport,
    hang_timeout,
    network_peers,
    open_world,
    require,
    under_launcher,
    wait_notice,
)


class Geode(
    SendCalls,
    ReceiveCalls,
    NodeCalls,
    Processing,
    ChannelCalls,
    Checkpoints,
    Lifecycle,
    Asyncio,
    Bulk,
):
    """This rank's view of a geode_mpi job: its nodes, and messages between all nodes.

    Creating a Geode is collective when the job runs on several MPI ranks: every rank creates
    it, with the same arguments, in the same order. With one rank (plain ``python job.py`` or
    ``mpiexec -n 1``) all nodes live in this process: the embedded world.

    Args:
        nodes: None for the defaults (``node0``..``node{N-1}`` for N ranks; ``node0``..``node3``
            in the embedded world), a node count, or a list of names. Node k lives on rank
            k mod N.
        transport: a transport to use instead of the one the launch implies (tests use
            `geode_mpi.transport.InProcHub` endpoints to simulate ranks in one process).
        comm: an MPI communicator to use instead of COMM_WORLD.
        acks: keep every sent message in its sender's outbox until the receiver acknowledges
            it (the default; what a checkpoint saves). False sends without tracking; a send
            with ``ack=True`` is tracked anyway.
        queue: the receive-queue settings of every node (default: no capacity limit, automatic
            acks, 3 attempts).
        queues: settings for particular nodes, by name or index, over ``queue``.
        resend_after: seconds after which a message not yet acknowledged is sent again
            (duplicates are dropped by the receiver). None (the default) never resends: MPI
            does not lose messages.
        checkpoint_dir: where `checkpoint` writes (default: the ``GEODE_CHECKPOINT_DIR``
            environment variable, else no checkpoints). One job per directory.
        keep_checkpoints: complete checkpoints to keep there (at least 2).
        restart: load the newest complete checkpoint there first (default: True when the job
            was started with ``python -m geode_mpi --restart``); see `restored_state`.
        checkpoint_every: seconds between the checkpoints `maybe_checkpoint` takes.
        checkpoint_every_messages: messages sent (on any rank) between them.
        term_grace: with a checkpoint directory, the seconds a SIGTERM leaves the process
            (default: ``GEODE_TERM_GRACE``, else 20): the next `maybe_checkpoint` writes a
            last checkpoint and exits 0; a blocking call still waiting after half of it
            raises `Terminated`; at its end the process exits with status 143.
        cache_bytes: the payload cache's budget: bytes of `share`d arrays each rank may hold
            from this one (default: ``GEODE_CACHE_BYTES``, else 64 MiB; 0 turns it off).
        compress: compress large arrays on their way (docs/compression.md): None or "off"
            (the default: topics and messages may still ask), "auto" (Blosc LZ4 towards
            ranks reached over the network path, for arrays of 256 KiB and more that it
            halves), or a codec with an optional level, "lz4", "zstd:3" (always). A topic's
            or a message's own ``compress=`` wins over it. Needs ``geode_mpi[compress]``.
    """

    def __init__(
        self,
        nodes: int | Sequence[str] | None = None,
        *,
        transport: Transport | None = None,
        comm: Any = None,
        acks: bool = True,
        queue: QueueConfig | None = None,
        queues: Mapping[str | int, QueueConfig] | None = None,
        resend_after: float | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        keep_checkpoints: int = 2,
        restart: bool | None = None,
        checkpoint_every: float | None = None,
        checkpoint_every_messages: int | None = None,
        term_grace: float | None = None,
        cache_bytes: int | None = None,
        compress: str | Compression | None = None,
    ) -> None:
        acks = check_flag(acks, "acks")
        if restart is not None:
            restart = check_flag(restart, "restart")
        if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(
                f"checkpoint_dir must be a directory path (a str or os.PathLike) or None, "
                f"got {checkpoint_dir!r}"
            )
        check_policy(keep_checkpoints, checkpoint_every, checkpoint_every_messages)
        budget = budget_of(cache_bytes)
        hang = hang_timeout()  # a bad setting is refused before anything starts
        notice = wait_notice()
        compressing = setting(compress)
        grace = term_grace_of(term_grace)
        check_outputs()  # --stats-json / --trace: a file that cannot be written, refused now
        if restart or (restart is None and os.environ.get("GEODE_RESTART") == "1"):
            check_restart_dir(checkpoint_dir, os.environ.get("GEODE_RESTART_DIR"))
        # MPI's start-up collectives take no timeout: a timer says when they last (one rank
        # that made no Geode leaves the others here for ever), and ends them at --hang-timeout.
        # It starts once MPI is initialised: mpi4py holds the GIL in MPI_Init.
        starting = (
            StartupNotice(notice, hang)
            if transport is None and (notice or hang) and (comm is not None or under_launcher())
            else None
        )
        try:
            if transport is None:
                transport = open_world(comm, None if starting is None else starting.begin)
            # Collectives: the settings check below, close and checkpoints; topics ask for their
            # broadcast streams when one is created (`Channels.topic`).
            require(transport, PointToPoint, "Geode()")
            require(transport, Collectives, "Geode()")
            names = node_names(nodes, transport.size)
            placement = Placement(names, transport.size)
            configs = node_configs(placement.names, placement.index, queue, queues)
            resend_after = check_timeout(resend_after, "resend_after")
            directory = checkpoint_dir or os.environ.get("GEODE_CHECKPOINT_DIR") or None
            # Whether a checkpoint directory is set (not its path: ranks may spell it their own
            # way), agreed here: set on some ranks only, the others never joined the first
            # checkpoint collective and the job hung in Geode().
            checkpointing = f"checkpoint_dir set: {directory is not None} (or GEODE_CHECKPOINT_DIR)"
            settings = f"{(names, acks, resend_after)!r}; {configs_text(configs)}; {checkpointing}"
            transport.check_same(settings.encode(), SETTINGS)
            with gc_paused():  # (each node's queue and counters: see gc_paused)
                self._runtime = runtime = Runtime(transport, placement, configs, acks, resend_after)
        finally:
            if starting is not None:
                starting.cancel()
        runtime.engine.path.cache.budget = budget
        runtime.path.compress = compressing
        runtime.path.network = network_peers(transport)  # (what the transport found)
        self._transport = transport
        self._gate = runtime.gate  # what `locked` holds around the public calls
        self.rank: int = runtime.rank
        self.size: int = runtime.size
        # what `receive` may be told to mean this rank's own node: None, its name, its index
        self._own = (placement.names[self.rank], self.rank)
        self._matchers = {}
        self._processor = Processor(runtime)
        self._channels = Channels(runtime, self._processor)  # its topics and work queues
        self._sequencer = Sequencer(runtime, self._channels.to_owner, self._channels.held)
        runtime.engine.on_forward = self._sequencer.forward
        self._channels.on_room = self._send_held
        self._channels.settle = self._sequencer.settle
        self._checkpointer: Checkpointer | None = None
        self.restored_state: dict[str, Any] | None = None
        if restart is None:
            restart = os.environ.get("GEODE_RESTART") == "1"
        if directory is not None:
            checkpointer = Checkpointer(
                runtime,
                directory,
                keep_checkpoints,
                checkpoint_every,
                checkpoint_every_messages,
                grace,
            )
            checkpointer.topics_made = self._channels.topics
            checkpointer.queues_made = self._channels.work_queues
            checkpointer.patterns_made = self._channels.saved_patterns
            checkpointer.executors_made = self._channels.executors_saved
            checkpointer.released = self._channels.released
            checkpointer.sequencer = self._sequencer
            checkpointer.close_geode = self.close
            self._checkpointer = self._channels.checkpointer = checkpointer
            if restart:
                self.restored_state = checkpointer.restore()
                self._channels.restore_patterns(checkpointer.patterns)
                self._channels.executor_count = checkpointer.executor_count
        elif restart:
            raise ValueError("restart needs a checkpoint_dir (or GEODE_CHECKPOINT_DIR)")
        TRACER.start(self.rank, self.size, names)
        self._watchdog = start_watchdog(runtime, hang)  # --hang-timeout
        self._notice = start_notice(
            runtime, notice, hang, (self, runtime)
        )  # a long wait is never silent
        self._observed = Observed(runtime, self._checkpointer)
        start_observing(self._observed)  # --stats / --trace: what to leave if the job fails
        register(self, self._end, self._report_unreceived)
        hook = getattr(transport, "before_finalize", None)
        if hook is not None:  # (a job's own MPI.Finalize() closes the Geodes first)
            hook(close_all)

    def _send_held(self) -> None:
        """The engine's `on_room`: send on what the sequencers and the work queues hold for
        want of room at their destinations, as far as room has come."""
        self._sequencer.resume()
        self._channels.send_held()

    # -- lifecycle (close and its steps: core/facade_lifecycle.py) ------------------------

    def __enter__(self) -> Geode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None or ends_well(exc):  # (sys.exit(0) in the block: the job's end)
            self._end()
        else:
            # Another rank may never reach close(): do not wait for it while an error unwinds.
            # What isend and publish hold to batch goes all the same (sent, not waited for: a
            # job that catches the error goes on without losing them).
            with suppress(Exception):  # (the error unwinding is the one to see)
                self.flush()
            runtime = self._runtime
            runtime.closed = runtime.sealed = True
            runtime.plain_queue = NO_FAST_QUEUE
            stop_watchdog(self._watchdog, free=False)
            stop_notice(self._notice)
            unregister(self)

    def __repr__(self) -> str:
        state = "closed" if self._runtime.closed else "open"
        return (
            f"<Geode rank {self.rank}/{self.size} node={self.node} "
            f"local={list(self.local_nodes)} {state}>"
        )


def check_restart_dir(own: str | os.PathLike[str] | None, restart_dir: str | None) -> None:
    """Refuse a job whose own checkpoint_dir is not the directory of ``--restart DIR``.

    Raises:
        RestartDirError: both are given and are different directories.
    """
    if own is None or not restart_dir:
        return
    if os.path.realpath(own) != os.path.realpath(restart_dir):
        raise RestartDirError(
            f"--restart {restart_dir!r} names another directory than the job's own "
            f"checkpoint_dir {os.fspath(own)!r}: restart from the directory the job "
            "checkpoints into (or give --restart alone, which uses the job's own)"
        )


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector held off (if it was on) while a Geode makes each
    node's queue and counters: those thousands of new objects each set off a collection that
    scans all the older ones, which made start-up grow faster than the node count (40,000
    nodes in one process: 4.1 s, 1.9 s with it held off). Nothing made there is garbage."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
