"""Copying byte ranges between files in the kernel, on any pair of file systems.

``copy_file_range`` is the fastest way (no copy through user space; a reflink where the file system can),
but it refuses more than it takes: across two file systems (``EXDEV``: a bundle on a USB disk or a tmpfs,
the target on ext4), into a pipe, on file systems without it.  ``sendfile`` covers most of those, and plain
``pread``/``write`` all of them.  :class:`KernelCopy` steps down once, on the first refusal, and stays
there; every writer that copies by extent uses it (the bundle writer on export, the storage-tree writer on
restore), so a pair of file systems that works for one works for the other.

Errors that are not a refusal of the method (``ENOSPC``, ``EIO``, …) are raised as they are, for the
caller to name (a full disk must say so, not hide behind a method that did not apply).
"""

from __future__ import annotations

import errno
import os

#: errors that mean "not this way", never "this went wrong"
_REFUSED = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.ESPIPE})
_METHODS = ("copy_file_range", "sendfile", "readwrite")
#: bytes per call: large enough that the call's cost vanishes, small enough to report progress
STEP = 1 << 30
READ_STEP = 1 << 20


class KernelCopy:
    """Copies to a destination at its current file position.  One per destination kind (file, pipe):
    the method it settled on is kept for the next copies."""

    def __init__(self) -> None:
        self.method = _METHODS[0]

    def copy(self, src: int, offset: int, dst: int, n: int) -> int:
        """Copy up to ``n`` bytes of ``src`` from ``offset`` to ``dst``; returns how many (0: ``src`` ends
        before ``offset``).  Raises OSError for anything but a method the kernel refuses."""
        n = min(n, STEP)
        while True:
            try:
                if self.method == "copy_file_range":
                    return os.copy_file_range(src, dst, n, offset)
                if self.method == "sendfile":
                    return os.sendfile(dst, src, offset, n)
                return _read_write(src, offset, dst, n)
            except OSError as e:
                if e.errno not in _REFUSED or self.method == _METHODS[-1]:
                    raise
                self.method = _METHODS[_METHODS.index(self.method) + 1]

    def copy_all(self, src: int, offset: int, dst: int, n: int) -> int:
        """Copy ``n`` bytes; returns how many were copied (fewer only when ``src`` is shorter)."""
        done = 0
        while done < n:
            got = self.copy(src, offset + done, dst, n - done)
            if got == 0:
                break
            done += got
        return done


def _read_write(src: int, offset: int, dst: int, n: int) -> int:
    data = os.pread(src, min(n, READ_STEP), offset)
    view = memoryview(data)
    while view:
        view = view[os.write(dst, view) :]
    return len(data)


__all__ = ["KernelCopy"]
