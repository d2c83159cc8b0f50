"""Exceptions raised by geode_mpi: one base, `GeodeError`, and subclasses that carry the facts."""

from __future__ import annotations

import contextlib
import pickle
import threading
from collections.abc import Sequence
from typing import Any

from geode_mpi.base.arguments import check_flag as check_flag
from geode_mpi.base.arguments import check_timeout as check_timeout
from geode_mpi.base.arguments import whole as whole


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
            state = _picklable(_attributes(self))
        finally:
            trying.discard(id(self))
        return (_rebuild, (cls, self.args), state)


# The errors whose attributes `GeodeError.__reduce__` is trying (by id), in this thread: an
# attribute that refers back to its error is tried once, not once per path to it (and
# another thread pickling the same error at the same time is not taken for such a trial).
_TRYING = threading.local()


def _trying() -> set[int]:
    trying: set[int] | None = getattr(_TRYING, "ids", None)
    if trying is None:
        trying = _TRYING.ids = set()
    return trying


def _own_getstate(cls: type) -> bool:
    """Whether ``cls`` defines its own ``__getstate__`` (object's default on Python 3.11+)."""
    getstate = getattr(cls, "__getstate__", None)
    return getstate is not None and getstate is not getattr(object, "__getstate__", None)


def _attributes(error: GeodeError) -> dict[str, Any]:
    """``error``'s attributes: its ``__dict__`` and the values of its classes' ``__slots__``."""
    state = dict(error.__dict__)
    for cls in type(error).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and name not in state:
                with contextlib.suppress(AttributeError):  # (a slot never set)
                    state[name] = getattr(error, name)
    return state


def _rebuild(cls: type[GeodeError], args: tuple[Any, ...]) -> GeodeError:
    """A `GeodeError` unpickled: made with its text (``args``); its attributes follow."""
    error = cls.__new__(cls, *args)
    error.args = args
    return error


