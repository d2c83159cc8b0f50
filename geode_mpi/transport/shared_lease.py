"""Zero-copy arrays in this rank's part of the node's shared segment (`NodeShare.lease`), and
finding one again when it is published (see shared.py, "Zero-copy arrays")."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.transport.base import Frame
from geode_mpi.transport.sealed import (
    SHARED_MIN,
    Sealable,
    lease,
    nbytes_of,
    owner_of,
    process_memory,
)
from geode_mpi.transport.shared_populate import describe, populate, user_stacklevel

if TYPE_CHECKING:
    import numpy as np

    from geode_mpi.transport.slots import SlotAllocator
else:
    from geode_mpi.base.ondemand import on_first_use

    np = on_first_use("numpy", globals(), "np")

BYTES_VARIABLE = "GEODE_SHARED_BYTES"


class Lease(Sealable):
    """A zero-copy array's memory: one slot of this rank's part, taken until it is garbage."""

    __slots__ = ("slot",)

    def __init__(self, address: int, nbytes: int, slot: int) -> None:
        super().__init__(address, nbytes, sealed=False)
        self.slot = slot


class Leasing:
    """The zero-copy arrays of `NodeShare` (which inherits this), over the state it sets."""

    enabled: bool
    opened: bool
    budget: int
    me: int
    bases: list[int]
    flags: list[np.ndarray[Any, Any]]
    local: dict[int, int]
    slots: SlotAllocator | None
    leased: int
    zero_copy: int
    fallbacks: int
    _unleased: list[None]
    table_error: int
    _warned_lease: int  # bits: 1 part full warned, 2 /dev/shm full warned
    _freed: bool
    # This rank's part is backed by /dev/shm from its start up to here (`back`): a page once
    # backed stays so (tmpfs pages go only with the file), so no slot there is checked again.
    backed_to: int = 0

    if TYPE_CHECKING:

        def _map(self) -> SlotAllocator: ...  # (NodeShare's)

    def lease(self, shape: tuple[int, ...], kind: Any) -> np.ndarray[Any, Any]:
        """A writable array in a slot of this rank's part, which a publish hands to this node's
        readers without a copy (`place`); process memory when it is small, when there is no
        segment, or no room (counted in ``fallbacks``, with a warning the first time)."""
        dtype = np.dtype(kind)
        nbytes = nbytes_of(shape, dtype)
        if nbytes < SHARED_MIN:
            return lease(process_memory(nbytes), shape, dtype)
        slots = self._map() if self.enabled else None
        if slots is not None and self.table_error:  # (/dev/shm had no room for its flags)
            self.fallbacks += 1
            self._warn(nbytes, self.table_error)
            return lease(process_memory(nbytes), shape, dtype)
        taken = slots.take([nbytes], [self.me]) if slots is not None else None
        if slots is None or taken is None:
            self.fallbacks += 1
            self._warn(nbytes)
            return lease(process_memory(nbytes), shape, dtype)
        slot, (offset,) = taken
        error = self.back(offset, nbytes)  # (so that writing to it cannot raise SIGBUS)
        if error:
            slots.give_back(slot)
            self.fallbacks += 1
            self._warn(nbytes, error)
            return lease(process_memory(nbytes), shape, dtype)
        memory = Lease(self.bases[self.me] + offset, nbytes, slot)
        weakref.finalize(memory, self._unlease, slot)
        self.leased += 1
        return lease(memory, shape, dtype)

    def back(self, offset: int, length: int) -> int:
        """`populate` ``length`` bytes of this rank's part from ``offset``, less what is known
        to be backed: 0, or the errno that says /dev/shm has no room for them."""
        end = offset + length
        backed_to = self.backed_to
        if end <= backed_to:
            return 0
        start = backed_to if offset <= backed_to else offset
        error = populate(self.bases[self.me] + start, end - start)
        if not error and offset <= backed_to:
            self.backed_to = end
        return error

    def _warn(self, nbytes: int, error: int = 0) -> None:
        if self.opened and not self.enabled:
            return  # (no segment on purpose: GEODE_SHARED_BYTES=0, or a node of one rank)
        # One warning for a full part and one for a full /dev/shm: neither hides the other.
        if self._warned_lease & (2 if error else 1):
            return
        self._warned_lease |= 2 if error else 1
        why = (
            f"/dev/shm has no room for {nbytes} bytes of the node's shared segment "
            f"({describe(error)})"
            if error
            else f"this rank's part of the node's shared segment ({BYTES_VARIABLE}="
            f"{self.budget}) has no room for {nbytes} bytes"
            if self.opened
            else "the node's shared segment is made at the first topic(), and there is none yet"
        )
        warnings.warn(
            f"zero_copy_array: {why}; this array (and later ones that do not fit) is ordinary "
            "memory, copied when published",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )

    def _unlease(self, slot: int) -> None:
        # From a finalizer (any thread): this rank's own byte of its own slot, no MPI call.
        self._unleased.append(None)
        if not self._freed:
            self.flags[self.me][slot, self.me] = 0

    def _handed_over(self, near: Sequence[int], oob: Sequence[Frame]) -> tuple[int, list[int]]:
        """The slot and offsets of frames that all lie in one published zero-copy array of
        this rank's segment, flagged as held by ``near`` now; (-1, []) otherwise. A reader
        still holding an earlier publish of the same array makes it (-1, []) too: only the
        reader clears its flag, so the owner sets it only once it is clear."""
        owner = owner_of(oob[0])
        if not isinstance(owner, Lease) or not owner.sealed:
            return -1, []
        if not all(frame.flags.c_contiguous for frame in oob):
            return -1, []  # a strided view of it: its elements are copied in C order (`fill`)
        base = self.bases[self.me]
        offsets = [frame.__array_interface__["data"][0] - base for frame in oob]
        if not all(0 <= offset < self.budget for offset in offsets) or any(
            owner_of(frame) is not owner for frame in oob[1:]
        ):
            return -1, []  # a lease of an earlier Geode's segment, or frames of several
        assert self.slots is not None
        if not self.slots.mark(owner.slot, [self.local[member] for member in near]):
            return -1, []
        self.zero_copy += 1
        return owner.slot, offsets
