"""Exceptions raised by geode_mpi: one base, `GeodeError`, and subclasses that carry the facts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from geode_mpi.base.arguments import check_flag as check_flag
from geode_mpi.base.arguments import check_timeout as check_timeout
from geode_mpi.base.arguments import whole as whole
from geode_mpi.base.error_state import _attributes, _own_getstate, _picklable, _trying
from geode_mpi.base.error_texts import (
    _ack_timeout_text,
    _closed_text,
    _encode_text,
    _handler_text,
    _node_not_local_text,
    _not_processed_text,
    _queue_full_text,
    _receive_timeout_text,
    _remote_traceback_text,
    _send_timeout_text,
    _terminated_text,
    _unknown_node_text,
    _wrong_pmi_text,
)
from geode_mpi.base.error_texts import describe_nodes as describe_nodes
from geode_mpi.base.error_texts import no_room as no_room


class GeodeError(Exception):
    """Base of every error geode_mpi raises on purpose."""

    # `Geode.isend_many`: how many of the batch's items were sent before this error (None:
    # not raised by isend_many).
    sent: int | None = None
    # The message (as handed to the send or publish call) that went before a poll after it
    # raised this error (None: raised before anything was sent): tells a send that failed
    # from a poll's error after it, whatever the handlers that poll ran sent in between.
    after_send: object = None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the text and the attributes, never through ``__init__`` (whose
        arguments differ from class to class): a geode_mpi error raised by a task of a
        `GeodeExecutor` reaches its client as itself. An attribute that cannot be pickled
        (a send's handle, a message that cannot) arrives as None. The attributes (those in
        ``__slots__`` too) travel as the state (set by ``__setstate__`` once the error
        exists), so one that refers back to the error keeps it. A class with its own
        ``__getstate__`` gives the state itself, as pickle does it."""
        cls = type(self)
        if _own_getstate(cls):
            state = self.__getstate__()  # type: ignore[attr-defined]
            return (_rebuild, (cls, self.args), state)
        trying = _trying()
        if id(self) in trying:  # (a trial of one of its own attributes: the error alone)
            return (_rebuild, (cls, self.args))
        trying.add(id(self))
        try:
            state = _picklable(_attributes(self), GeodeError.__reduce__)
        finally:
            trying.discard(id(self))
        return (_rebuild, (cls, self.args), state)


def _rebuild(cls: type[GeodeError], args: tuple[Any, ...]) -> GeodeError:
    """A `GeodeError` unpickled: made with its text (``args``); its attributes follow."""
    error = cls.__new__(cls, *args)
    error.args = args
    return error


class UnknownNodeError(GeodeError, LookupError):
    """A node name or index that this job does not have."""

    def __init__(self, node: object, nodes: Sequence[str], argument: str = "node") -> None:
        self.node = node
        self.nodes = tuple(nodes)
        self.argument = argument
        super().__init__(_unknown_node_text(node, nodes, argument))


class NodeNotLocalError(GeodeError, LookupError):
    """A call that must run on the rank hosting a node was made on another rank."""

    def __init__(self, call: str, node: str, rank: int, host_rank: int) -> None:
        self.call = call
        self.node = node
        self.rank = rank
        self.host_rank = host_rank
        super().__init__(_node_not_local_text(call, node, rank, host_rank))


class EncodeError(GeodeError, TypeError):
    """A payload that cannot be encoded (for example, it cannot be pickled)."""

    def __init__(self, what: str, value_type: type, reason: BaseException) -> None:
        self.value_type = value_type
        self.reason = reason
        super().__init__(_encode_text(what, value_type, reason))


class DecodeError(GeodeError, ValueError):
    """Bytes that arrived but cannot be turned back into a Message."""


class GeodeTimeoutError(GeodeError, TimeoutError):
    """Base of the timeouts; also a builtin `TimeoutError`."""


class ReceiveTimeout(GeodeTimeoutError):
    """No matching message arrived within the timeout."""

    def __init__(
        self,
        node: str,
        timeout: float,
        source: str | None,
        type_name: str | None,
        queued: int,
        waited: bool = True,
        call: str = "receive",
        reply_to: int | None = None,
        hint: str = "",
        closing_rank: int | None = None,
        closing_ranks: str | None = None,
        topic: str | None = None,
    ) -> None:
        self.node = node
        self.timeout = timeout
        self.source = source
        self.type_name = type_name
        self.topic = topic  # the receive's topic filter (a name or a pattern), if any
        self.queued = queued
        # A request's: the id of the request whose reply did not come (None: a receive's)
        self.reply_to = reply_to
        super().__init__(
            _receive_timeout_text(
                node,
                timeout,
                source,
                type_name,
                queued,
                waited,
                call,
                reply_to,
                hint,
                closing_rank,
                closing_ranks,
                topic,
            )
        )


