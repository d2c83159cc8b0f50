"""The wire names of the `Stop` classes this process defined (`geode_mpi.core.processing`
holds `Stop`): they tell a queued message's wire name for a Stop's without decoding it."""

from __future__ import annotations

import sys

from geode_mpi.message import Message

# Wire class name -> the Stop class (a subclass too) defined under it in this process, for a
# filtered `messages()` loop's test of each queued message's name (`is_stop_name`): a dict
# lookup, no decode, never an import. A Stop subclass registers itself as it is defined,
# and `Stop` is entered just after its class (core/processing.py).
_STOPS: dict[str, type[Message]] = {}


def is_stop_name(wire_name: str) -> bool:
    """Whether a message of the class of wire name ``wire_name`` is a `Stop` (a subclass
    too): a name no Stop class defined in this process has is no Stop (nothing is imported to
    tell: a Stop subclass not defined here could not be built here either). A name whose
    module now defines another class under it (a later job's ``__main__``) is no Stop."""
    cls = _STOPS.get(wire_name)
    if cls is None:
        return False
    now = _defined(wire_name)
    return now is None or now is cls


def _defined(wire_name: str) -> object | None:
    """What ``module:qualname`` names in the modules imported now (None: nothing found,
    e.g. a class defined inside a function), without importing anything."""
    module, _, qualname = wire_name.partition(":")
    found: object | None = sys.modules.get(module)
    for part in qualname.split("."):
        if found is None:
            return None
        found = getattr(found, part, None)
    return found