def _picklable(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with None for each value that cannot be pickled (each tried once: texts,
    numbers and arrays of numbers are taken as they are, not pickled twice). A geode_mpi
    error held as a value, pickled by `GeodeError.__reduce__`, is tried by its class and text
    only: its own attributes are filtered when it is pickled (trying it whole tried a chain
    of errors holding errors again at each link: twice the time per link)."""
    kept = {}
    for name, value in state.items():
        if not _plain(value):
            try:
                pickle.dumps((type(value), value.args) if _filters_itself(value) else value)
            except Exception:  # (whatever a value's own __reduce__ raises)
                value = None
        kept[name] = value
    return kept


def _filters_itself(value: Any) -> bool:
    """Whether ``value`` is a geode_mpi error that pickles by `GeodeError.__reduce__` (not
    its own ``__reduce__`` nor ``__getstate__``): its unpicklable attributes arrive as None,
    so only its class and text need trying."""
    cls: Any = type(value)
    return (
        isinstance(value, GeodeError)
        and cls.__reduce__ is GeodeError.__reduce__
        and not _own_getstate(cls)
    )


def _plain(value: Any) -> bool:
    """Whether ``value`` pickles for sure: None, a text, a number, bytes, or an array of a
    dtype without objects."""
    if value is None or type(value) in (str, int, float, bool, bytes):
        return True
    dtype = getattr(value, "dtype", None)
    return type(value).__name__ == "ndarray" and dtype is not None and not dtype.hasobject


def describe_nodes(nodes: Sequence[str]) -> str:
    """Return a short human description of a node list, e.g. ``node0..node3``."""
    default = [f"node{k}" for k in range(len(nodes))]
    if list(nodes) == default and len(nodes) > 2:
        return f"{nodes[0]}..{nodes[-1]}"
    if len(nodes) > 8:
        return ", ".join(nodes[:4]) + f", ... ({len(nodes)} nodes)"
    return ", ".join(nodes)


class UnknownNodeError(GeodeError, LookupError):
    """A node name or index that this job does not have."""

    def __init__(self, node: object, nodes: Sequence[str], argument: str = "node") -> None:
        self.node = node
        self.nodes = tuple(nodes)
        self.argument = argument
        super().__init__(f"unknown {argument} {node!r}: this job has nodes {describe_nodes(nodes)}")


class NodeNotLocalError(GeodeError, LookupError):
    """A call that must run on the rank hosting a node was made on another rank."""

    def __init__(self, call: str, node: str, rank: int, host_rank: int) -> None:
        self.call = call
        self.node = node
        self.rank = rank
        self.host_rank = host_rank
        super().__init__(
            f"{call}({node!r}) was called on rank {rank}, but {node} lives on rank "
            f"{host_rank}: guard the call with `if geode.hosts({node!r}):`, or call "
            f"{call}() without a node to use this rank's own node"
        )


class EncodeError(GeodeError, TypeError):
    """A payload that cannot be encoded (for example, it cannot be pickled)."""

    def __init__(self, what: str, value_type: type, reason: BaseException) -> None:
        self.value_type = value_type
        self.reason = reason
        name = f"{value_type.__module__}.{value_type.__qualname__}"
        super().__init__(
            f"cannot send {what} of type {name}: {type(reason).__name__}: {reason}; "
            "nothing was sent"
        )


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
    ) -> None:
        self.node = node
        self.timeout = timeout
        self.source = source
        self.type_name = type_name
        self.queued = queued
        # A request's: the id of the request whose reply did not come (None: a receive's)
        self.reply_to = reply_to
        wanted = []
        if source is not None:
            wanted.append(f"source={source}")
        if type_name is not None:
            wanted.append(f"type={type_name}")
        what = f" ({', '.join(wanted)})" if wanted else ""
        tail = f"; {queued} other message(s) are queued there" if queued else ""
        if waited:
            text = f"{call} on {node} timed out after {timeout:g} s waiting for a message"
        else:
            text = (
                f"{call} on {node} found no message{what}, and none can arrive: in a "
                f"one-process world nothing is sent while {call}() waits (send first)"
            )
            what = ""
        late = (
            f"; a reply that comes later waits in {node}'s queue as a message with "
            f"reply_to={reply_to}"
            if reply_to is not None and waited
            else ""
        )
        super().__init__(f"{text}{what}{tail}{late}")


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
        if in_flight and topic is not None:
            text = (
                f"send of message {message_id} from {source} (publish on topic {topic!r}) did "
                f"not complete within {timeout:g} s (are the subscribers' ranks receiving?); "
                "the message is still in flight"
            )
        elif in_flight:
            text = (
                f"send of message {message_id} from {source} to {dest} did not complete within "
                f"{timeout:g} s (is {dest} receiving?); the message is still in flight"
            )
        else:  # waited for room, never sent
            sent = f"message from {source} to {dest}"
            if topic is not None:
                sent = f"publish by {source} on topic {topic!r}"
            again = "send it again" if topic is None else "no subscriber got it: publish it again"
            room = no_room(source, dest, f"within {timeout:g} s", topic)
            text = f"{sent} not sent: {room}; {again}"
        super().__init__(text)


def no_room(source: str, dest: str, within: str, topic: str | None = None) -> str:
    """Why a send from ``source`` (a publish on ``topic``) waits or waited for room at ``dest``
    (``within``: how long, or what fills it), as `SendTimeout` and a long wait's notice say."""
    full_for, at = (f"topic {topic!r}", "subscriber ") if topic else (source, "")
    return (
        f"no room at {at}{dest} {within} ({dest}'s queue stayed full for {full_for}: is {dest} "
        "receiving?)"
    )


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
        many = count > 1  # (how many nodes dest names: a node's name may hold ", ")
        if waited:
            has, it = ("have", "are they") if many else ("has", "is it")
            why = f"within {timeout:g} s: {dest} {has} not processed it yet ({it} receiving?)"
        else:
            queue = f"the queues of {dest}" if many else f"{dest}'s queue"
            why = (
                f"and cannot be while send() waits: in a one-process world nothing takes it "
                f"from {queue} meanwhile (no handler for it on {dest}; receive it first, "
                "or wait on the handle after)"
            )
        super().__init__(
            f"message {message_id} ({_route(source, dest, topic)} seq {seq}) was not "
            f"acknowledged {why}; it stays in {source}'s outbox and may still be processed, once"
        )


def _route(source: str, dest: str, topic: str | None) -> str:
    """``source->dest``, or for a publish ``source on topic 'name'``."""
    return f"{source}->{dest}" if topic is None else f"{source} on topic {topic!r}"


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
        end = "it never will be (send it again if it must be)"
        if why == "closing":
            how = (
                f"{dest}'s rank is in close() and {dest} has no handler for it, so it takes "
                f"nothing more from its queue (what {dest} holds is reported there as never "
                "received)"
            )
            end = (
                f"it stays in {dest}'s queue, where only a receive() after close() may still "
                f"take it (send it again only if {dest} does not)"
            )
        elif why == "dropped":
            how = f"{dest}'s full drop_oldest queue dropped it (counted in stats().dropped)"
        elif why == "dead-lettered":
            how = (
                f"its last attempt failed at {dest}, which put it in its dead letters (see "
                f"dead_letters({dest!r}))"
            )
        else:
            how = (
                f"its ttl ran out in {dest}'s queue before it was taken (counted in "
                "stats().expired)"
            )
        if topic is not None:  # (a publish is told "closing" only)
            queues = f"{dest}'s queue"
            if count > 1:  # (how many nodes dest names: a node's name may hold ", ")
                queues = f"the queues of {dest}"
                how = (
                    f"the ranks of {dest} are in close() and none of them has a handler for "
                    "it, so they take nothing more from their queues (what they hold is "
                    "reported there as never received)"
                )
            end = (
                f"it stays in {queues}, where only a receive() after close() may still take "
                "it (publishing it again would reach every subscriber again)"
            )
        by = "" if topic is None else f" by {dest}"
        super().__init__(
            f"message {message_id} ({_route(source, dest, topic)} seq {seq}) was not processed"
            f"{by}: {how}; {end}"
        )


class QueueFull(GeodeError):
    """A receiver's queue has no room for another message from this sender."""

    def __init__(
        self, dest: str, source: str, capacity: int | None, window: int, reason: str
    ) -> None:
        self.dest = dest
        self.source = source
        self.capacity = capacity
        self.window = window
        limit = f"capacity {capacity}, " if capacity is not None else ""
        super().__init__(
            f"{dest}'s queue is full for {source} ({limit}{window} message(s) per sending "
            f"node): {reason}; nothing was sent"
        )


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
        text = _closed_text(operation, closer, unfinished, late)
        if in_flight:
            text += (
                ". Its message was sent before close() began and is delivered all the same: it "
                "arrives once and may be processed (ClosedError.in_flight), though no ack "
                "will come; do not send it again blindly"
            )
        super().__init__(text)


def _closed_text(operation: str, closer: str | None, unfinished: bool, late: bool) -> str:
    """`ClosedError`'s text (``late``: called after close() began, which still runs)."""
    if closer is not None and unfinished:
        return (
            f"{operation}() on a closing Geode: thread {closer!r} began close(), which "
            "ended unfinished (it timed out or raised): the Geode stays closing, nothing "
            "more is sent from it and what a wait waits for may not come; call close() "
            "again to finish closing"
        )
    if closer is not None and late:
        return (
            f"{operation}() on a closing Geode: thread {closer!r} is in close(), and nothing "
            "more is sent once close() begins (join the threads that send before close())"
        )
    if closer is not None:
        return (
            f"{operation}() was waiting when thread {closer!r} began close(): it ends, "
            "as nothing it waits for may come once the Geode closes (join the threads "
            "that wait before close())"
        )
    return (
        f"{operation}() on a closed Geode: it was closed by close() or by leaving its "
        "`with` block; create a new Geode() to send again"
    )


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
        super().__init__(
            f"SIGTERM {waited:.1f} s ago, and this call was still waiting: a blocking call "
            f"gets half of term_grace={grace:g} s after a SIGTERM, then raises Terminated; the "
            f"process ends in {self.left:.1f} s (catch Terminated to save the job's state; "
            "maybe_checkpoint() on every rank writes a last checkpoint and exits 0)"
        )


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
        super().__init__(
            f"request {request_id} ({type_name}) failed on {node} after {attempts} "
            f"attempt(s): {error_type}: {error} (it is in {node}'s dead letters)"
        )


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
        # GEODE_TRANSPORT is base.launch.MODE_VARIABLE; launch imports this module, not the reverse
        if launcher is None:
            said = (
                f"SLURM started {step_tasks} tasks but MPI sees {world_size} rank per process: "
                "srun is using the wrong PMI. For MPICH use `srun --mpi=pmi2`, for Open MPI "
                "`srun --mpi=pmix` (or launch with mpiexec inside the allocation; "
                "`srun --mpi=list` shows the plugins this SLURM has)."
            )
        else:
            said = (
                f"{launcher} started {step_tasks} ranks but MPI sees {world_size} rank per "
                "process: mpi4py loaded another MPI library than the one this launcher is for, "
                "so each rank would run the whole job alone. Launch with the mpiexec of the MPI "
                "that mpi4py was built for (`python -m mpi4py --mpi-library` names its library; "
                "with the MPI wheels, the mpiexec in the same venv as this python)."
            )
        super().__init__(
            f"{said} To run independent one-process copies on purpose, set "
            f"GEODE_TRANSPORT=inproc. (geode_mpi found {found})"
        )


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
        body = traceback.rstrip()
        first = "Traceback (most recent call last):"
        if body.startswith(first):
            body = body[len(first) :].lstrip("\n")
        super().__init__(
            f'\n"""\nTraceback on {node} (rank {rank}), most recent call last:\n{body}\n"""'
        )


class TaskError(GeodeError, RuntimeError):
    """A task of a `GeodeExecutor` failed in a way its own exception cannot say here: its
    result or exception could not be pickled where it ran, or not unpickled on the client;
    or its arguments could not be unpickled on the worker."""

    def __init__(self, message: str, node: str, rank: int) -> None:
        self.node = node  # the worker node that ran (or was to run) the task
        self.rank = rank
        super().__init__(message)
