"""Reading a checkpoint directory: its epochs, a manifest checked, the files checked against
it, the newest complete one (`CheckpointStore`'s part; store.py assembles it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from geode_mpi.base.record import Record
from geode_mpi.persistence.manifest import MANIFEST, check_manifest
from geode_mpi.persistence.rankfile import CheckpointError, read_rank_file, sha256_of


def epoch_name(epoch: int) -> str:
    return f"epoch-{epoch:06d}"


class Loaded(Record):
    """A complete checkpoint, validated: its manifest, and each rank file's path."""

    __match_args__ = ("epoch", "path", "manifest", "authenticated")

    def __init__(
        self, epoch: int, path: Path, manifest: dict[str, Any], authenticated: bool = False
    ) -> None:
        self.epoch = epoch
        self.path = path
        self.manifest = manifest
        self.authenticated = authenticated  # its HMAC was checked against the job key

    def rank_path(self, rank: int) -> Path:
        return self.path / str(self.manifest["files"][rank]["name"])

    def read(self, rank: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(attrs, tree) of one rank's file (its checksum was checked when loading).

        Raises:
            CheckpointError: any HDF5 or content error in the file (see `read_rank_file`).
        """
        return read_rank_file(self.rank_path(rank))


class Reading:
    """`CheckpointStore`'s reads (the state its ``__init__`` sets, declared here)."""

    directory: Path
    key: bytes | None

    def epoch_path(self, epoch: int) -> Path:
        return self.directory / epoch_name(epoch)

    # -- reading -----------------------------------------------------------------------------

    def epochs(self, complete_only: bool = True) -> list[int]:
        """Epoch numbers found, newest first (with a manifest only, by default)."""
        found: list[int] = []
        if not self.directory.is_dir():
            return found
        for entry in self.directory.iterdir():
            if not entry.name.startswith("epoch-") or not entry.is_dir():
                continue
            try:
                epoch = int(entry.name[len("epoch-") :])
            except ValueError:
                continue
            if not complete_only or (entry / MANIFEST).is_file():
                found.append(epoch)
        return sorted(found, reverse=True)

    def manifest(self, epoch: int) -> dict[str, Any]:
        """An epoch's manifest, parsed and checked: its shape, and its HMAC with a key.

        Raises:
            CheckpointError: naming the manifest and what is wrong with it.
        """
        manifest_path = self.epoch_path(epoch) / MANIFEST
        try:
            text = manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CheckpointError(
                f"{manifest_path}: missing (the checkpoint is incomplete)"
            ) from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{manifest_path}: unreadable: {exc}") from exc
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise CheckpointError(f"{manifest_path}: unreadable: {exc}") from exc
        return check_manifest(manifest_path, epoch, parsed, self.key)

    def validate(self, epoch: int, rank: int | None = None) -> Loaded:
        """Check an epoch's manifest and every file it lists (or only ``rank``'s: each rank of
        a restarting job checks its own, in parallel), before anything is read.

        Raises:
            CheckpointError: naming the file and what is wrong with it.
        """
        path = self.epoch_path(epoch)
        manifest = self.manifest(epoch)
        manifest_path = path / MANIFEST
        entries = manifest["files"]
        if rank is not None:
            if not 0 <= rank < len(entries):
                raise CheckpointError(f"{manifest_path}: has no file for rank {rank}")
            entries = [entries[rank]]
        self.check_files(epoch, entries)
        return Loaded(epoch, path, manifest, self.key is not None)

    def check_files(self, epoch: int, entries: list[dict[str, Any]]) -> None:
        """Check rank files against their manifest entries (from `manifest`): each is there,
        with its size and SHA-256.

        Raises:
            CheckpointError: naming the file and what is wrong with it.
        """
        for entry in entries:
            file = self.epoch_path(epoch) / entry["name"]
            if not file.exists():
                raise CheckpointError(f"{file}: missing (listed in the manifest)")
            size = file.stat().st_size
            if size != entry["size"]:
                raise CheckpointError(
                    f"{file}: {size} bytes, the manifest says {entry['size']} (truncated?)"
                )
            if sha256_of(file) != entry["sha256"]:
                raise CheckpointError(f"{file}: checksum mismatch (corrupted)")

    def newest(self, problems: list[str] | None = None) -> Loaded | None:
        """The newest complete and valid checkpoint (None if there is none); what was skipped
        and why goes to ``problems``."""
        for epoch in self.epochs(complete_only=False):
            try:
                return self.validate(epoch)
            except CheckpointError as exc:
                if problems is not None:
                    problems.append(str(exc))
        return None

    def __iter__(self) -> Iterator[int]:
        return iter(self.epochs())
