"""What each rank of a restart reads: rank 0 reads the manifest once and plans every rank's
part; each rank reads only the files that hold its nodes.

A restart on the same number of ranks reads its own file, as it was saved. On another number
of ranks, node k moves to rank k mod P' (`Placement.rank_of`): a rank reads the old files of
the ranks that hosted its nodes, and takes from each only those nodes, with their queues, pairs
(dedup state and numbering), outboxes, counters and per-node state. The job's per-rank state
goes to the rank of the same number, when the old job had one; the keys of an old rank's that
no rank takes are read by the rank hosting its first node, for rank 0's warning.

Topics and work queues move with the node that sends on their streams: a topic stream's
publisher (or a total-order topic's sequencer) takes the stream's numbering, retained messages
and the sending side of its (stream, subscriber) pairs with their outboxes; a work queue's
dispatcher takes its held tasks, its consumers' open requests and the sending side of its
(queue, consumer) pairs. Each subscriber and consumer takes its receiving side (dedup state)
and its queue, which holds what was published or handed out to it and not yet processed. The
streams' member ranks are derived again from the new placement when the job creates its
topics, so a message is delivered once to each subscriber and a task processed once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from geode_mpi.base.record import Record
from geode_mpi.codec import header
from geode_mpi.core.placement import Placement
from geode_mpi.core.saved import (
    count,
    decode_node_state,
    decode_state,
    held_unsaved,
    index_key,
    indices,
    load_patterns,
    load_queue,
    load_topic,
    mapping,
    state_keys,
)
from geode_mpi.persistence.manifest import MANIFEST
from geode_mpi.persistence.rankfile import CheckpointError, read_rank_file
from geode_mpi.persistence.snapshot import Restored, load

if TYPE_CHECKING:
    from geode_mpi.core.runtime import Runtime
    from geode_mpi.delivery import Engine
    from geode_mpi.persistence.store import CheckpointStore


class OtherJob(Exception):
    """A valid checkpoint of another shape of job: an error, not a reason to fall back."""


class Part(Record):
    """One rank's part of a checkpoint, planned by rank 0 and scattered: the manifest entries
    of the files it reads (by the rank that wrote them), or why it cannot be used."""

    __match_args__ = ("saved_ranks", "files", "problem", "mismatch")

    def __init__(
        self,
        saved_ranks: int = 0,
        files: dict[int, dict[str, Any]] | None = None,
        problem: str | None = None,
        mismatch: str | None = None,
    ) -> None:
        self.saved_ranks = saved_ranks
        self.files = {} if files is None else files
        self.problem = problem  # the epoch is damaged: try an older one
        self.mismatch = mismatch  # the checkpoint is of another job: stop


class Loaded(Record):
    """One rank's part of a checkpoint, read and checked, not yet put in place."""

    __match_args__ = (
        "epoch",
        "engine",
        "counters",
        "topics",
        "queues",
        "state",
        "node_state",
        "stream_topics",
        "patterns",
        "consumers",
        "arguments",
    )

    def __init__(self, epoch: int, engine: Restored) -> None:
        self.epoch = epoch
        self.engine = engine
        self.counters: dict[int, int] = {}
        self.topics: dict[str, Any] = {}
        self.queues: dict[str, Any] = {}
        # by work queue: (the consumers hosted here it is over for, their requests to send)
        self.consumers: dict[str, tuple[list[int], list[int]]] = {}
        # by work queue: its arguments as saved (the same in every file)
        self.arguments: dict[str, dict[str, Any]] = {}
        self.state: dict[str, Any] = {}
        self.node_state: dict[int, Any] = {}
        # (topic name, publisher node) by stream number (the saved roots)
        self.stream_topics: dict[int, tuple[str, int]] = {}
        # the pattern subscriptions: (pattern, prefix?, member nodes), the same in every file
        self.patterns: list[tuple[str, bool, list[int]]] = []
        # total-order topics whose sequencer is hosted here, saved before a sequencer's held
        # messages were (`saved.held_unsaved`): name -> sequencer node
        self.held_unsaved: dict[str, int] = {}
        # the ranks of the saved job (0 until read)
        self.saved_ranks = 0
        # the executors its job had made, and the stream numbers topics and work queues skip
        # (`Checkpointer.skipped_streams`): the same in every file (0 and none before 51)
        self.executors = 0
        self.skipped_streams: list[int] = []
        # old ranks this job does not have whose per-rank state (its keys) is not restored;
        # each told by the one rank that hosts the old rank's first node (`gone_state`)
        self.gone_state: dict[int, list[str]] = {}


