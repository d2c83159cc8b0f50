"""Node names, and which rank hosts each node: node k lives on rank k mod size."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence

from geode_mpi.errors import UnknownNodeError, whole

EMBEDDED_NODES = 4  # nodes in a one-rank world when none are named
# The most nodes a job may have. Measured in one process: about 2.5 KB and 30 us per node
# hosted, so a million nodes on one rank take 2.5 GB and a minute to start; far more is a
# mistake (a count meant as messages or bytes), refused before the memory is gone.
MAX_NODES = 1_000_000
# What a node may be looked up by as given in the send paths' caches (keyed by name and index):
# a dict finds node 1's lane under 1.0, True or numpy.float64(1) too (equal to 1, with its
# hash), so anything else goes through `Placement.key` first.
NODE_KEYS = (str, int)


def node_names(nodes: int | Sequence[str] | None, size: int) -> tuple[str, ...]:
    """The job's node names.

    Args:
        nodes: None for the default (``node0``..``node{size-1}``, or ``node0``..``node3`` in a
            one-rank world), a count, or a sequence of distinct names.
        size: the number of ranks.

    Raises:
        ValueError: fewer nodes than ranks, duplicate or empty names.
        TypeError: nodes is not an int, a sequence of str or None.
    """
    if nodes is None:
        count = size if size > 1 else EMBEDDED_NODES
        return tuple(f"node{k}" for k in range(count))
    if isinstance(nodes, bool):
        raise TypeError(f"nodes must be an int, a list of names or None, got {nodes!r}")
    counted = whole(nodes)  # an int, or a numpy integer
    if counted is not None:
        nodes = counted
    if isinstance(nodes, int):
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        _check_count(nodes)
        names: tuple[str, ...] = tuple(f"node{k}" for k in range(nodes))
    elif isinstance(nodes, str) or not isinstance(nodes, Sequence):
        raise TypeError(f"nodes must be an int, a list of names or None, got {nodes!r}")
    else:
        _check_count(len(nodes))
        names = tuple(nodes)
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"node names must be non-empty strings, got {name!r}")
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"node names must be unique, got {name!r} twice")
            seen.add(name)
    if len(names) < size:
        raise ValueError(
            f"nodes gives {len(names)} node(s), but the job has {size} rank(s): every rank "
            f"must host at least one node (give at least {size}, or leave nodes=None)"
        )
    return names


def _check_count(count: int) -> None:
    if count > MAX_NODES:
        raise ValueError(
            f"nodes must be at most {MAX_NODES:,} per job, got {count:,} (each node hosted "
            "takes about 2.5 KB of its rank's memory and 30 us to start; a node is an address "
            "for messages, not a task or a data item: use a work queue for many tasks)"
        )


class Placement:
    """Maps node names and indices to the ranks that host them."""

    def __init__(self, names: tuple[str, ...], size: int) -> None:
        self.names = names
        self.size = size
        self._index = {name: k for k, name in enumerate(names)}

    def index(self, node: str | int, argument: str = "node") -> int:
        """The index of a node given by name or index.

        Raises:
            UnknownNodeError: no such node in this job.
        """
        if isinstance(node, str):
            found = self._index.get(node)
            if found is not None:
                return found
        elif not isinstance(node, bool) and hasattr(node, "__index__"):
            number = operator.index(node)  # ints, and numpy integers from loops over ranks
            if 0 <= number < len(self.names):
                return number
        raise UnknownNodeError(node, self.names, argument)

    def key(self, node: object, argument: str) -> int | None:
        """A node that is not a str or an int (`NODE_KEYS`) as the send paths' caches are
        looked up by: its index (a numpy integer's), or None for None (the caller says that
        a send needs a dest).

        Raises:
            UnknownNodeError: not a node of this job: a float or a bool too, even one equal to
                an index (``dest=1.0``, ``dest=True``), which a cache would find.
        """
        return None if node is None else self.index(node, argument)  # type: ignore[arg-type]

    def indices(self, nodes: object, argument: str, each: str) -> list[int]:
        """The indices of a list of nodes (argument ``argument``, each one a ``each``).

        A single name or index is refused, not read as a list of one: a str would be read
        as a list of letters ("unknown member 'n'"), and `group`, `topic`, `work_queue` and
        `executor` all take lists.

        Raises:
            TypeError: ``nodes`` is not a list (tuple, range, ...) of nodes.
            UnknownNodeError: one of them is not a node of this job.
        """
        if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Iterable):
            raise TypeError(
                f"{argument} must be a list of nodes, got {nodes!r}"
                + (f" (a single node: [{nodes!r}])" if nodes is not None else "")
            )
        return [self.index(node, each) for node in nodes]

    def one_or_more(self, nodes: object, argument: str, each: str) -> list[int]:
        """`indices`, where a single node (a name or an index) also stands for a list of one:
        the (un)subscribe calls' ``nodes``.

        Raises:
            TypeError: ``nodes`` is neither a node nor a list of nodes.
            UnknownNodeError: one of them is not a node of this job.
        """
        if isinstance(nodes, str) or whole(nodes) is not None:
            return [self.index(nodes, each)]  # type: ignore[arg-type]
        if isinstance(nodes, (bytes, bool)) or not isinstance(nodes, Iterable):
            raise TypeError(f"{argument} must be a node or a list of nodes, got {nodes!r}")
        return [self.index(node, each) for node in nodes]

    def rank_of(self, index: int) -> int:
        """The rank that hosts node ``index``."""
        return index % self.size

    @property
    def hosting(self) -> int:
        """How many ranks host nodes: all of them, or fewer in a job of fewer nodes than
        ranks (ranks 0 to this - 1)."""
        return min(self.size, len(self.names))

    def hosted_by(self, rank: int) -> tuple[int, ...]:
        """Indices of the nodes that rank ``rank`` hosts, in order."""
        return tuple(range(rank, len(self.names), self.size))
