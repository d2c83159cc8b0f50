"""Handlers that run inside checkpoint() and maybe_checkpoint(): while a rank waits there for
the others it serves the handlers of ack=True messages and requests; what they did to
``state`` and ``node_state`` is saved with the pairs that say those messages were processed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_checkpoints import barrier

from geode_mpi import Geode, Message

TIMEOUT = 60.0


class Ping(Message):
    """Handled on node1 by appending its data to the rank's state and node1's node state."""


def first_run(directory: Path, call: str, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """node1's rank waits in the checkpoint; rank 0 sends a Ping there (acked, or a request)
    and waits for the ack or reply, so node1's handler runs inside node1's rank's checkpoint
    (in the cut's wait for the other ranks), before rank 0 takes part in it."""
    geode = Geode(checkpoint_dir=directory, checkpoint_every=0)
    state: dict[str, Any] = {"seen": []}
    node_seen: list[int] = []

    @geode.on(Ping, node="node1")
    def handle(msg: Message) -> int:
        state["seen"].append(msg.data)
        node_seen.append(msg.data)
        return int(msg.data) * 10

    def send() -> None:
        if how == "ack":
            geode.isend(Ping(7), "node0", "node1", ack=True).wait(timeout=TIMEOUT)
        else:
            reply = geode.request(Ping(7), "node1", source="node0", timeout=TIMEOUT)
            assert reply.data == 70

    # (past this, node1's rank makes no progress until its checkpoint call: the Ping is
    # handled there)
    barrier(geode.size)
    if geode.rank == 0:
        if call == "checkpoint":
            send()
        else:
            # Sent once every rank voted for the checkpoint: node1's rank is past its vote,
            # in the checkpoint's own wait (as when the Ping arrives late, which the vote's
            # wait would otherwise win whenever rank 0 waited for the ack first).
            checkpointer = geode._checkpointer
            assert checkpointer is not None
            vote = checkpointer._vote

            def vote_then_send(value: int, deadline: float | None) -> int:
                votes = vote(value, deadline)
                send()
                return votes

            monkeypatch.setattr(checkpointer, "_vote", vote_then_send)
    node_state = {"node1": {"seen": node_seen}} if geode.hosts("node1") else None
    if call == "checkpoint":
        assert geode.checkpoint(state=state, timeout=TIMEOUT, node_state=node_state) == 1
    else:
        assert geode.maybe_checkpoint(state=state, timeout=TIMEOUT, node_state=node_state) == 1
    if geode.hosts("node1"):
        assert state["seen"] == [7]  # handled in the checkpoint call
    geode.close(timeout=TIMEOUT)


@pytest.mark.parametrize("how", ["ack", "request"])
@pytest.mark.parametrize("call", ["checkpoint", "maybe_checkpoint"])
def test_a_handler_run_in_the_checkpoint_is_in_its_state(
    directory: Path, call: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Geode() as probe:
        size = probe.size
    if size < 2:
        pytest.skip("needs node1 on a rank of its own that waits in the checkpoint")
    first_run(directory, call, how, monkeypatch)

    again = Geode(checkpoint_dir=directory, restart=True)
    restored = again.restored_state
    epoch = again.restored_epoch
    queued = []
    if again.hosts("node1"):
        while (msg := again.try_receive("node1")) is not None:
            queued.append(msg.data)
        node1_state = again.restored_node_state("node1")
    unacked = again.stats("node0").unacked if again.hosts("node0") else 0
    again.close(timeout=TIMEOUT)  # (before any assertion: a failing rank leaves none waiting)
    assert epoch == 1 and restored is not None
    if again.hosts("node1"):
        # Once in all: the checkpoint says node1 processed it, so its effect is saved.
        assert (restored["seen"], queued) == ([7], [])
        assert node1_state == {"seen": [7]}
    else:
        assert restored["seen"] == []
    assert unacked == 0  # acknowledged (or answered): never sent again
