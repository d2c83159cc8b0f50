"""The engine's end of a taken message: processed, failed (delivered again later) or a dead
letter."""

from __future__ import annotations

import copy
import time

from geode_mpi import codec
from geode_mpi.base.logger import log
from geode_mpi.delivery.control import DEAD_LETTERED, encode_lost
from geode_mpi.delivery.engine_state import EngineState
from geode_mpi.delivery.stats import DeadLetter, DeadLetters
from geode_mpi.errors import DecodeError
from geode_mpi.message import Message
from geode_mpi.queues import TAKEN_BEFORE, Parcel


class Failures(EngineState):
    """`Engine`'s acks and nacks of taken messages, retries and dead letters."""

    def finish(self, index: int, parcel: Parcel) -> None:
        """A taken message was processed (acked)."""
        self.in_hand -= 1
        self._done(index, parcel)

    def put_back(self, index: int, parcel: Parcel) -> None:
        """A taken message was not processed, through no fault of its own (its handler was
        interrupted by a close() in another thread): queued again ahead of its source's later
        messages, ready now, its attempt not counted (no retry, never a dead letter). Marked
        taken before: taking it again returns no second credit to its sender (its first take
        did), nor asks a work queue for a second next task."""
        self.in_hand -= 1
        again = parcel._replace(flags=parcel.flags | TAKEN_BEFORE)
        self.inboxes[index].put_back(again, time.monotonic())

    def fail(self, index: int, parcel: Parcel, error: BaseException | None) -> None:
        """Processing a taken message failed: deliver it again later, or dead-letter it."""
        self.in_hand -= 1
        attempts = parcel.attempts + 1
        config = self.configs[index]
        stats = self.stats[index]
        if attempts < config.max_attempts:
            stats.retries += 1
            again = parcel._replace(attempts=attempts)
            inbox = self.inboxes[index]
            # Back in the queue, beyond the credits its sender was given back for it: a queue
            # can hold up to its capacity plus the messages waiting for a retry.
            inbox.put_back(again, time.monotonic() + config.delay(attempts))
            return
        self.dead_letter(index, parcel, error, attempts)

    def dead_letter(
        self,
        index: int,
        parcel: Parcel,
        error: BaseException | None,
        attempts: int,
        finish: bool = True,
        expired: str | None = None,
    ) -> None:
        """Record a message that cannot be processed; with ``finish``, count it processed
        (acknowledged: it is not lost, it is in the dead letters); ``expired``: it is kept
        because its ttl ran out, and this says how."""
        message: Message | None = None
        try:  # (a message that did not decode is not decoded again: its pickle's side effects)
            if not isinstance(error, DecodeError):
                message = self.decode(parcel)
        except DecodeError as exc:
            error = error or exc
        if expired is not None:
            text = expired
        else:
            text = "no error given" if error is None else f"{type(error).__name__}: {error}"
        kept = self.dead.get(index)
        if kept is None:
            kept = self.dead[index] = DeadLetters(self.configs[index].max_dead_letters)
        if len(kept) == kept.maxlen and not kept.warned:
            kept.warned = True
            self._warn_dropped(index, kept.maxlen)
        kept.append(
            DeadLetter(
                self.names[index],
                message,
                text,
                detached(error),
                attempts,
                self._sender_name(parcel.source),
                parcel.seq,
                expired is not None,
                _where(error),
            )
        )
        self.stats[index].dead_letters += 1
        if finish:
            if (
                expired is None
                and parcel.flags & codec.FLAG_WAITED
                and parcel.reply_to != codec.REQUEST  # (a request's waiter gets its failure)
            ):
                self.tell_lost(index, parcel, DEAD_LETTERED)
            self._done(index, parcel)

    def tell_lost(self, index: int, parcel: Parcel, why: int, batch: bool = True) -> None:
        """Tell the sender of ``parcel`` (sent with ack=True) that node ``index`` did not
        process it (``why``: `DROPPED`, `EXPIRED`, `DEAD_LETTERED`), ahead of the ack record
        that acknowledges it (the same ``batch``, so it arrives first): its handle's
        ``wait()`` raises, not returns; or (`CLOSED`, not batched: no ack follows) that
        node ``index``'s rank is in close() and has no handler for it.
        Not after close: the sender closed too, and the transport is gone."""
        if self.closed:
            return
        self.path.control(index, parcel.source, encode_lost(why, parcel.seq), batch=batch)

    def _warn_dropped(self, index: int, cap: int) -> None:
        name = self.names[index]
        log.warning(
            "%s: more than %d dead letters: only the newest %d are kept in dead_letters(%r) "
            "from now on (each one still counts in stats().dead_letters); keep more with "
            "QueueConfig(max_dead_letters=...), or take them as they come with "
            "dead_letters(%r, clear=True)",
            name,
            cap,
            cap,
            name,
            name,
        )

    def _sender_name(self, index: int) -> str:
        try:
            return self.name_of(index)
        except KeyError:  # (arrivals from unknown sources are dropped: this is a safeguard)
            return f"node index {index}"


_CHAIN_DEPTH = 8  # causes and contexts copied along with an error (deeper ones are left off)


def _where(error: BaseException | None) -> str:
    """``error``'s traceback as text, for its dead letter: the frames it went through until
    it was recorded (the handler's, the run loop's), which `detached` lets go."""
    if error is None or error.__traceback__ is None:
        return ""
    import traceback  # (not loaded at start-up: only a dead letter with an error needs it)

    return "".join(traceback.format_exception(error))


def detached(error: BaseException | None, depth: int = 0) -> BaseException | None:
    """What a dead letter keeps of ``error``: a copy of it without its traceback (same type,
    args, attributes and message), its cause and context copied the same way.

    The error itself would pin every frame it went through, and their callers' (a frame
    keeps its caller), with their locals: for as long as the dead letter, and the frames of
    the user's code it still goes through when it is raised on (receive's DecodeError) or was
    caught in (``msg.nack(exc)``). An error that copies differently (its ``__init__`` does
    not take its args back, or does more) is kept as it is."""
    if error is None:
        return None
    kind = type(error)
    try:
        twin = copy.copy(error)  # (as pickle does: the class called with its args, then state)
        if type(twin) is not kind or twin.args != error.args or str(twin) != str(error):
            return error
    except Exception:
        return error
    if depth < _CHAIN_DEPTH:
        twin.__cause__ = detached(error.__cause__, depth + 1)
        twin.__context__ = detached(error.__context__, depth + 1)
    twin.__suppress_context__ = error.__suppress_context__
    return twin