class SendTimeout(GeodeTimeoutError):
    """A send did not complete within the timeout.

    Two cases, told apart by ``in_flight``: a message that was sent but whose data MPI has not
    released in time (``in_flight`` True: it stays in flight and arrives, once; do not send it
    again), and a message that waited for room in a full ``block`` queue and was never sent
    (``in_flight`` False, ``message_id`` -1: send it again, or it is lost). A publish's
    (``topic`` set: ``source`` is its publisher) is named as a publish on its topic; one
    that waited for room names in ``dest`` the subscriber that had none (it reached no
    subscriber).
    """

    def __init__(
        self,
        message_id: int,
        source: str,
        dest: str,
        timeout: float,
        in_flight: bool = True,
        topic: str | None = None,
    ) -> None:
        self.message_id = message_id
        self.source = source
        self.dest = dest
        self.timeout = timeout
        self.in_flight = in_flight
        self.topic = topic  # a publish's topic (its handle's ``dest`` too)
        super().__init__(_send_timeout_text(message_id, source, dest, timeout, in_flight, topic))


class AckTimeout(GeodeTimeoutError):
    """A message was not acknowledged (processed by its receiver) within the timeout.

    The message stays in its sender's outbox: it may still be processed, once. For a publish
    (``topic`` set), ``dest`` names the subscribers that have not processed it (``count`` of
    them: the wording follows it).
    """

    def __init__(
        self,
        message_id: int,
        source: str,
        dest: str,
        seq: int,
        timeout: float,
        handle: Any = None,
        waited: bool = True,
        topic: str | None = None,
        count: int = 1,
    ) -> None:
        self.message_id = message_id
        self.source = source
        self.dest = dest
        self.seq = seq
        self.timeout = timeout
        self.handle = handle  # the SendHandle: wait() on it again to keep waiting
        self.topic = topic  # a publish's topic (then dest: its subscribers still to process it)
        self.count = count  # how many nodes dest names
        super().__init__(
            _ack_timeout_text(message_id, source, dest, seq, timeout, waited, topic, count)
        )


class NotProcessed(GeodeError):
    """A message sent with ``ack=True`` was acknowledged by its receiver without being
    processed: a full ``drop_oldest`` queue dropped it, its ``ttl`` ran out before it was
    taken, or its last attempt failed (a dead letter); or (``why`` "closing", also for a
    request) its receiver's rank is in close() and has no handler for it, so it is never
    acknowledged either. It never will be processed (send it again if it must be), except
    that a message told "closing" stays in its receiver's queue, where a `receive()` after
    close() may still take it. For a publish (``topic`` set; told "closing" only), ``dest``
    names the subscribers whose rank is in close() with no handler for it (``count`` of them:
    the wording follows it)."""

    def __init__(
        self,
        message_id: int,
        source: str,
        dest: str,
        seq: int,
        why: str,
        handle: Any = None,
        topic: str | None = None,
        count: int = 1,
    ) -> None:
        self.message_id = message_id
        self.source = source
        self.dest = dest
        self.seq = seq
        self.why = why  # "dropped", "expired", "dead-lettered" or "closing"
        self.handle = handle  # the SendHandle (its ``lost`` is ``why``)
        self.topic = topic  # a publish's topic (then dest: the subscribers that will not)
        self.count = count  # how many nodes dest names
        super().__init__(_not_processed_text(message_id, source, dest, seq, why, topic, count))


class QueueFull(GeodeError):
    """A receiver's queue has no room for another message from this sender."""

    def __init__(
        self, dest: str, source: str, capacity: int | None, window: int, reason: str
    ) -> None:
        self.dest = dest
        self.source = source
        self.capacity = capacity
        self.window = window
        super().__init__(_queue_full_text(dest, source, capacity, window, reason))


