"""The messages each thread authors while it runs a handler: whether a handler that close()
in another thread interrupted did something others can see (core/processing.py).

`WATCHING` holds, for each thread that runs a handler now, the messages it authored since
the handler began: sent, published or replied, as any node (each first send of a message;
not resends, acks or other records), never another thread's, and not what the runtime sends
in that thread for other nodes meanwhile (`Unwatched`: a work queue's dispatcher handing out
a task, a sequencer forwarding, a handler run inside a wait of this one). Empty (the usual
case), a send pays one test of it."""

from __future__ import annotations

from collections.abc import Callable
from threading import get_ident
from typing import Any, TypeVar

_R = TypeVar("_R")

WATCHING: dict[int, int] = {}  # thread ident -> messages authored since its handler began


def authored(count: int = 1) -> None:
    """Count ``count`` messages authored by this thread, if it runs a handler (`Watch`)."""
    me = get_ident()
    if me in WATCHING:
        WATCHING[me] += count


class Watch:
    """The messages this thread authors from now until `end` (a handler's run). Nested (a
    handler run inside another's wait), the inner one's count adds to the outer one's."""

    __slots__ = ("me", "outer")

    def __init__(self) -> None:
        self.me = get_ident()
        self.outer = WATCHING.get(self.me)
        WATCHING[self.me] = 0

    def count(self) -> int:
        """Messages this thread authored since the watch began."""
        return WATCHING.get(self.me, 0)

    def end(self) -> None:
        done = WATCHING.pop(self.me, 0)
        if self.outer is not None:
            WATCHING[self.me] = self.outer + done


class Unwatched:
    """A ``with`` block of work the runtime does in this thread for other nodes (a dispatcher
    handing out a task, a sequencer forwarding, forwarders sending on what they held, a
    handler run inside a wait): what it sends is not the watching handler's (a second call of
    that handler would not do it again). A handler run inside starts a count of its own."""

    __slots__ = ("held", "me")

    def __enter__(self) -> None:
        self.me = get_ident()
        self.held = WATCHING.pop(self.me, None)

    def __exit__(self, *exc: object) -> None:
        WATCHING.pop(self.me, None)
        if self.held is not None:
            WATCHING[self.me] = self.held


def unwatched(call: Callable[..., _R], *args: Any) -> _R:
    """``call(*args)``, as work for other nodes (`Unwatched`) while a handler runs in some
    thread; as it is otherwise (one test of an empty dict)."""
    if not WATCHING:
        return call(*args)
    with Unwatched():
        return call(*args)
