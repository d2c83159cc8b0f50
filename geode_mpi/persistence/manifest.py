"""A checkpoint's manifest: its shape checked before it is trusted, and its optional HMAC.

With a job key (``GEODE_CHECKPOINT_KEY``), the manifest carries ``hmac``: HMAC-SHA256, keyed,
over its canonical JSON (sorted keys, no spaces) without the ``hmac`` field. The manifest lists
each rank file's SHA-256, so the HMAC covers the rank files too: a file planted in the
directory with a recomputed checksum fails authentication and is never read, let alone
unpickled. docs/checkpoints.md describes the trust model.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from geode_mpi.base.shards import group_name as group_name
from geode_mpi.base.shards import sharded
from geode_mpi.codec.header import VERSION as CODEC_VERSION
from geode_mpi.persistence.checks import brief
from geode_mpi.persistence.rankfile import CheckpointError, rank_name

MANIFEST = "manifest.json"
# The manifest's version. 4: rank files in sub-directories of at most ``per_dir`` files,
# per-node state in the rank files, and the codec version of the messages saved (``codec``).
# Format 3 is not read: its messages are in codec version 4, which this codec does not decode.
MANIFEST_FORMAT = 4
KEY_VARIABLE = "GEODE_CHECKPOINT_KEY"
_MAC_PREFIX = "hmac-sha256:"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def key_from_environment() -> bytes | None:
    """The job key from ``GEODE_CHECKPOINT_KEY`` (its UTF-8 bytes), None when unset.

    Raises:
        CheckpointError: the variable is set but empty (a job meant to authenticate its
            checkpoints would silently not).
    """
    value = os.environ.get(KEY_VARIABLE)
    if value is None:
        return None
    if not value:
        raise CheckpointError(f"{KEY_VARIABLE} is set but empty: set a secret, or unset it")
    return value.encode()


def rank_path(rank: int, ranks: int, per_dir: int) -> str:
    """Where ``rank``'s file of a checkpoint of ``ranks`` goes, relative to its epoch's
    directory: in the directory itself while there are at most ``per_dir`` files, else in
    sub-directory ``ranks-NNNN`` of ``per_dir`` files each (`base.shards`)."""
    return sharded(rank_name(rank), rank, ranks, per_dir)


def _canonical(manifest: dict[str, Any]) -> bytes:
    body = {key: value for key, value in manifest.items() if key != "hmac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign(manifest: dict[str, Any], key: bytes) -> str:
    """The ``hmac`` field for ``manifest``."""
    import hashlib  # here, not at the top: they load OpenSSL (3.5 MB a rank), for checkpoints only
    import hmac

    return _MAC_PREFIX + hmac.new(key, _canonical(manifest), hashlib.sha256).hexdigest()


def _is_int(value: Any, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def check_manifest(path: Path, epoch: int, manifest: Any, key: bytes | None) -> dict[str, Any]:
    """``manifest`` (parsed JSON read from ``path``) if it is an authentic manifest of
    ``epoch`` in this format, else `CheckpointError` naming the file and what is wrong.

    With ``key``, the HMAC is checked before anything else in the manifest is looked at.
    """
    if not isinstance(manifest, dict):
        raise CheckpointError(
            f"{path}: a JSON {type(manifest).__name__}, not an object (damaged manifest)"
        )
    mac = manifest.get("hmac")
    if key is not None:
        if mac is None:
            raise CheckpointError(
                f"{path}: not authenticated: no hmac, and {KEY_VARIABLE} is set (written "
                "without the key?)"
            )
        import hmac  # see sign()

        if not isinstance(mac, str) or not hmac.compare_digest(mac, sign(manifest, key)):
            raise CheckpointError(
                f"{path}: fails authentication: its hmac does not match {KEY_VARIABLE} "
                "(written with another key, or altered)"
            )
    elif mac is not None and not isinstance(mac, str):
        raise CheckpointError(f"{path}: hmac {mac!r} is not a string (damaged manifest)")
    if manifest.get("geode_format") != MANIFEST_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {manifest.get('geode_format')!r}, this geode_mpi reads "
            f"format {MANIFEST_FORMAT} (a checkpoint of another version of geode_mpi: restart "
            "with that version)"
        )
    if manifest.get("codec") != CODEC_VERSION:
        raise CheckpointError(
            f"{path}: its messages are in codec version {manifest.get('codec')!r}, this geode_mpi "
            f"speaks {CODEC_VERSION} (a checkpoint of another version of geode_mpi: restart with "
            "that version)"
        )
    problem = _shape_problem(manifest, epoch)
    if problem:
        raise CheckpointError(f"{path}: {problem} (damaged manifest)")
    return manifest


def _shape_problem(manifest: dict[str, Any], epoch: int) -> str | None:
    if manifest.get("epoch") != epoch or not _is_int(manifest.get("epoch")):
        return f"epoch {manifest.get('epoch')!r}, its directory says {epoch}"
    created = manifest.get("created")
    if isinstance(created, bool) or not isinstance(created, (int, float)):
        return f"created {created!r} is not a time"
    ranks, files = manifest.get("ranks"), manifest.get("files")
    if not _is_int(ranks, 1):
        return f"ranks {ranks!r} is not an int >= 1"
    if not isinstance(files, list) or len(files) != ranks:
        return f"files must list {ranks} rank files, got {brief(files, 80)}"
    per_dir = manifest.get("per_dir", ranks)
    if not _is_int(per_dir, 1):
        return f"per_dir {per_dir!r} is not an int >= 1"
    for rank, entry in enumerate(files):
        if (
            not isinstance(entry, dict)
            or entry.get("name") != rank_path(rank, ranks, per_dir)
            or not _is_int(entry.get("size"))
            or not isinstance(entry.get("sha256"), str)
            or not _SHA256.fullmatch(entry["sha256"])
        ):
            return (
                f"files[{rank}] must be {{name: {rank_path(rank, ranks, per_dir)!r}, size, "
                f"sha256}}, got "
                f"{brief(entry, 80)}"
            )
    return None
