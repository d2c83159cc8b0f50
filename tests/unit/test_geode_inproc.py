"""The Geode on in-process transports: the embedded world and simulated ranks in one process."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from geode_mpi import (
    ClosedError,
    EncodeError,
    Geode,
    Message,
    NodeNotLocalError,
    ReceiveTimeout,
    SendTimeout,
    UnknownNodeError,
    WorldMismatchError,
)
from geode_mpi.transport import InProcHub


def world(size: int, nodes: object = None) -> list[Geode]:
    hub = InProcHub(size)
    return [Geode(nodes, transport=hub.endpoint(rank)) for rank in range(size)]  # type: ignore[arg-type]


def test_embedded_world_has_four_nodes_in_one_process() -> None:
    g = Geode()
    assert (g.rank, g.size, g.node) == (0, 1, "node0")
    assert g.nodes == ("node0", "node1", "node2", "node3") == g.local_nodes
    g.close()


def test_the_original_hello_flow() -> None:
    g = Geode()

    class MyMessage(Message):
        def __init__(self, data: object) -> None:
            super().__init__(data)

    g.send(MyMessage("Hello, World!"), "node1", "node2")
    got = g.receive("node2")
    assert got.data == "Hello, World!" and isinstance(got, MyMessage)
    assert (got.source, got.dest, got.seq, got.type) == ("node1", "node2", 0, "MyMessage")


def test_placement_node_k_on_rank_k_mod_size() -> None:
    ranks = world(2, nodes=5)
    assert ranks[0].local_nodes == ("node0", "node2", "node4")
    assert ranks[1].local_nodes == ("node1", "node3")
    assert ranks[1].rank_of("node4") == 0 and ranks[0].rank_of(3) == 1
    assert ranks[0].hosts("node2") and not ranks[0].hosts("node1")


def test_named_nodes_and_integer_addresses() -> None:
    a, b = world(2, nodes=["producer", "consumer"])
    assert (a.node, b.node) == ("producer", "consumer")
    a.send(np.arange(3), dest=1)
    assert b.receive(source="producer").data.tolist() == [0, 1, 2]


def test_send_from_a_node_hosted_elsewhere_does_nothing_here() -> None:
    a, b = world(2)
    elsewhere = a.send("x", "node1", "node0")
    assert not elsewhere.local and elsewhere.done() and elsewhere.acked
    assert (elsewhere.id, elsewhere.seq, elsewhere.source, elsewhere.dest) == (
        None,
        None,
        "node1",
        "node0",
    )
    elsewhere.wait(timeout=0)  # nothing to wait for here
    assert b.send("x", "node1", "node0").local
    assert a.receive(timeout=1).source == "node1"
    assert a.pending() == 0  # the first call sent nothing


def test_receive_on_another_ranks_node_is_an_error_not_a_hang() -> None:
    a, _ = world(2)
    with pytest.raises(NodeNotLocalError, match=r"receive\('node1'\) was called on rank 0"):
        a.receive("node1")


def test_fifo_per_source_and_filters() -> None:
    g = Geode()
    for k in range(5):
        g.send(k, "node1", "node0")
        g.send(-k, "node2", "node0")
    assert [g.receive(source="node2").data for _ in range(5)] == [0, -1, -2, -3, -4]
    assert [g.receive().data for _ in range(5)] == [0, 1, 2, 3, 4]
    assert g.try_receive() is None


def test_type_filter_by_class_name_and_subclass() -> None:
    class Base(Message):
        pass

    class Child(Base):
        pass

    g = Geode()
    g.send("plain", dest="node0")
    g.send(Child(1), dest="node0")
    assert isinstance(g.receive(type=Base), Child)
    assert g.receive(type="Message").data == "plain"


def test_sequence_numbers_and_ids() -> None:
    g = Geode()
    handles = [g.send(k, "node1", "node2") for k in range(3)]
    other = g.send("x", "node1", "node3")
    assert [h.seq for h in handles if h] == [0, 1, 2] and other is not None and other.seq == 0
    ids = [h.id for h in handles if h] + [other.id]
    assert len(set(ids)) == 4


def test_isend_handle() -> None:
    g = Geode()
    handle = g.isend(np.zeros(10), dest="node1")
    assert handle is not None and handle.done()
    handle.wait(timeout=0)
    assert "done" in repr(handle)


def test_receive_timeout_names_what_it_waited_for() -> None:
    g = Geode()
    g.send("other", "node2", "node0")
    with pytest.raises(ReceiveTimeout) as info:
        g.receive(source="node1", type="Message", timeout=0.01)
    text = str(info.value)
    assert "receive on node0 found no message (source=node1, type=Message)" in text
    assert "none can arrive: in a one-process world" in text
    assert "1 other message(s) are queued" in text
    assert isinstance(info.value, TimeoutError)


def test_a_receive_without_a_node_names_the_ranks_other_nodes_that_hold_messages() -> None:
    """A newcomer's first mistake: sent to node1, `receive()` takes node0's. Before, the error
    said only ``(send first)``."""
    g = Geode()
    g.send("x", "node0", "node1")
    g.send("y", "node0", "node3")
    g.send("z", "node0", "node3")
    with pytest.raises(ReceiveTimeout) as info:
        g.receive()
    assert str(info.value).endswith(
        "; messages are queued at this rank's other node(s): node1 (1), node3 (2) (receive() "
        "without a node takes node0's; name the node to take another's: receive('node1'))"
    )
    with pytest.raises(ReceiveTimeout) as named:
        g.receive("node0")  # (named: no hint)
    assert "other node(s)" not in str(named.value)
    g.close(timeout=5)


def test_receive_without_timeout_in_one_process_fails_at_once_instead_of_hanging() -> None:
    g = Geode()
    with pytest.raises(ReceiveTimeout, match="none can arrive"):
        g.receive()


def test_timeout_values_are_checked() -> None:
    g = Geode()
    with pytest.raises(ValueError, match="timeout must be >= 0, got -1"):
        g.receive(timeout=-1)
    with pytest.raises(TypeError, match="timeout must be a number of seconds or None"):
        g.receive(timeout="soon")  # type: ignore[arg-type]


def test_unknown_nodes_are_named_with_the_valid_ones() -> None:
    g = Geode()
    with pytest.raises(
        UnknownNodeError, match="unknown dest 'node9': this job has nodes node0..node3"
    ):
        g.send(1, dest="node9")
    with pytest.raises(UnknownNodeError, match="unknown source 7"):
        g.send(1, source=7, dest="node0")
    with pytest.raises(UnknownNodeError, match="unknown node 'nodeX'"):
        g.receive("nodeX")
    with pytest.raises(TypeError, match="needs a dest"):
        g.send(1)
    with pytest.raises(TypeError, match=r"needs a dest: .* or isend\(message, dest="):
        g.isend(1)  # (the text names isend, not only send)


def test_node_list_validation() -> None:
    with pytest.raises(ValueError, match="node names must be unique, got 'a' twice"):
        Geode(["a", "a"])
    with pytest.raises(ValueError, match="every rank must host at least one node"):
        world(3, nodes=2)
    with pytest.raises(TypeError, match="nodes must be an int, a list of names or None"):
        Geode("node0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nodes must be >= 1, got 0"):
        Geode(0)


def test_ranks_that_disagree_about_nodes_are_stopped() -> None:
    hub = InProcHub(2)
    Geode(2, transport=hub.endpoint(0))
    with pytest.raises(
        WorldMismatchError, match="rank 1 disagrees with rank 0 about the node names"
    ):
        Geode(["a", "b"], transport=hub.endpoint(1))


def test_close_and_context_manager() -> None:
    with Geode() as g:
        g.send("kept", dest="node1")
    assert g.closed
    assert g.receive("node1").data == "kept"
    for call in (lambda: g.send(1, dest="node0"), lambda: g.isend(1, dest="node0")):
        with pytest.raises(ClosedError, match="on a closed Geode"):
            call()
    with pytest.raises(ClosedError, match=r"receive\(\) on a closed Geode"):
        g.receive("node1", timeout=5)
    g.close()  # closing twice is fine


def test_receive_many_on_a_closed_geode_names_itself() -> None:
    with Geode() as g:
        for k in range(2):
            g.send(k, dest="node0")
    # What was queued before the close is still taken.
    assert [m.data for m in g.receive_many(limit=1)] == [0]
    assert g.try_receive().data == 1
    # Then receive_many says it is closed, by its own name (it said receive()).
    for call in (lambda: g.receive_many(timeout=0), lambda: g.receive_many("node3", source=0)):
        with pytest.raises(ClosedError, match=r"^receive_many\(\) on a closed Geode"):
            call()
    with pytest.raises(ClosedError, match=r"^receive\(\) on a closed Geode"):
        g.receive(timeout=0)
    # try_receive keeps returning None there: draining what close() delivered with
    # ``while geode.try_receive() is not None`` is how jobs/sweep.py ends (tests/test_jobs.py).
    assert g.try_receive() is None
    assert g.try_receive("node2", source="node1") is None


def test_received_arrays_are_private_copies() -> None:
    g = Geode()
    data = np.arange(100_000.0)
    g.send(data, dest="node1")
    data[:] = -1  # send returned: the data may be reused
    got = g.receive("node1").data
    assert got[0] == 0 and got[-1] == 99_999 and got.flags.writeable


def test_send_timeout_is_a_timeout_error() -> None:
    error = SendTimeout(5, "node0", "node1", 0.5)
    assert isinstance(error, TimeoutError)
    assert "send of message 5 from node0 to node1 did not complete within 0.5 s" in str(error)


def test_repr_is_informative() -> None:
    g = Geode()
    assert repr(g) == "<Geode rank 0/1 node=node0 local=['node0', 'node1', 'node2', 'node3'] open>"
    g.send(Message([1, 2]), dest="node0")
    assert "Message id=0 node0->node0 seq=0" in repr(g.receive())


def test_a_bad_send_timeout_sends_nothing() -> None:
    g = Geode()
    with pytest.raises(ValueError, match="timeout must be >= 0, got -1"):
        g.send("x", dest="node1", timeout=-1)
    assert g.pending("node1") == 0


def test_numpy_integers_address_nodes_and_bad_types_are_named() -> None:
    g = Geode()
    g.send("to two", dest=np.int64(2))
    assert g.receive(np.int32(2)).data == "to two"
    with pytest.raises(UnknownNodeError, match=r"unknown dest \[1\]"):
        g.send("x", dest=[1])  # type: ignore[arg-type]


@pytest.mark.parametrize("dest", [1.0, True, np.float64(1.0), np.bool_(True)])
def test_a_float_or_bool_dest_is_refused_after_sends_to_its_int(dest: object) -> None:
    # The send paths keep node1's lane under the dest they were given (1), and a dict finds
    # it under 1.0 and True too (equal, one hash): send(dest=1.0) went to node1 once a send
    # to 1 had gone before, while 1.5 (and 1.0 on a first send) was refused.
    g = Geode()
    for send in (g.send, g.isend):
        send("first", dest=1)
        send("again", dest=np.int64(1))  # numpy integers are node indices
    g.isend_many(["batch"], dest=1)
    kind = type(dest).__name__
    refused = rf"unknown dest {re.escape(repr(dest))} \(a {kind}: a node is its name or its int "
    for call in (g.send, g.isend, lambda x, dest: g.isend_many([x], dest=dest)):
        with pytest.raises(UnknownNodeError, match=refused):
            call("wrong", dest=dest)
    with pytest.raises(UnknownNodeError, match=refused):
        g.request("wrong", dest=dest, timeout=1)  # type: ignore[arg-type]
    assert [g.receive("node1").data for _ in range(5)] == ["first", "again"] * 2 + ["batch"]
    assert g.try_receive("node1") is None  # nothing went to node1
    g.close()


def test_subclass_state_survives_without_super_init_and_in_slots() -> None:
    class NoSuper(Message):
        def __init__(self, value: int) -> None:
            self.value = value

    class Slotted(Message):
        __slots__ = ("x",)

        def __init__(self, data: object, x: int) -> None:
            super().__init__(data)
            self.x = x

    g = Geode()
    g.send(NoSuper(5), dest="node1")
    got = g.receive("node1")
    assert isinstance(got, NoSuper) and got.value == 5 and got.data is None
    g.send(Slotted("d", 7), dest="node1")
    slotted = g.receive("node1")
    assert isinstance(slotted, Slotted) and slotted.x == 7 and slotted.data == "d"


def test_payloads_over_4_gib_outside_arrays_are_refused_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from geode_mpi.codec import wire

    monkeypatch.setattr(wire, "_U32_MAX", 1000)  # stands for 4 GiB, to keep the test small
    g = Geode()
    with pytest.raises(EncodeError, match="the limit is 4 GiB"):
        g.send(b"x" * 5000, dest="node1")
    assert g.pending("node1") == 0
    g.send(np.zeros(10_000), dest="node1")  # arrays travel apart: no limit
    assert g.receive("node1").data.shape == (10_000,)


# CPython 3.11 keeps an object's attributes inline (shared keys) while it has at most 29; from
# the 30th on it gets a plain dict and every self.x on the send and receive paths slows (31
# attributes on the Geode cost 3% of a send + receive in issue 13: 2 ns per load, 15 ns per
# self.method() call). The objects of the hot path stay within the limit.
INLINE_ATTRIBUTES = 29


def test_the_hot_path_objects_keep_their_attributes_inline(tmp_path: Path) -> None:
    for geode in (Geode(), Geode(checkpoint_dir=tmp_path)):
        geode.send(1, "node0", "node1")
        geode.isend(2, "node0", "node1").wait()
        geode.receive("node1")
        geode.receive("node1")
        runtime = geode._runtime
        engine = runtime.engine
        objects = [geode, runtime, engine, engine.path, runtime.transport]
        geode.close()
        for obj in objects:
            assert len(vars(obj)) <= INLINE_ATTRIBUTES, (type(obj).__name__, sorted(vars(obj)))
