"""``python -m geode_mpi inspect DIR``: what a checkpoint directory holds, and what a restart
would resume from."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.persistence import (
    KEY_VARIABLE,
    CheckpointError,
    CheckpointStore,
    Loaded,
    key_from_environment,
)
from geode_mpi.persistence.checks import brief
from geode_mpi.persistence.store import LOCK, MANIFEST, holder_of

if TYPE_CHECKING:
    import numpy as np
else:  # imported when a checkpoint is inspected
    np = on_first_use("numpy", globals(), "np")


def _summary(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array {value.dtype} {tuple(value.shape)}"
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    return brief(value)


def _tree_lines(tree: dict[str, Any], depth: int, indent: str = "    ") -> list[str]:
    lines = []
    for key in sorted(tree):
        value = tree[key]
        if isinstance(value, dict):
            if depth <= 1:
                lines.append(f"{indent}{key}/ ({len(value)} entries)")
            else:
                lines.append(f"{indent}{key}/")
                lines += _tree_lines(value, depth - 1, indent + "  ")
        else:
            lines.append(f"{indent}{key}: {_summary(value)}")
    return lines


def inspect_lines(directory: str | Path, depth: int = 3) -> list[str]:
    """The report, as lines."""
    try:
        store = CheckpointStore(directory, key=key_from_environment())
    except CheckpointError as exc:
        return [str(exc)]
    path = Path(directory)
    if not path.is_dir():
        return [f"{path}: no such directory"]
    lines = [f"checkpoint directory {path}"]
    lock = path / LOCK
    if lock.exists() and lock.read_text(encoding="utf-8").strip():
        lines.append(f"  last locked by: {holder_of(lock.read_text(encoding='utf-8'))}")
    epochs = store.epochs(complete_only=False)
    if not epochs:
        return [*lines, "  no checkpoints"]
    resume: Loaded | None = None
    trees: list[dict[str, Any]] = []
    for epoch in epochs:
        try:
            loaded = store.validate(epoch)
            if resume is None:  # what a restart reads: damage the checksum cannot see shows
                trees = [loaded.read(rank)[1] for rank in range(loaded.manifest["ranks"])]
        except CheckpointError as exc:
            if (store.epoch_path(epoch) / MANIFEST).exists():
                lines.append(f"  epoch {epoch}: BAD: {exc}")
            elif resume is not None:  # (older than a usable one: what the next one prunes)
                lines.append(
                    f"  epoch {epoch}: unsealed, older than epoch {resume.epoch}: an old "
                    "checkpoint retention removed (or one that failed); the next checkpoint "
                    "removes what is left of it"
                )
            else:
                lines.append(f"  epoch {epoch}: incomplete: {exc}")
            continue
        created = datetime.datetime.fromtimestamp(loaded.manifest["created"]).isoformat(
            timespec="seconds"
        )
        size = sum(file["size"] for file in loaded.manifest["files"])
        lines.append(
            f"  epoch {epoch}: complete, {_authentication(loaded)}{loaded.manifest['ranks']} "
            f"rank file(s), {size:,} bytes, written {created}"
        )
        if resume is None:
            resume = loaded
    if resume is None:
        if store.epochs(complete_only=True):
            return [
                *lines,
                "a restart would stop with an error: no checkpoint here can be used (move the "
                "directory aside to start afresh)",
            ]
        return [*lines, "a restart would find no complete checkpoint and start afresh"]
    lines.append(f"a restart resumes from epoch {resume.epoch}:")
    for key in sorted(resume.manifest):
        if key not in ("files", "geode_format", "codec", "epoch", "created", "ranks", "hmac"):
            lines.append(f"  {key}: {_summary(resume.manifest[key])}")
    nodes = resume.manifest.get("nodes", [])
    for rank, tree in enumerate(trees):
        lines.append(f"  rank {rank} ({resume.rank_path(rank).name}):")
        if "engine" in tree:
            lines += _geode_lines(tree, nodes)
        else:
            lines += _tree_lines(tree, depth)
    return lines


def _authentication(loaded: Loaded) -> str:
    if loaded.authenticated:
        return "authenticated, "
    if "hmac" in loaded.manifest:
        return f"carries an HMAC (not checked: no {KEY_VARIABLE}), "
    return ""


def _geode_lines(tree: dict[str, Any], nodes: list[str]) -> list[str]:
    """A Geode checkpoint's rank file, read as such: queues, outboxes, topics, state."""
    lines = []
    engine = tree["engine"]
    for key, node in sorted(engine["nodes"].items(), key=lambda item: int(item[0])):
        index = int(key)
        name = nodes[index] if index < len(nodes) else f"node index {index}"
        depth = len(np.asarray(node["queue_fields"]).reshape(-1, 5))
        stats = node["info"]["stats"]
        held = ""
        if "forwards" in node:  # (a sequencer holding messages for want of room)
            count = len(np.asarray(node["forwards"]["queue_fields"]).reshape(-1, 5))
            held = f", {count} held to be sent on"
        kept = node["info"]["dead_letters"]  # (the newest max_dead_letters; all counted)
        dead = stats.get("dead_letters", kept)
        lines.append(
            f"    {name}: {depth} message(s) queued{held}; sent {stats['sent']}, received "
            f"{stats['received']}, processed {stats['processed']}, dead letters {dead}"
            + (f" ({kept} kept)" if dead != kept else "")
        )
    outbox = len(np.asarray(engine["outbox_fields"]).reshape(-1, 4))
    lines.append(f"    outbox: {outbox} message(s) sent and not yet acknowledged")
    for name, topic in sorted(tree.get("topics", {}).items()):
        retained = sum(len(np.asarray(r["frame_counts"])) for r in topic["retained"].values())
        lines.append(f"    topic {name!r}: next numbers {topic['next_seq']}, {retained} retained")
    for name, queue in sorted(tree.get("queues", {}).items()):
        tasks = len(np.asarray(queue["tasks"]["frame_counts"]))
        lines.append(f"    work queue {name!r}: {tasks} task(s) held by its dispatcher here")
    state = tree.get("state", {})
    keys = sorted([*state.get("plain", {}), *state.get("pickled", {})])
    lines.append(f"    state keys: {', '.join(keys) if keys else '(none)'}")
    return lines
