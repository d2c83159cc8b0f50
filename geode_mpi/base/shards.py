"""A file per rank, in sub-directories once one directory would hold too many of them.

A directory of 2,000 files (one per rank) is slow to list and to create files in on a
parallel file system, and some limit the entries of a directory: past `FILES_PER_DIR` ranks,
rank r's file goes in sub-directory ``ranks-NNNN`` (N = r // FILES_PER_DIR), so that no
directory holds more than `FILES_PER_DIR` entries up to ``FILES_PER_DIR ** 2`` ranks. The
checkpoints' rank files and the --stats/--trace parts both follow it.
"""

from __future__ import annotations

FILES_PER_DIR = 256  # rank files (or sub-directories of them) in one directory, at most


def group_name(group: int) -> str:
    """The name of the sub-directory of group ``group`` (``ranks-0007``)."""
    return f"ranks-{group:04d}"


def sharded(name: str, rank: int, ranks: int, per_dir: int = FILES_PER_DIR) -> str:
    """Where rank ``rank``'s file ``name`` of ``ranks`` goes, relative to their directory:
    ``name`` itself up to ``per_dir`` ranks, else ``ranks-NNNN/name``."""
    if ranks <= per_dir:
        return name
    return f"{group_name(rank // per_dir)}/{name}"
