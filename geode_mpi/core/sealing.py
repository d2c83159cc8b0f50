"""One checkpoint epoch written by every rank and sealed by rank 0 once every file is durable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from geode_mpi.base.gate import own_thread
from geode_mpi.base.logger import log
from geode_mpi.errors import GeodeTimeoutError
from geode_mpi.persistence import CheckpointError, CheckpointStore
from geode_mpi.persistence.manifest import MANIFEST
from geode_mpi.persistence.rankfile import RankFile, Syncing

if TYPE_CHECKING:
    from geode_mpi.core.runtime import Runtime
    from geode_mpi.transport import Rooted


def write_epoch(
    geode: Runtime,
    rooted: Rooted,
    store: CheckpointStore,
    epoch: int,
    tree: dict[str, Any],
    deadline: float | None,
    failed: Exception | None = None,
) -> tuple[RankFile, int]:
    """Collective: write this rank's file of ``epoch`` and seal the epoch: (the file, every
    file's bytes).

    Three rooted steps, one round each: a gather of the files' entries, a gather of whether
    each is durable, a broadcast of the outcome. Each rank makes its file's directory, writes
    its file straight to its name (the epoch is not a checkpoint until the manifest lists it)
    and sends rank 0 its entry while the disk takes the file's fsync; rank 0 meanwhile writes
    the manifest under its temporary name and fsyncs it and the directories, and renames it
    into place (sealing the epoch) once every rank's file is durable. ``failed``: why this
    rank has nothing to write (its part of the tree could not be made), told in the gather.

    A rank whose part fails, whatever the exception, takes every step all the same, so that
    every rank learns of it and none waits for it; the epoch is then removed (each rank its
    own file, rank 0 the directory with what is left), so that a full disk does not fail
    every later checkpoint too.

    Raises:
        CheckpointError: some rank could not save its part or write its file (each rank
            raises, naming the first; on the rank that failed, from its exception).
    """
    attrs = {"epoch": epoch, "rank": geode.rank, "size": geode.size}
    written: RankFile | str
    syncing: Syncing | None = None
    # (rank 0) the epoch was a checkpoint already (prepare refuses it), or the directory is
    # no longer this job's (`CheckpointStore.check_lock` refuses it): never remove it
    sealed_before = geode.rank == 0 and (store.sealed(epoch) or not store.holds_lock())
    try:
        if failed is not None:
            raise failed
        if geode.rank == 0:
            store.prepare(epoch, geode.size)  # refuses an epoch already sealed
        written, syncing = store.start_rank(epoch, geode.rank, geode.size, attrs, tree)
    except Exception as exc:  # any: raised here alone, it left the others waiting below
        failed = exc
        written = f"rank {geode.rank}: {_describe(exc)}"
    try:
        files = _waited(WRITTEN, rooted.gather, written, deadline)
        staged = None if files is None else _stage(geode, store, epoch, files, deadline)
    finally:
        synced = _durable(syncing, geode.rank, deadline)
    durable = _waited(DURABLE, rooted.gather, synced, deadline)
    outcome: tuple[str | None, int, list[int], bool] = (None, 0, [], False)
    if files is not None and durable is not None:  # rank 0
        outcome = _seal(store, epoch, files, staged, durable, sealed_before, deadline)
    # Sealed (or failed) on every rank: each returns a complete checkpoint's epoch.
    problem, total, pruned, discard = _waited(SEALED, rooted.bcast, outcome, deadline)
    for old in pruned:  # each rank its own file: no rank removes P files alone
        store.remove_rank_file(old, geode.rank, geode.size)
    if discard:  # every rank wrote (or failed) before the outcome: none writes there now
        store.remove_rank_file(epoch, geode.rank, geode.size)
        if geode.rank == 0:
            store.discard(epoch)
    if problem is not None or isinstance(written, str):
        raise CheckpointError(f"checkpoint {epoch} failed: {problem or written}") from failed
    return written, int(total)


def _describe(exc: Exception) -> str:
    """An exception as a line of a checkpoint's error: its text, and its type when that
    says something more."""
    if isinstance(exc, (CheckpointError, OSError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class SlowStep(GeodeTimeoutError):
    """A step of a checkpoint did not finish by the deadline; ``where`` says which: this
    rank's own, or the collective one it waited in (`_waited`)."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


