"""A test helper: count the takes that fall back to the engine's general `_done`."""

from __future__ import annotations

from geode_mpi.delivery import Engine
from geode_mpi.queues import Parcel


def count_general_done(engine: Engine) -> list[int]:
    """Wrap ``engine._done`` (the general way a taken message is counted processed and
    acked); the list it returns fills with the seq of every parcel that goes through it."""
    calls: list[int] = []
    general = engine._done

    def counted(index: int, parcel: Parcel) -> None:
        calls.append(parcel.seq)
        general(index, parcel)

    engine._done = counted  # type: ignore[method-assign]
    return calls
