"""The hang watchdog of a Geode (--hang-timeout): what its rank holds, and when it moved."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geode_mpi.base.failure import rank_label
from geode_mpi.base.listing import counted_nodes
from geode_mpi.transport import WaitNotice, Watchdog, transport_state

if TYPE_CHECKING:
    from geode_mpi.core.runtime import Runtime

# Nodes a line of a report names as not having acknowledged this rank's messages; the others are
# counted (a rank waiting on each of 2,000 peers named every one: 12 P^2 bytes a hang report).
MOST_UNACKED = 4


def _unacked(node: str, count: int) -> str:
    return f"{node} ({count})"


def rank_state(geode: Runtime) -> list[str]:
    """What this rank holds and waits for: its nodes' queues and outboxes, its transfers.

    Only reads: it runs inside waits (close() among them), where a poll or flush could send.
    """
    engine = geode.engine
    names = geode.names
    lines = []
    if geode.sealed and not geode.closed:  # (sealed at close()'s start)
        lines.append("in close(), this rank's end of the job: it waits for every rank to close")
    for index in sorted(engine.stats):
        stats = engine.stats[index]
        unacked = {names[dst]: count for dst, count in engine.unacked_by_dest(index).items()}
        line = (
            f"{names[index]}: {len(engine.inboxes[index])} message(s) queued, "
            f"{stats.received} received, {stats.sent} sent"
        )
        if unacked:
            shown = counted_nodes(unacked, "messages", _unacked, MOST_UNACKED)
            line += f", not yet acknowledged by {shown}"
        lines.append(line)
    lines.append(f"transport: {transport_state(geode.transport)}")
    return lines


def activity(geode: Runtime) -> int:
    """A number that changes whenever a message of this rank moves (sent, received,
    acknowledged, processed)."""
    return sum(
        stats.sent + stats.received + stats.acked + stats.acks_sent + stats.processed
        for stats in geode.engine.stats.values()
    )


def start_watchdog(geode: Runtime, timeout: float | None) -> Watchdog | None:
    """With a hang timeout (--hang-timeout), watch this Geode's waits.

    Collective: on MPI, every rank duplicates the communicator for the watchdog's messages.
    """
    if timeout is None:
        return None
    watchdog = Watchdog(
        timeout,
        lambda: rank_state(geode),
        lambda: activity(geode),
        rank_label(geode.rank, geode.size, geode.node),
        geode.transport.private_comm(),
        geode.node,
    )
    watchdog.install()
    return watchdog


def stop_watchdog(watchdog: Watchdog | None, free: bool) -> None:
    """Stop watching: at close (``free``: collective, the communicator is freed too), or when
    the Geode is dropped on an error (the communicator is left to MPI_Finalize)."""
    if watchdog is None:
        return
    watchdog.uninstall()
    if free and watchdog.comm is not None:
        watchdog.comm.Free()


def start_notice(
    geode: Runtime, after: float | None, hang: float | None, owners: tuple[object, ...]
) -> WaitNotice | None:
    """With a notice time (``GEODE_WAIT_NOTICE``, 60 s unless set; None: off), say once
    when a wait has seen nothing of this rank's open Geodes move for that long (`WaitNotice`;
    ``owners``: this Geode's objects, whose waits are its own)."""
    if after is None:
        return None
    notice = WaitNotice(
        after, lambda: rank_state(geode), lambda: activity(geode), geode.rank, hang, owners
    )
    notice.install()
    return notice


def stop_notice(notice: WaitNotice | None) -> None:
    """Stop the notice of long waits (at close, or when the Geode is dropped on an error)."""
    if notice is not None:
        notice.uninstall()