# What a rank waited for in each collective step of `write_epoch`, as its timeout says it.
WRITTEN = "waiting for the other ranks to write their files"
DURABLE = "waiting for the other ranks' files to be durable (fsync)"
SEALED = "waiting for rank 0 to seal the checkpoint (its manifest)"


def _waited(where: str, step: Callable[..., Any], value: Any, deadline: float | None) -> Any:
    """``step(value, deadline=deadline)``, a rooted collective; its timeout as `SlowStep`
    naming ``where``."""
    try:
        return step(value, deadline=deadline)
    except GeodeTimeoutError:
        raise SlowStep(where) from None


def _durable(syncing: Syncing | None, rank: int, deadline: float | None) -> str | None:
    """Wait for this rank's file to be durable, until ``deadline``: None, or why it is not
    (no file: None, its writing failed and says so).

    Raises:
        SlowStep: its fsync had not finished by ``deadline``.
    """
    if syncing is None:
        return None
    try:
        syncing.wait(deadline)
    except TimeoutError:
        raise SlowStep(f"in this rank's fsync of {syncing.path}") from None
    except OSError as exc:
        return f"rank {rank}: fsync of its file: {exc}"
    return None


def _bounded(step: Callable[[], Any], deadline: float | None, where: str) -> Any:
    """``step()``, given until ``deadline`` (None: no limit): a fsync that hangs on a slow
    file system goes on in its thread, and the checkpoint's timeout is kept.

    The thread is a daemon (as `Syncing`'s): a step given up on never keeps the process from
    exiting (a pool's thread is joined at exit: a fsync hung on an NFS mount kept the job
    from ending, MPI never finalised).

    Raises:
        SlowStep: ``step`` had not finished by ``deadline``; naming it (``where``).
        Exception: what ``step`` raised.
    """
    if deadline is None:
        return step()
    done: list[Any] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(step())
        except BaseException as exc:  # (any: raised again in the caller's thread)
            failed.append(exc)

    thread = own_thread(threading.Thread(target=run, name="geode-seal", daemon=True))
    thread.start()
    thread.join(max(deadline - time.monotonic(), 0.0))
    if thread.is_alive():
        raise SlowStep(where)
    if failed:
        raise failed[0]
    return done[0]


def _stage(
    geode: Runtime,
    store: CheckpointStore,
    epoch: int,
    files: list[RankFile | str],
    deadline: float | None,
) -> str | None:
    """On rank 0, once every rank wrote its file: the manifest, staged (written and fsynced
    under its temporary name, the directories fsynced); None, or what failed."""
    failed = [file for file in files if isinstance(file, str)]
    if failed:
        return failed[0]
    written = [file for file in files if not isinstance(file, str)]
    info = {"nodes": list(geode.names), "size": geode.size}
    try:
        manifest = store.epoch_path(epoch) / MANIFEST
        where = f"in rank 0's writing and fsync of {manifest} (staged) and its directories"
        _bounded(lambda: store.stage_manifest(epoch, written, info), deadline, where)
    except SlowStep:  # (a TimeoutError, so an OSError: not the manifest's failure)
        raise
    except OSError as exc:
        return f"rank 0: the manifest: {exc}"
    return None


def _seal(
    store: CheckpointStore,
    epoch: int,
    files: list[RankFile | str],
    staged: str | None,
    durable: list[Any],
    sealed_before: bool,
    deadline: float | None,
) -> tuple[str | None, int, list[int], bool]:
    """On rank 0: the staged manifest renamed into place, once every rank's file is durable;
    then the epochs no longer kept are unsealed (`CheckpointStore.unseal`). (problem, bytes in
    all, epochs pruned, whether the failed epoch's files are to be removed)"""
    problem = staged or next((found for found in durable if found is not None), None)
    if problem is not None:
        return problem, 0, [], not sealed_before
    try:
        where = (
            f"in rank 0's fsync of {store.epoch_path(epoch)} after renaming its manifest "
            "(sealed: a restart may use it)"
        )
        _bounded(lambda: store.commit_manifest(epoch), deadline, where)
    except SlowStep:
        raise
    except OSError as exc:
        return f"rank 0: the manifest: {exc}", 0, [], True
    try:
        pruned = store.unseal(store.prunable())
    except OSError as exc:  # listing the directory: the checkpoint just made stands anyway
        log.warning("old checkpoints in %s not removed: %s", store.directory, exc)
        pruned = []
    return None, sum(file.size for file in files if not isinstance(file, str)), pruned, False