def plan(store: CheckpointStore, epoch: int, names: tuple[str, ...], size: int) -> list[Part]:
    """Every rank's `Part` of ``epoch`` for a job of ``names`` on ``size`` ranks (rank 0 reads
    the manifest, once, here: O(ranks) bytes, where every rank reading it would make
    O(ranks^2) in all). Never raises: the other ranks wait for its parts."""
    try:
        return _plan(store, epoch, names, size)
    except CheckpointError as exc:  # it names the manifest
        return [Part(problem=str(exc))] * size
    except Exception as exc:  # anything else a damaged manifest makes us raise
        problem = f"{store.epoch_path(epoch) / MANIFEST}: {type(exc).__name__}: {exc} (damaged?)"
        return [Part(problem=problem)] * size


def _plan(store: CheckpointStore, epoch: int, names: tuple[str, ...], size: int) -> list[Part]:
    manifest = store.manifest(epoch)
    path = store.epoch_path(epoch) / MANIFEST
    nodes, saved_ranks = manifest.get("nodes"), manifest["ranks"]
    if not isinstance(nodes, list) or not all(isinstance(name, str) for name in nodes):
        return [Part(problem=f"{path}: nodes {nodes!r} is not a list of names")] * size
    if nodes != list(names):
        mismatch = (
            f"{path.parent}: saved with nodes {nodes} on {saved_ranks} rank(s); this job has "
            f"nodes {list(names)} on {size}: restart with the same nodes"
        )
        return [Part(mismatch=mismatch)] * size
    if len(nodes) < saved_ranks:
        return [Part(problem=f"{path}: {len(nodes)} nodes on {saved_ranks} ranks")] * size
    files = manifest["files"]
    saved = Placement(names, saved_ranks)
    new = Placement(names, size)
    parts = []
    for rank in range(size):
        # The ranks that hosted this rank's nodes, and the rank of its number (per-rank state).
        owners = {saved.rank_of(index) for index in new.hosted_by(rank)}
        if rank < saved_ranks:
            owners.add(rank)
        parts.append(Part(saved_ranks, {old: files[old] for old in sorted(owners)}))
    return parts


def read_part(geode: Runtime, store: CheckpointStore, epoch: int, part: Part) -> Loaded:
    """This rank's part of ``epoch``, read and checked; nothing is changed yet.

    Raises:
        OtherJob: a checkpoint this job cannot take on another number of ranks.
        CheckpointError: anything wrong with a file or its content.
    """
    store.check_files(epoch, list(part.files.values()))
    replaced = part.saved_ranks != geode.size
    saved = Placement(geode.names, part.saved_ranks)
    hosted = geode.engine.inboxes
    loaded = Loaded(epoch, Restored())
    loaded.saved_ranks = part.saved_ranks
    for old, entry in part.files.items():
        path = store.epoch_path(epoch) / entry["name"]
        _, tree = read_rank_file(path)
        try:
            topics = {
                name: load_topic(state)
                for name, state in mapping(tree.get("topics", {}), "topics").items()
            }
            queues = {
                name: load_queue(state, geode.names)
                for name, state in mapping(tree.get("queues", {}), "queues").items()
            }
            loaded.held_unsaved.update(held_unsaved(topics, hosted))
            roots = stream_roots(
                topics, queues, part.saved_ranks, store.epoch_path(epoch), replaced
            )
            engine = load(geode.engine, tree.get("engine"), replaced, roots)
            loaded.engine.merge(engine)
            for name, state in topics.items():
                for number, publisher in (state["roots"] or {}).items():
                    loaded.stream_topics[number] = (name, publisher)
            saved_geode = mapping(tree.get("geode"), "geode")
            loaded.patterns = load_patterns(saved_geode.get("patterns"))
            loaded.executors = count(saved_geode.get("executors", 0))
            skipped = indices(saved_geode.get("skipped_streams", []), "geode/skipped_streams")
            loaded.skipped_streams = skipped or []
            counters = mapping(saved_geode.get("counters"), "counters")
            for key, value in counters.items():
                index = index_key(key, "counters")
                if index in hosted or not replaced:
                    loaded.counters[index] = count(value)
            for key, value in mapping(tree.get("node_state", {}), "node_state").items():
                index = index_key(key, "node_state")
                if index in hosted:
                    loaded.node_state[index] = decode_node_state(value)
                elif not replaced:
                    raise CheckpointError(f"node_state: node index {index} is not hosted here")
            for name, state in queues.items():
                loaded.arguments.setdefault(name, state["arguments"])
                ended, asks = loaded.consumers.setdefault(name, ([], []))
                ended += [index for index in state["ended"] if index in hosted]
                asks += [index for index in state["asks"] if index in hosted]
            if old == geode.rank:
                loaded.state = decode_state(tree.get("state"))
            elif old >= geode.size and old in hosted and (keys := state_keys(tree.get("state"))):
                loaded.gone_state[old] = keys  # (node ``old`` is the old rank's first)
            if not replaced:
                loaded.topics, loaded.queues = topics, queues
            else:
                moved = {node for node in hosted if saved.rank_of(node) == old}
                _take_over(loaded, topics, queues, moved)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
    return loaded


