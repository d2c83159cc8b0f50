"""`MPITransport`'s batches: small envelopes to one rank joined into one MPI message
(`TAG_BATCH`), lazy entries (a run of messages, delivery/runs.py), and when a batch goes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from geode_mpi.transport.base import SendTicket
from geode_mpi.transport.envelope import META_MAX
from geode_mpi.transport.mpi_parts import (
    _AS_META,
    _BATCH_ENTRY,
    TAG_BATCH,
    TAG_ENVELOPE,
    TAG_META,
    MPIParts,
)

BATCH_MAX = 32  # envelopes in a batch before it goes out on its own
BATCH_BYTES = 32 * 1024  # bytes in a batch before it goes out on its own
BATCH_DELAY = 100e-6  # a poll sends batches this old; a wait sends them all at once
LAZY_GUESS = 512  # bytes a lazy entry counts for in its batch until it is produced
_ZEROS = bytes(16)
# (entry header, padding after the entry) by length << 1 | kind: entries of the same size
# recur, and a lookup is cheaper than packing
_FRAMINGS: dict[int, tuple[bytes, bytes]] = {}
_FRAMINGS_MAX = 4096


def _framing(length: int, kind: int) -> tuple[bytes, bytes]:
    framing = (_BATCH_ENTRY.pack(length, kind), _ZEROS[: -length % 16])
    if len(_FRAMINGS) < _FRAMINGS_MAX:
        _FRAMINGS[length << 1 | kind] = framing
    return framing


class Batches(MPIParts):
    """The batches of `MPITransport` (which inherits them)."""

    def batch_meta(self, dest: int, meta: bytes) -> SendTicket:
        """`send(dest, meta, (), batch=True)`: the commonest isend, `_add_to_batch` inline
        (one call per message where there were two; measured in benchmarks/README.md)."""
        ticket = self._batches.get(dest)
        length = len(meta)
        if ticket is None or length > META_MAX:
            return self.send(dest, meta, (), True)  # a new batch (or a loopback) starts there
        framing = _FRAMINGS.get(length << 1 | _AS_META)
        if framing is None:
            framing = _framing(length, _AS_META)
        parts = ticket.state
        parts += framing[0], meta, framing[1]
        ticket.nbytes += length
        if len(parts) >= 3 * BATCH_MAX or ticket.nbytes >= BATCH_BYTES:
            self._send_batch(dest)
        return ticket

    def _batch(self, dest: int) -> SendTicket:
        """The ticket of the batch to ``dest``, begun now if there is none."""
        ticket = self._batches.get(dest)
        if ticket is None:
            self._check_dest(dest)
            ticket = self._batches[dest] = SendTicket(dest, 0, held=True, state=[])
            if not self._batch_since:
                self._batch_since = time.perf_counter()
        return ticket

    def _add_to_batch(self, dest: int, kind: int, payload: bytes) -> SendTicket:
        ticket = self._batch(dest)
        length = len(payload)
        framing = _FRAMINGS.get(length << 1 | kind)
        if framing is None:
            framing = _framing(length, kind)
        head, pad = framing
        parts = ticket.state
        parts += head, payload, pad
        ticket.nbytes += length  # (counted in `sent_to` as the batch goes out)
        if len(parts) >= 3 * BATCH_MAX or ticket.nbytes >= BATCH_BYTES:
            self._send_batch(dest)
        return ticket

    def batch_lazy(self, dest: int, produce: Callable[[], bytes]) -> SendTicket:
        """Add an entry to the batch to ``dest`` whose meta ``produce()`` gives only as the
        batch goes out (a run of messages, which grows until then: delivery/runs.py); the
        batch's ticket. Sent as a meta without frames (`_AS_META`)."""
        ticket = self._batch(dest)
        parts = ticket.state
        parts += None, produce, None
        self._lazy[dest] = self._lazy.get(dest, 0) + 1
        ticket.nbytes += LAZY_GUESS
        if len(parts) >= 3 * BATCH_MAX or ticket.nbytes >= BATCH_BYTES:
            self._send_batch(dest)
        return ticket

    def _produce(self, parts: list[Any]) -> None:
        """Replace the lazy entries of a batch's parts by what they produce, framed."""
        for index in range(0, len(parts), 3):
            if parts[index] is None:
                meta = parts[index + 1]()
                length = len(meta)
                framing = _FRAMINGS.get(length << 1 | _AS_META) or _framing(length, _AS_META)
                parts[index : index + 3] = framing[0], meta, framing[1]

    def flush(self) -> None:
        """Send every batch now."""
        for dest in list(self._batches):
            self._send_batch(dest)
        self._batch_since = 0.0

    def flush_due(self) -> bool:
        """Send the batches if the oldest is `BATCH_DELAY` old (what `progress` does first,
        alone: a sender's check between its polls); whether they went."""
        if self._batches and time.perf_counter() - self._batch_since > BATCH_DELAY:
            self.flush()
            return True
        return False

    def flush_to(self, dest: int) -> None:
        """Send the batch to ``dest`` now, if there is one (a run that is full goes at once:
        delivery/runs.py)."""
        if dest in self._batches:
            self._send_batch(dest)

    def _send_batch(self, dest: int) -> None:
        ticket = self._batches.pop(dest)
        parts = ticket.state
        if self._lazy and self._lazy.pop(dest, 0):
            self._produce(parts)
        ticket.held = False
        ticket.state = None
        if not self._batches:
            self._batch_since = 0.0  # the next batch starts its own BATCH_DELAY
        self.sent_to[dest] += len(parts) // 3
        if len(parts) == 3:  # one entry: it goes as itself
            buffer = parts[1]
            request = self.comm.Isend(
                buffer, dest, TAG_META if parts[0][4] == _AS_META else TAG_ENVELOPE
            )
        else:
            buffer = b"".join(parts)
            request = self.comm.Isend(buffer, dest, TAG_BATCH)
        if request.Test():
            ticket.done = True
        else:
            ticket.state = ([request], buffer, [], [])
            self._active.append(ticket)
