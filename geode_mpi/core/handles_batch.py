"""The handle of one `Geode.isend_many`: its messages' sends waited on as one."""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

from geode_mpi.core.handles import SendHandle
from geode_mpi.errors import check_timeout


class BatchHandle:
    """The sends of one `Geode.isend_many`: one handle for the whole batch, done once every
    message's send is (their data may then be reused).

    Attributes:
        count: how many messages the batch sent (each its own message, in order).
    """

    __slots__ = ("_handles", "_next", "count")

    def __init__(self, handles: list[SendHandle], count: int) -> None:
        self._handles = handles  # (a run's last handle stands for the run's messages)
        self._next = 0  # the first that was not done when last asked
        self.count = count

    def __len__(self) -> int:
        return self.count

    def done(self) -> bool:
        """True once every message's send is done (driving progress as `SendHandle.done`)."""
        handles = self._handles
        at = self._next
        while at < len(handles):
            if not handles[at].done():
                self._next = at
                return False
            at += 1
        self._next = at
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Wait until every message's send is done.

        Raises:
            SendTimeout: a send did not complete within ``timeout`` seconds (for the whole
                batch); it stays in flight, and the handle can be waited on again.
        """
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        handles = self._handles
        for at in range(self._next, len(handles)):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            handles[at].wait(left)
            self._next = at + 1

    def __await__(self) -> Generator[Any, None, BatchHandle]:
        """``await handle``: `wait_async` with no time limit; gives the handle back."""
        return self.wait_async().__await__()

    async def wait_async(self, timeout: float | None = None) -> BatchHandle:
        """`wait` for asyncio (see `SendHandle.wait_async`); gives the handle back.

        Raises:
            SendTimeout: a send did not complete within ``timeout`` seconds.
        """
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        handles = self._handles
        for at in range(self._next, len(handles)):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            await handles[at].wait_async(left)
            self._next = at + 1
        return self

    def __repr__(self) -> str:
        state = "done" if self._next >= len(self._handles) else "in flight"
        return f"<BatchHandle of {self.count} message(s), {state}>"