def name_restored_topics(loaded: Loaded, engine: Engine) -> None:
    """Before the job calls `topic()` again: give the topic messages restored into the queues
    their topic's name (``msg.topic``: the saved streams say which topic each is of, and the
    messages their topic's number, the same once the topics are made in the same order), and
    tell the engine which topics each publisher sends on (a resend that comes before then is
    dropped, and comes again: `TopicNotMadeYet` says so)."""
    topics = engine.topics
    for name, publisher in loaded.stream_topics.values():
        named = topics.restored.setdefault(publisher, [])
        if name not in named:
            named.append(name)
    for parcels in loaded.engine.waiting.values():
        for parcel in parcels:
            found = loaded.stream_topics.get(parcel.source)
            if found is not None and parcel.flags & header.FLAG_TOPIC:
                topics.names.setdefault(header.topic_number(parcel.meta), found[0])


def stream_roots(
    topics: dict[str, Any], queues: dict[str, Any], saved_ranks: int, where: Path, replaced: bool
) -> dict[int, int] | None:
    """On another number of ranks, the node that sends on each topic and work-queue stream,
    by stream number (a stream's sending side moves with it); else None.

    Raises:
        OtherJob: the checkpoint did not record them (an older geode_mpi wrote it).
    """
    if not replaced:
        return None
    roots: dict[int, int] = {}
    for state in topics.values():
        roots.update(state["roots"] or {})
    for state in queues.values():
        if state["root"] is not None:
            roots[state["root"][0]] = state["root"][1]
    missing = [name for name, state in topics.items() if state["roots"] is None]
    missing += [name for name, state in queues.items() if state["root"] is None]
    if missing:
        raise OtherJob(
            f"{where}: saved on {saved_ranks} rank(s) by a geode_mpi that did not record which "
            f"node sends on the streams of topics and work queues {sorted(missing)}; it can "
            f"restart only on {saved_ranks} rank(s)"
        )
    return roots


def _take_over(
    loaded: Loaded, topics: dict[str, Any], queues: dict[str, Any], moved: set[int]
) -> None:
    """From one old rank's file, the state of the topic streams and work queues whose sending
    node (publisher, sequencer or dispatcher) moved here from that rank. Every topic and
    queue gets an entry, so that a queue is never started afresh (its consumers' requests are
    in its dispatcher's state, wherever that is)."""
    for name, state in topics.items():
        # its subscribers: the same in every old rank's file
        every = {
            "subscribers": state.get("subscribers"),
            "named": state.get("named"),
            "arguments": state.get("arguments"),
            "roots": state.get("roots"),
        }
        mine = loaded.topics.setdefault(name, {"next_seq": {}, "retained": {}, **every})
        for number, root in state["roots"].items():
            if root in moved:
                mine["next_seq"][number] = state["next_seq"].get(number, 0)
                mine["retained"][number] = state["retained"].get(number, [])
    for name, state in queues.items():
        if state["root"][1] in moved:
            loaded.queues[name] = state
        else:
            loaded.queues.setdefault(name, None)
