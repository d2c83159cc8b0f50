"""What the parts of `Checkpointer` share: the shape of a node state, and the state its
``__init__`` sets (declared), with what one part calls of the rest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geode_mpi.core.groups import Sequencer
    from geode_mpi.core.runtime import Runtime
    from geode_mpi.core.topics import Topic
    from geode_mpi.core.workqueues import WorkQueue
    from geode_mpi.persistence import CheckpointStore
    from geode_mpi.queues import Parcel
    from geode_mpi.transport import Rooted

NodeState = Mapping[str | int, Any]


class CheckpointerState:
    """The state `Checkpointer.__init__` sets (core/checkpointing.py), declared for the parts
    it inherits (`Cutting`, checkpoint_cut.py: taking one; `Restarting`,
    checkpoint_restart.py: restoring the newest), which reach it through ``self``."""

    if TYPE_CHECKING:  # declared only: at run time the class has no annotations to resolve
        geode: Runtime
        rooted: Rooted
        topics_made: Mapping[str, Topic]
        queues_made: Mapping[int, WorkQueue]
        patterns_made: Callable[[], list[tuple[str, bool, list[int]]]]
        executors_made: Callable[[], int]
        released: Callable[[int], bool]
        sequencer: Sequencer | None
        close_geode: Callable[[float | None], None]
        store: CheckpointStore
        epoch: int
        restored_epoch: int | None
        next_epoch: int | None
        topics: dict[str, Any]
        patterns: list[tuple[str, bool, list[int]]]
        queues: dict[str, Any]
        dropped: set[str]
        executor_count: int
        skipped_streams: set[int]
        consumers: dict[str, tuple[list[int], list[int]]]
        queue_arguments: dict[str, dict[str, Any]]
        node_state: dict[int, Any]
        every: float | None
        every_messages: int | None
        last_time: float
        last_sent: int
        report: dict[str, Any] | None
        taken: int
        saved_last: tuple[int, dict[int, Parcel]] | None
        seconds: float

        # checkpointing.py's, called by a part
        def sent(self) -> int: ...

        def close(self) -> None: ...
