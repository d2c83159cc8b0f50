"""Every public call that takes a timeout checks it, every time (`check_timeout`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from geode_mpi import Geode

BAD = [
    (float("nan"), ValueError, r"timeout must be >= 0, got nan"),
    (-1, ValueError, r"timeout must be >= 0, got -1"),
    ("5", TypeError, r"timeout must be a number of seconds or None, got '5'"),
]


@pytest.mark.parametrize(("timeout", "error", "said"), BAD)
@pytest.mark.parametrize("call", ["isend", "send", "put", "publish"])
def test_a_bad_timeout_is_refused_on_every_call_not_only_the_first(
    call: str, timeout: Any, error: type[Exception], said: str
) -> None:
    """Before: isend checked it on a pair's first send only (the next ones took timeout=-1),
    publish never (nan waited without limit, -1 said "within -1 s", "5" a bare TypeError)."""
    with Geode(2) as geode:
        queue = geode.work_queue("q", ["node1"])
        topic = geode.topic("t", ["node0"], ["node1"])
        calls: dict[str, Callable[[Any], object]] = {
            "isend": lambda t: geode.isend(1, dest="node1", timeout=t),
            "send": lambda t: geode.send(1, dest="node1", timeout=t),
            "put": lambda t: queue.put(1, timeout=t),
            "publish": lambda t: topic.publish(1, timeout=t),
        }
        for _ in range(2):  # the first, then once the pair has a route
            with pytest.raises(error, match=f"^{said}$"):
                calls[call](timeout)
            calls[call](None)
        while geode.try_receive("node1") is not None:
            pass
