"""The Geode's nodes and the state of its local ones: names, placement, stats, queues."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.base.gate import locked
from geode_mpi.core.facade import Facade
from geode_mpi.delivery import DeadLetter, NodeStats
from geode_mpi.delivery.cache import CacheStats, share
from geode_mpi.errors import ClosedError, whole
from geode_mpi.transport import Transport

if TYPE_CHECKING:
    import numpy as np
else:  # a job that never asks for a zero-copy array never needs numpy here
    from geode_mpi.base.ondemand import on_first_use

    np = on_first_use("numpy", globals(), "np")


class NodeCalls(Facade):
    """The Geode's calls about nodes and their state (`Geode` inherits them)."""

    # -- nodes -----------------------------------------------------------------------------

    @property
    def node(self) -> str:
        """This rank's own node: ``nodes[rank]``."""
        return self._runtime.placement.names[self.rank]

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node of the job, in index order."""
        return self._runtime.placement.names

    @property
    def local_nodes(self) -> tuple[str, ...]:
        """The nodes this rank hosts (all of them in the embedded world)."""
        return tuple(self._runtime.placement.names[index] for index in self._runtime.local)

    def hosts(self, node: str | int) -> bool:
        """True if this rank hosts ``node``."""
        return self._runtime.placement.index(node) in self._runtime.inboxes

    def rank_of(self, node: str | int) -> int:
        """The rank that hosts ``node``."""
        return self._runtime.placement.rank_of(self._runtime.placement.index(node))

    @property
    def transport(self) -> Transport:
        """The transport this Geode sends through."""
        return self._transport

    @locked
    def flush(self) -> None:
        """Send now the small messages `isend` and `Topic.publish` may be holding to batch, and
        pending acks.

        Any geode_mpi call that waits does this too, and every collective call; call it before
        blocking in MPI calls of your own (or in anything else that does not call geode_mpi)
        right after an `isend` or a publish.
        """
        if not self._runtime.closed:
            self._runtime.engine.flush()

    @locked
    def stats(self, node: str | int | None = None) -> NodeStats:
        """Counters of a local node (default: this rank's node): messages, bytes, acks,
        retries, duplicates dropped, dead letters, queue depth and peak, credit waits."""
        return self._runtime.engine.snapshot(self._runtime.local_index(node, "stats"))

    share = staticmethod(share)  # a read-only copy sent to each rank only once (cache.md)

    @locked
    def zero_copy_array(
        self, shape: int | Sequence[int], dtype: Any = "float64"
    ) -> np.ndarray[Any, Any]:
        """An uninitialised array that a topic publishes to this machine's subscribers without
        a copy: it lives in this rank's part of the node's shared segment (in-process memory
        in the embedded world). Fill it, then publish it, or any part of it that is contiguous.

        Publishing hands it over: from then on it is read-only, for you too (write new data
        into a new one); each subscriber on this machine gets a read-only view of the same
        memory, which stays taken while anyone holds a view of it. Subscribers on other
        machines get copies, as for any array; a point-to-point send copies it too and leaves
        it writable. See docs/topics.md, "Zero-copy arrays".

        Args:
            shape: the array's shape (an int for one dimension).
            dtype: its numpy dtype (default float64); not one of Python objects.

        Returns:
            A writable, C-contiguous numpy array. Ordinary memory (a publish then copies it
            once) if it is under 256 KiB, before the first `topic` (the segment is made
            then), with ``GEODE_SHARED_BYTES=0``, or when this rank's part is full: the
            first time it is full or missing, a `RuntimeWarning` says so.

        Raises:
            ClosedError: this Geode is closed.
            TypeError: ``dtype`` holds Python objects, or ``shape`` is not a shape.
            ValueError: a negative dimension.
        """
        if self._runtime.closed:
            raise ClosedError("zero_copy_array")
        counted = whole(shape)
        if counted is not None:
            dims: tuple[int, ...] = (counted,)
        else:
            extents = () if isinstance(shape, (str, bytes)) else shape
            if not isinstance(extents, Iterable):
                raise TypeError(
                    f"shape must be an int or a tuple of ints (an array's shape), got {shape!r}"
                )
            dims = ()
            for extent in extents:
                counted = whole(extent)
                if counted is None:
                    raise TypeError(f"shape must be a tuple of ints, got {shape!r}")
                dims += (counted,)
        return self._runtime.transport.zero_copy_array(dims, dtype)

    @locked
    def cache_stats(self) -> CacheStats:
        """This rank's payload cache counters: hits, bytes saved, stores, evictions, bytes
        held (see `share`)."""
        return self._runtime.engine.path.cache.stats()

    @locked
    def dead_letters(
        self, node: str | int | None = None, *, clear: bool = False
    ) -> list[DeadLetter]:
        """Messages a local node could not process in ``max_attempts`` tries, oldest first: the
        newest ``QueueConfig.max_dead_letters`` of them (all count in ``stats().dead_letters``).
        ``clear``: also take them out (a long job takes them as they come, and keeps none)."""
        if not isinstance(clear, bool):
            raise TypeError(f"clear must be a bool, got {clear!r}")
        kept = self._runtime.engine.dead.get(self._runtime.local_index(node, "dead_letters"))
        letters = list(kept or ())
        if clear and kept:
            kept.clear()
        return letters

    @locked
    def pending(self, node: str | int | None = None) -> int:
        """How many messages wait in a local node's queue (expired ones dropped first)."""
        inbox = self._runtime.inboxes[self._runtime.local_index(node, "pending")]
        if not self._runtime.closed:
            self._runtime.poll()
            inbox.purge()
        return len(inbox)
