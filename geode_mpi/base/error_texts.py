"""The texts of geode_mpi's errors: node lists, routes, and the text each error class gives."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from geode_mpi.base.arguments import whole


def describe_nodes(nodes: Sequence[str]) -> str:
    """Return a short human description of a node list, e.g. ``node0..node3``."""
    default = [f"node{k}" for k in range(len(nodes))]
    if list(nodes) == default and len(nodes) > 2:
        return f"{nodes[0]}..{nodes[-1]}"
    if len(nodes) > 8:
        return ", ".join(nodes[:4]) + f", ... ({len(nodes)} nodes)"
    return ", ".join(nodes)


def _unknown_node_text(node: object, nodes: Sequence[str], argument: str) -> str:
    """`UnknownNodeError`'s text: a number that is no int index (1.0, True) is told apart."""
    kind = ""
    number = isinstance(node, numbers.Number) or hasattr(node, "dtype")  # numpy's too
    if number and not isinstance(node, str) and whole(node) is None:
        kind = f" (a {type(node).__name__}: a node is its name or its int index)"
    return f"unknown {argument} {node!r}{kind}: this job has nodes {describe_nodes(nodes)}"


def _node_not_local_text(call: str, node: str, rank: int, host_rank: int) -> str:
    """`NodeNotLocalError`'s text."""
    return (
        f"{call}({node!r}) was called on rank {rank}, but {node} lives on rank "
        f"{host_rank}: guard the call with `if geode.hosts({node!r}):`, or call "
        f"{call}() without a node to use this rank's own node"
    )


def _encode_text(what: str, value_type: type, reason: BaseException) -> str:
    """`EncodeError`'s text."""
    name = f"{value_type.__module__}.{value_type.__qualname__}"
    return f"cannot send {what} of type {name}: {type(reason).__name__}: {reason}; nothing was sent"


def _queue_full_text(dest: str, source: str, capacity: int | None, window: int, reason: str) -> str:
    """`QueueFull`'s text."""
    limit = f"capacity {capacity}, " if capacity is not None else ""
    return (
        f"{dest}'s queue is full for {source} ({limit}{window} message(s) per sending "
        f"node): {reason}; nothing was sent"
    )


def _route(source: str, dest: str, topic: str | None) -> str:
    """``source->dest``, or for a publish ``source on topic 'name'``."""
    return f"{source}->{dest}" if topic is None else f"{source} on topic {topic!r}"


def _receive_timeout_text(
    node: str,
    timeout: float,
    source: str | None,
    type_name: str | None,
    queued: int,
    waited: bool,
    call: str,
    reply_to: int | None,
    hint: str = "",
    closing_rank: int | None = None,
    closing_ranks: str | None = None,
    topic: str | None = None,
) -> str:
    """`ReceiveTimeout`'s text (``hint``: a last clause the caller adds, "" for none;
    ``closing_rank``: the rank of ``source``, in close(), whose every message has arrived;
    ``closing_ranks``: with no source, every other rank, in close(), named: "ranks 1-3";
    ``topic``: the receive's topic filter, a topic's name or a pattern)."""
    wanted = []
    if source is not None:
        wanted.append(f"source={source}")
    if type_name is not None:
        wanted.append(f"type={type_name}")
    if topic is not None:
        wanted.append(f"topic={topic}")
    what = f" ({', '.join(wanted)})" if wanted else ""
    tail = f"; {queued} other message(s) are queued there" if queued else ""
    if closing_rank is not None:
        text = (
            f"{call} on {node} found no message{what}, and none can arrive: {source}'s rank "
            f"(rank {closing_rank}) is in close() and sends nothing more, and every message it "
            "sent this rank has arrived (a message never sent? every rank receives what it "
            "waits for before close())"
        )
        what = ""
    elif closing_ranks is not None:
        text = (
            f"{call} on {node} found no message{what}, and none can arrive: every other rank "
            f"({closing_ranks}) is in close() and sends nothing more, every message they sent "
            "this rank has arrived, and no other thread or handler of this rank can send (a "
            "message never sent? a rank that ended its loop early? every rank receives what "
            "it waits for before close())"
        )
        what = ""
    elif waited:
        text = f"{call} on {node} timed out after {timeout:g} s waiting for a message"
    else:
        text = (
            f"{call} on {node} found no message{what}, and none can arrive: in a "
            f"one-process world nothing is sent while {call}() waits (send first)"
        )
        what = ""
    late = (
        f"; a reply that comes later waits in {node}'s queue as a message with reply_to={reply_to}"
        if reply_to is not None and waited
        else ""
    )
    return f"{text}{what}{tail}{late}{hint}"


