"""A file system that numbers inodes per client (FUSE, CIFS without serverino, Lustre's 32-bit
API), as one rank sees it: `os.stat` giving ``geode.lock`` another inode number."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Any


def numbered_here(real: Callable[..., os.stat_result]) -> Callable[..., os.stat_result]:
    """``real`` (`os.stat`), but a ``geode.lock``'s inode number this client's own."""

    def stat_here(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        found = real(path, *args, **kwargs)
        if not str(path).endswith("geode.lock"):
            return found
        fields = list(found)
        fields[stat.ST_INO] += 1000
        return os.stat_result(fields)

    return stat_here
