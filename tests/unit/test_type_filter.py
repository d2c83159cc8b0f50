"""`receive(type=...)`: a filter is built once per (source, type) and reads each parcel's class
name from its header; what it takes is what the filter says, whatever was queued before."""

from __future__ import annotations

import sys
import types

import pytest

from geode_mpi import Geode, Message, UnknownNodeError


class Base(Message):
    pass


class Child(Base):
    pass


class Other(Message):
    pass


def test_a_filter_takes_its_class_and_subclasses_out_of_a_mixed_queue() -> None:
    g = Geode(nodes=2)
    kinds = [Message, Base, Child, Other] * 50
    for k, kind in enumerate(kinds):
        g.isend(kind(k), dest="node0")
    g.flush()
    bases = [g.receive(type=Base).data for _ in range(100)]
    assert bases == [k for k, kind in enumerate(kinds) if kind in (Base, Child)]
    others = [g.receive(type="Other").data for _ in range(25)]
    others += [g.receive(type=f"{__name__}:Other").data for _ in range(25)]
    assert others == [k for k, kind in enumerate(kinds) if kind is Other]
    assert g.try_receive(type=Base) is None
    assert [g.receive(type="Message").data for _ in range(50)] == list(range(0, 200, 4))
    assert g.try_receive() is None
    g.close()


def test_a_filter_is_built_once_and_bad_arguments_are_refused_every_time() -> None:
    g = Geode(nodes=2)
    assert g._matcher(None, Base) is g._matcher(None, Base)
    assert g._matcher("node1", "Base") is g._matcher("node1", "Base")
    assert g._matcher(1, "Base") is g._matcher(1, "Base")
    with pytest.raises(UnknownNodeError, match="unknown source True"):  # (though 1 == True)
        g._matcher(True, "Base")
    for _ in range(2):
        with pytest.raises(TypeError, match="type must be a Message subclass or a class name"):
            g.receive(type=int, timeout=0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="type must be a Message subclass"):
            g.receive(type=[Base], timeout=0)  # type: ignore[arg-type]
        with pytest.raises(UnknownNodeError):
            g.receive(source="nowhere", type=Base, timeout=0)
    g.close()


def test_a_class_that_cannot_be_found_yet_is_matched_once_it_can() -> None:
    """The class is resolved for every parcel, not remembered from the first: a message of a
    module's class that cannot be imported when the filter first meets it is taken once it
    can be."""
    module = types.ModuleType("geode_late_classes")
    exec("from geode_mpi import Message\nclass Late(Message):\n    pass\n", module.__dict__)
    sys.modules[module.__name__] = module
    g = Geode(nodes=2)
    g.send(module.Late("late"), dest="node0")
    del sys.modules[module.__name__]
    from geode_mpi.codec import classes

    classes._cache.pop("geode_late_classes:Late", None)  # as in a process that never sent it
    try:
        for _ in range(2):
            assert g.try_receive(type=module.Late) is None  # (not found here: no match)
        sys.modules[module.__name__] = module  # importable now
        assert g.receive(type=module.Late, timeout=0).data == "late"
    finally:
        sys.modules.pop(module.__name__, None)
        g.close()
