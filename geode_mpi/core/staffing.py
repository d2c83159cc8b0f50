"""An executor's nodes (its client, its workers, its queue's name), and `open_executor`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from geode_mpi.core.executor import GeodeExecutor
from geode_mpi.delivery.pairs import drop_idle
from geode_mpi.errors import ThreadError

if TYPE_CHECKING:
    from geode_mpi.core.channels import Channels
    from geode_mpi.core.placement import Placement
    from geode_mpi.core.runtime import Runtime


def open_executor(
    runtime: Runtime,
    channels: Channels,
    client: str | int | None,
    workers: Sequence[str | int] | None,
    prefetch: int,
) -> GeodeExecutor:
    """`Geode.executor`: check the arguments, create the work queue (collective).

    Raises:
        RuntimeError: called inside the ``with`` block of another executor (on every rank).
    """
    made = channels.executors_made
    check_outside_blocks(made, runtime.rank)
    channels.release_finished()
    engine = runtime.engine
    channels.finished_pairs = drop_idle(
        channels.finished_pairs, engine.pairs_out, engine.pairs_in, engine.resend_after is not None
    )
    chosen, taking, k = staff(runtime, channels, client, workers)
    number = channels.executor_number(k)
    queue = channels.work_queue(f"executor-{k}", taking, chosen, [chosen], prefetch, number)
    channels.executor_count = k
    queue.executor = True
    pairs = [(number, worker) for worker in taking]
    return GeodeExecutor(runtime, queue, chosen, taking, made, partial(forget, channels, pairs))


def forget(channels: Channels, pairs: list[tuple[int, int]], executor: GeodeExecutor) -> None:
    """Let go of a finished executor on this rank (`GeodeExecutor.finished`): its work queue,
    and itself (with its threads, futures and queues), so that a job making one executor after
    another holds only those not finished; its queue's ``pairs`` (stream, worker) go at the
    next executor, once idle (`drop_idle`: an ack may still be on its way now)."""
    channels.finished_pairs += pairs
    if executor in channels.executors_made:
        channels.executors_made.remove(executor)
    if executor in channels.executors:
        channels.executors.remove(executor)
    channels.release(executor.queue)


def check_outside_blocks(made: Sequence[GeodeExecutor], rank: int) -> None:
    """Refuse a new executor inside another's ``with`` block, on every rank alike (the same
    script): there a worker rank's ``__enter__`` serves until the client's block ends, so it
    could not make the new one with the client's rank, and both would wait for ever.

    Raises:
        RuntimeError: naming the open block's executor and what to do instead.
    """
    for old in made:
        if old.in_block:
            raise RuntimeError(
                f"geode.executor() on rank {rank} inside the with block of executor "
                f"{old.name!r}: a worker rank's with serves tasks until the client's block "
                "ends, so it cannot create the new executor together with the client's rank "
                "(a collective call). Create both before the first with: `first, second = "
                "geode.executor(), geode.executor()`, then `with first as a, second as b:`"
            )


def staff(
    runtime: Runtime,
    channels: Channels,
    client: str | int | None,
    workers: Sequence[str | int] | None,
) -> tuple[int, list[int], int]:
    """`Geode.executor`'s arguments checked: (the client's node index, the workers', k: its
    work queue is ``executor-k``, numbered `Channels.executor_number`), the same on every
    rank.

    Raises:
        ThreadError: MPI runs at a thread level where the client's thread may not call it.
        TypeError, ValueError: ``workers`` is not a list of distinct nodes.
    """
    if runtime.gate.main_only is not None:  # (the same on every rank: none goes on alone)
        raise ThreadError(
            f"geode.executor() does its client's work in a thread, but {runtime.gate.main_only}:"
            " start MPI at level 'serialized' or 'multiple' (mpi4py.rc.thread_level)"
        )
    placement = runtime.placement
    chosen = 0 if client is None else placement.index(client, "client")
    if workers is None:
        taking = default_workers(placement, chosen, runtime.size)
    else:
        taking = placement.indices(workers, "workers", "worker")
        if not taking or len(set(taking)) != len(taking):
            raise ValueError(f"workers must be distinct nodes, at least one, got {workers!r}")
    # After every executor made, never a work queue's name: one of the job's (each made on
    # every rank; a finished executor's, let go of, is never made again), nor one saved in the
    # checkpoint this job restarted from (restored, it would be finished, with no worker
    # asking): the same on every rank.
    taken = {queue.name for queue in channels.work_queues.values() if not queue.executor}
    if channels.checkpointer is not None:
        taken |= set(channels.checkpointer.queues) | channels.checkpointer.dropped
    after = channels.executor_count + 1
    k = next(k for k in itertools.count(after) if f"executor-{k}" not in taken)
    return chosen, taking, k


def default_workers(placement: Placement, client: int, size: int) -> list[int]:
    """The first node of every rank but the client's. In a job of one rank, where one thread
    runs every task anyway, one node: the first but the client (the client in a job of one
    node), so that each task waits to be handed out, cancellable, until that thread is free."""
    client_rank = placement.rank_of(client)
    firsts = [placement.hosted_by(rank)[0] for rank in range(size) if rank != client_rank]
    if firsts:
        return firsts
    others = [index for index in range(len(placement.names)) if index != client]
    return others[:1] or [client]
