"""`is_stop_name`, the test a filtered `messages()` loop makes of each queued message it
leaves: a Stop's wire name, by what this process defined, never by importing a module."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from geode_mpi import Message, Stop
from geode_mpi.core import processing
from geode_mpi.core.stop_names import is_stop_name


def test_a_name_no_stop_has_is_no_stop_and_nothing_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each scan resolved such a name again (~670 us for a missing module, for every queued
    message the filter left), and imported modules for messages the loop never takes."""
    (tmp_path / "stopnames_mod.py").write_text(
        "from geode_mpi import Stop\nclass Done(Stop):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "stopnames_mod", raising=False)
    resolved: list[str] = []
    real = processing.codec.resolve

    def resolve(name: str) -> type[Message]:
        resolved.append(name)
        return real(name)

    monkeypatch.setattr(processing.codec, "resolve", resolve)
    for _ in range(3):
        assert not is_stop_name("stopnames_nosuchmod:Foo")
        assert not is_stop_name("stopnames_mod:Done")  # (not imported here: no Stop here)
    assert "stopnames_mod" not in sys.modules
    assert resolved == []
    assert is_stop_name(f"{Stop.__module__}:Stop")


def test_a_stop_name_that_a_later_main_gives_another_class_is_no_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Jobs run one after another in one process: a ``__main__:Name`` that was a Stop in the
    first stayed one in the next, whose ``Name`` is no Stop."""
    first = types.ModuleType("stopnames_main")
    monkeypatch.setitem(sys.modules, "stopnames_main", first)
    done = type("Name", (Stop,), {"__module__": "stopnames_main"})
    first.Name = done  # type: ignore[attr-defined]
    assert is_stop_name("stopnames_main:Name")
    second = types.ModuleType("stopnames_main")
    second.Name = type("Name", (Message,), {"__module__": "stopnames_main"})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stopnames_main", second)
    assert not is_stop_name("stopnames_main:Name")
    monkeypatch.setitem(sys.modules, "stopnames_main", first)
    assert is_stop_name("stopnames_main:Name")


def test_a_stop_subclass_defined_in_a_function_is_a_stop() -> None:
    class Finished(Stop):
        pass

    assert is_stop_name(f"{Finished.__module__}:{Finished.__qualname__}")