def _send_timeout_text(
    message_id: int,
    source: str,
    dest: str,
    timeout: float,
    in_flight: bool,
    topic: str | None,
) -> str:
    """`SendTimeout`'s text."""
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
    return text


def no_room(source: str, dest: str, within: str, topic: str | None = None) -> str:
    """Why a send from ``source`` (a publish on ``topic``) waits or waited for room at ``dest``
    (``within``: how long, or what fills it), as `SendTimeout` and a long wait's notice say."""
    full_for, at = (f"topic {topic!r}", "subscriber ") if topic else (source, "")
    return (
        f"no room at {at}{dest} {within} ({dest}'s queue stayed full for {full_for}: is {dest} "
        "receiving?)"
    )


def _ack_timeout_text(
    message_id: int,
    source: str,
    dest: str,
    seq: int,
    timeout: float,
    waited: bool,
    topic: str | None,
    count: int,
) -> str:
    """`AckTimeout`'s text."""
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
    return (
        f"message {message_id} ({_route(source, dest, topic)} seq {seq}) was not "
        f"acknowledged {why}; it stays in {source}'s outbox and may still be processed, once"
    )


def _not_processed_text(
    message_id: int,
    source: str,
    dest: str,
    seq: int,
    why: str,
    topic: str | None,
    count: int,
) -> str:
    """`NotProcessed`'s text."""
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
        how = f"its ttl ran out in {dest}'s queue before it was taken (counted in stats().expired)"
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
    return (
        f"message {message_id} ({_route(source, dest, topic)} seq {seq}) was not processed"
        f"{by}: {how}; {end}"
    )


def _closed_text(
    operation: str, closer: str | None, unfinished: bool, late: bool, in_flight: bool
) -> str:
    """`ClosedError`'s text (``late``: called after close() began, which still runs;
    ``in_flight``: the send's message went before close() began)."""
    text = _closed_why(operation, closer, unfinished, late)
    if in_flight:
        text += (
            ". Its message was sent before close() began and is delivered all the same: it "
            "arrives once and may be processed (ClosedError.in_flight), though no ack "
            "will come; do not send it again blindly"
        )
    return text


def _closed_why(operation: str, closer: str | None, unfinished: bool, late: bool) -> str:
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


def _terminated_text(waited: float, grace: float, left: float) -> str:
    """`Terminated`'s text (``left``: seconds before the process is ended)."""
    return (
        f"SIGTERM {waited:.1f} s ago, and this call was still waiting: a blocking call "
        f"gets half of term_grace={grace:g} s after a SIGTERM, then raises Terminated; the "
        f"process ends in {left:.1f} s (catch Terminated to save the job's state; "
        "maybe_checkpoint() on every rank writes a last checkpoint and exits 0)"
    )


def _handler_text(
    node: str, request_id: int, type_name: str, error_type: str, error: str, attempts: int
) -> str:
    """`HandlerError`'s text."""
    return (
        f"request {request_id} ({type_name}) failed on {node} after {attempts} "
        f"attempt(s): {error_type}: {error} (it is in {node}'s dead letters)"
    )


def _wrong_pmi_text(step_tasks: int, world_size: int, found: str, launcher: str | None) -> str:
    """`WrongPMIError`'s text."""
    # GEODE_TRANSPORT is launch.MODE_VARIABLE; launch imports errors.py (so this module), not back
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
    return (
        f"{said} To run independent one-process copies on purpose, set "
        f"GEODE_TRANSPORT=inproc. (geode_mpi found {found})"
    )


def _remote_traceback_text(traceback: str, node: str, rank: int) -> str:
    """`RemoteTraceback`'s text: ``traceback`` under a heading naming where it ran."""
    body = traceback.rstrip()
    first = "Traceback (most recent call last):"
    if body.startswith(first):
        body = body[len(first) :].lstrip("\n")
    return f'\n"""\nTraceback on {node} (rank {rank}), most recent call last:\n{body}\n"""'
