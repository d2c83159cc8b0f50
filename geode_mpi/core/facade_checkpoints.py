"""The Geode's checkpoint calls: take one, take one when due, what was restored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from geode_mpi.base.gate import locked
from geode_mpi.core.facade import Facade


class Checkpoints(Facade):
    """The Geode's checkpoint calls (`Geode` inherits them)."""

    # -- checkpoints -----------------------------------------------------------------------

    @locked
    def checkpoint(
        self,
        state: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        *,
        node_state: Mapping[str | int, Any] | None = None,
    ) -> int:
        """Save the whole job's message state, and ``state``, as one consistent checkpoint.

        Collective: every rank calls it, at the same point of its work. It drains the job (every
        message sent before reaches its queue), then each rank writes its file; it returns the
        checkpoint's epoch once the checkpoint is complete on disk.

        Args:
            state: the job's own data to save beside the queues (str keys; numpy arrays and
                plain values as they are, anything else pickled); read it back after a restart
                from `restored_state`. Read after the drain, so it holds what handlers run
                inside this call (of ack=True messages, requests) did to it.
            timeout: seconds for the whole call (None: no limit).
            node_state: each of this rank's nodes' own data, by node name (any value `state`
                takes); it moves with its node on a restart on another number of ranks: read
                it back from `restored_node_state` on the node's new rank.

        Raises:
            ValueError: no checkpoint directory was given, or ``node_state`` names a node of
                another rank.
            CheckpointError: writing failed, or explicitly acked messages are still in hand.
            GeodeTimeoutError: not complete within ``timeout``.
        """
        if self._checkpointer is None:
            raise ValueError("checkpoint() needs Geode(checkpoint_dir=...) or GEODE_CHECKPOINT_DIR")
        return self._checkpointer.take(state, timeout, node_state)

    @locked
    def maybe_checkpoint(
        self,
        state: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        *,
        node_state: Mapping[str | int, Any] | None = None,
    ) -> int | None:
        """Take a checkpoint if one is due; call it once per step of the job's loop.

        Collective (every rank calls it equally often): due when ``checkpoint_every`` seconds
        passed on rank 0, or ``checkpoint_every_messages`` were sent on some rank, since the last
        checkpoint, or when any rank got SIGTERM (a batch system's time limit): then the
        checkpoint is the last one, the Geode closes, and the job exits with status 0 (restart
        it with ``--restart``). Costs one small collective when nothing is due (two with a
        ``timeout``, which bounds the wait for the other ranks too). Arguments as for
        `checkpoint`.

        Returns:
            The new checkpoint's epoch, or None when none was due.
        """
        if self._checkpointer is None:
            raise ValueError(
                "maybe_checkpoint() needs Geode(checkpoint_dir=...) or GEODE_CHECKPOINT_DIR"
            )
        return self._checkpointer.maybe(state, timeout, node_state)

    @property
    def last_checkpoint(self) -> dict[str, Any] | None:
        """What the last checkpoint of this Geode cost: its epoch, seconds in all and for the
        drain, and bytes written (all ranks, and this rank's file); None before the first."""
        return None if self._checkpointer is None else self._checkpointer.report

    @property
    def restored_epoch(self) -> int | None:
        """The epoch this Geode restarted from (None: it started afresh); later checkpoints
        leave it as it was, as they leave `restored_state`."""
        checkpointer = self._checkpointer
        return None if checkpointer is None else checkpointer.restored_epoch

    def restored_node_state(self, node: str | int, default: Any = None) -> Any:
        """The state ``node`` (hosted by this rank) had at the checkpoint this Geode restarted
        from (`checkpoint`'s ``node_state``), on whichever rank hosts it now; ``default`` when
        none was saved for it."""
        index = self._runtime.placement.index(node)
        checkpointer = self._checkpointer
        saved = {} if checkpointer is None else checkpointer.node_state
        return saved.get(index, default)