class ClosedError(GeodeError, RuntimeError):
    """An operation on a Geode that was closed (or is closing).

    ``in_flight`` True: the message of the send that raised it was sent before close() began,
    which delivers it all the same: it arrives once (and, sent with ``ack=True``, may be
    processed) although its ack will not come; do not send it again blindly.
    """

    def __init__(
        self,
        operation: str,
        closer: str | None = None,
        unfinished: bool = False,
        in_flight: bool = False,
        late: bool = False,
    ) -> None:
        self.operation = operation
        self.closer = closer  # the thread whose close() ended the wait of this operation
        # True: that close() ended unfinished (timed out, or raised): the Geode stays closing.
        self.unfinished = unfinished
        self.in_flight = in_flight  # the send's message was sent: it arrives all the same
        super().__init__(_closed_text(operation, closer, unfinished, late, in_flight))


class Terminated(GeodeError, InterruptedError):
    """A SIGTERM arrived, and a blocking call was still waiting when its patience ran out.

    After a SIGTERM a blocking call (receive, request, a send waiting for credits or an ack,
    run, close) keeps working for half of the job's ``term_grace``, so that every rank can
    reach its next ``maybe_checkpoint()``; a call still waiting then raises this. The process
    is ended ``term_grace`` seconds after the SIGTERM whatever it is doing. Catch it to save
    the job's own state (``geode.checkpoint(state)`` works when every rank does so), then
    re-raise it: uncaught, it ends the job with exit status 143 and one line of output.
    """

    def __init__(self, waited: float, grace: float) -> None:
        self.waited = waited  # seconds since the SIGTERM
        self.grace = grace  # the job's term_grace
        self.left = max(grace - waited, 0.0)  # seconds before the process is ended
        super().__init__(_terminated_text(waited, grace, self.left))


class HandlerError(GeodeError, RuntimeError):
    """A request failed for good where it was handled, so no reply can come: its handler
    raised on every attempt (or there is none, or the request could not be decoded there)
    and the request went to that node's dead letters. `Geode.request` raises it at once."""

    def __init__(
        self,
        node: str,
        request_id: int,
        type_name: str,
        error_type: str,
        error: str,
        attempts: int,
    ) -> None:
        self.node = node  # the node the request was sent to (its dead letters hold it)
        self.request_id = request_id
        self.type_name = type_name  # the request's class name
        self.error_type = error_type  # the class name of what the handler raised
        self.error = error  # its text
        self.attempts = attempts
        super().__init__(_handler_text(node, request_id, type_name, error_type, error, attempts))


class ThreadError(GeodeError, RuntimeError):
    """A call that one Geode runs in one thread at a time was made from a second thread."""


class WorldMismatchError(GeodeError, RuntimeError):
    """Ranks of one job disagree about the job's configuration (for example, node names)."""


class CheckpointError(GeodeError):
    """A checkpoint cannot be written or read; the message names the file and the problem."""


class WrongPMIError(GeodeError, RuntimeError):
    """srun, or an MPI launcher, started several tasks, but MPI sees each of them as a world of
    one rank (each would run the whole job alone)."""

    def __init__(
        self, step_tasks: int, world_size: int, found: str, launcher: str | None = None
    ) -> None:
        self.step_tasks = step_tasks  # the tasks srun (or ``launcher``) started
        self.world_size = world_size
        self.launcher = launcher  # None: srun; else the launcher, "MPICH's mpiexec (hydra)"
        super().__init__(_wrong_pmi_text(step_tasks, world_size, found, launcher))


class RestartDirError(GeodeError, ValueError):
    """``python -m geode_mpi --restart DIR`` names another directory than the job's own
    ``checkpoint_dir``."""


class RemoteTraceback(GeodeError):
    """The traceback of an exception a task raised on another node (`GeodeExecutor`): the
    ``__cause__`` of the exception that ``future.result()`` re-raises, so that Python prints
    it above that exception, as `concurrent.futures.ProcessPoolExecutor` does."""

    def __init__(self, traceback: str, node: str, rank: int) -> None:
        self.traceback = traceback  # the worker's formatted traceback
        self.node = node  # the worker node that ran the task
        self.rank = rank  # and its rank
        super().__init__(_remote_traceback_text(traceback, node, rank))


class TaskError(GeodeError, RuntimeError):
    """A task of a `GeodeExecutor` failed in a way its own exception cannot say here: its
    result or exception could not be pickled where it ran, or not unpickled on the client;
    or its arguments could not be unpickled on the worker."""

    def __init__(self, message: str, node: str, rank: int) -> None:
        self.node = node  # the worker node that ran (or was to run) the task
        self.rank = rank
        super().__init__(message)
