"""Back a shared slot's pages before writing to them (transport/shared.py).

MPI makes the node's segment as a sparse file in ``/dev/shm`` (MPICH's ``Allocate_shared``
reserves no space), so a copy into a page that the file system has no room for raises SIGBUS:
the process dies with no traceback. ``madvise(MADV_POPULATE_WRITE)`` (Linux 5.14 and later)
backs the pages first and fails with an error code instead; where the kernel does not know it
or there is no ``madvise``, `populate` says so and the copy goes as before.

EINVAL does not only mean a kernel before 5.14: a known advice gets it too for a mapping that
refuses it (read-only, or a special one such as VM_IO or VM_PFNMAP) or a range not aligned to a
page. So the kernel is asked once, on a private page of this process's own, where EINVAL can
only mean it does not know the advice; an EINVAL on a segment later leaves that copy unchecked,
not every later one.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from types import FrameType
from typing import Any

MADV_POPULATE_WRITE = 23  # linux/mman.h, since 5.14
PAGE = mmap.PAGESIZE

# libc's madvise(MADV_POPULATE_WRITE) as a function of (address, length) -> errno (0: backed),
# loaded at the first call, or False where the kernel or libc lacks it. A test may set it to
# stand in for a full /dev/shm.
_madvise: Any = None
_unsupported = False


def _load() -> Any:
    """libc's ``madvise``, or False where there is none (not Linux, no libc found)."""
    try:
        # The process's own symbols, libc's among them (ctypes.util.find_library would load
        # shutil and may run ldconfig: start-up cost for every rank).
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.madvise
    except (OSError, AttributeError):
        return False
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int

    def call(address: int, length: int) -> int:
        if function(address, length, MADV_POPULATE_WRITE) == 0:
            return 0
        return ctypes.get_errno()

    return call


def kernel_knows(call: Any) -> bool:
    """Whether the kernel knows MADV_POPULATE_WRITE, asked through ``call`` (`_load`'s) on a
    private, writable, page-aligned page of this process's own: there EINVAL (or ENOSYS) can
    only mean it does not."""
    page = mmap.mmap(-1, PAGE)
    try:
        view = ctypes.c_char.from_buffer(page)
        address = ctypes.addressof(view)
        del view  # (the page can only be closed without it)
        return call(address, PAGE) not in (errno.EINVAL, errno.ENOSYS)
    finally:
        page.close()


def populate(address: int, length: int) -> int:
    """Back ``length`` bytes from ``address`` (widened to whole pages) with memory of the
    file system: 0 if done, or not possible here (a kernel or libc without it, or a mapping
    that refuses it: the copy goes unchecked, as before), else the errno that says the file
    system has no room (ENOMEM, EFAULT, ENOSPC...)."""
    global _madvise, _unsupported
    if _unsupported or length <= 0:
        return 0
    if _madvise is None:
        call = _load()
        _madvise = call if call is not False and kernel_knows(call) else False
    if _madvise is False:
        _unsupported = True
        return 0
    start = address - address % PAGE
    end = -(-(address + length) // PAGE) * PAGE
    error = _madvise(start, end - start)
    if error == errno.ENOSYS:  # (a libc without the system call: no later call can work)
        _unsupported = True
        return 0
    if error == errno.EINVAL:  # (this range's mapping refuses it: this copy goes unchecked)
        return 0
    return int(error)


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning raised by the caller of this name the first
    line outside geode_mpi (the user's publish or zero_copy_array): Python 3.11 has no
    ``skip_file_prefixes``. 1 (the caller) when no such line is on this thread's stack."""
    import inspect  # here, not at the top: it loads ast and dis (1 MB), for a warning only

    here = inspect.currentframe()
    frame: FrameType | None = here.f_back if here is not None else None
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level if frame is not None else 1


def describe(error: int) -> str:
    """``error``'s name and text, for the warning."""
    return f"{errno.errorcode.get(error, str(error))}: {os.strerror(error)}"
