"""Byte-level bundle I/O: a tar writer that splits into volumes and copies with the kernel, and a reader
that sees a volume set as one file.

Volumes are a plain byte split (``cat BUNDLE.000 BUNDLE.001 … > BUNDLE`` is the single-file bundle), so
every reader treats a set exactly like one file.  Plain ustar headers are built here, byte for byte as
:mod:`tarfile` builds them (a test compares the two), and anything else is left to tarfile; the data path is
ours, because tarfile copies through a 16 KiB Python loop and ferry copies with
``copy_file_range``/``sendfile`` instead.
"""

from __future__ import annotations

import errno
import io
import logging
import mmap
import os
import sys
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import (
    BundleFormatError,
    DiskFull,
    OutputError,
    SourceChanged,
    SourceUnreadable,
    UsageError,
)
from ..kcopy import KernelCopy
from ..storage.fs import Extent
from .volumes import volume_name

if TYPE_CHECKING:
    import tarfile

# tarfile (10 ms) is imported where a header is built the long way or a tar is read: a command that fails
# before it opens a bundle does neither

log = logging.getLogger(__name__)

BLOCK = 512
RECORD = 20 * BLOCK  # tar's default blocking: archives end on a 10 KiB record, as tar -cf writes them


#: the fields of a ferry member's ustar header after mtime, as tarfile writes them: type ``0``, no link
#: name, ``ustar\0`` ``00``, owner root:root, empty device fields and prefix, padding to the block
_USTAR_TAIL = b"0" + b"\0" * 100 + b"ustar\x0000" + b"root".ljust(32, b"\0") * 2 + b"\0" * 183
_USTAR_TAIL_SUM = sum(_USTAR_TAIL) + 8 * 32  # the checksum counts its own field as eight spaces


def tar_header(name: str, size: int, mtime: int) -> bytes:
    """The header block(s) for a regular member: byte for byte what :mod:`tarfile` writes.

    A plain ustar block is built here directly (a bundle has one per blob, and tarfile takes about 15 µs
    each); anything ustar cannot hold (a long or non-ASCII name, 8 GiB or more) goes to tarfile, which adds
    a pax extended header."""
    if size < 8**11 and 0 <= mtime < 8**11 and name.isascii() and len(name) <= 100:
        head = (
            name.encode().ljust(100, b"\0")
            + b"0000644\0"
            + b"0000000\0" * 2
            + b"%011o\0%011o\0" % (size, mtime)
        )
        return head + b"%06o\0 " % (sum(head) + _USTAR_TAIL_SUM) + _USTAR_TAIL
    import tarfile

    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = size, mtime, 0o644
    ti.uname = ti.gname = "root"
    # PAX adds an extended header only when needed (a member of 8 GiB or more), else it is plain ustar
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


class BundleOutput:
    """Writes the bundle's bytes to ``PATH.partial`` (or ``PATH.NNN.partial`` volumes, or stdout).

    Nothing carries a final name until :meth:`commit`; :meth:`abort` removes every partial file, so an
    interrupted or failed export never leaves a file that looks finished.
    """

    def __init__(self, path: Path | None, volume_size: int | None) -> None:
        if volume_size is not None and volume_size < RECORD:
            raise UsageError(f"--volume-size must be at least {RECORD} bytes")
        if path is None and volume_size is not None:
            raise UsageError("--volume-size cannot be combined with -o - (stdout)")
        self.path = path
        self.volume_size = volume_size
        self.pos = 0
        self._partials: list[Path] = []
        #: the final file names, once committed
        self.files: list[Path] = []
        self._fd: int | None = None
        self._vol_used = 0
        self._kcopy = KernelCopy()
        #: keep the partial files when a full disk or an interruption stops the export (see abort)
        self.resumable = False
        self.kept: list[Path] = []
        if path is not None and not path.parent.is_dir():
            raise OutputError(f"{path.parent}: output directory does not exist")

    def resume(self, partials: Sequence[Path], pos: int) -> None:
        """Continue the partial files an interrupted export left, from byte ``pos`` of their
        concatenation (what comes after is cut; volumes after the one holding ``pos`` are removed)."""
        assert self.path is not None and pos > 0 and not self._partials
        v = self.volume_size
        last = 0 if v is None else (pos - 1) // v
        local = pos if v is None else pos - last * v
        for stale in partials[last + 1 :]:
            stale.unlink()
        path = partials[last]
        try:
            self._fd = os.open(path, os.O_WRONLY)
            os.ftruncate(self._fd, local)
            os.lseek(self._fd, local, os.SEEK_SET)
        except OSError as e:
            raise OutputError(f"{path}: cannot continue it ({e.strerror})") from None
        self._partials = list(partials[: last + 1])
        self.pos = pos
        self._vol_used = local

    def keep_partial(self) -> list[Path]:
        """Leave the partial files for ``--resume`` (a full disk, an interruption) instead of removing
        them; returns them."""
        if self._fd is not None and self.path is not None:
            os.close(self._fd)
        self._fd = None
        kept, self._partials = self._partials, []
        return kept

    # -- volumes ---------------------------------------------------------------------------------
    def _final_names(self) -> list[Path]:
        assert self.path is not None
        if self.volume_size is None:
            return [self.path]
        return [volume_name(self.path, i) for i in range(len(self._partials))]

    def _open_next(self) -> None:
        if self._fd is not None and self.path is not None:
            os.close(self._fd)
        if self.path is None:
            self._fd = 1
            return
        final = self.path if self.volume_size is None else volume_name(self.path, len(self._partials))
        partial = final.with_name(final.name + ".partial")
        try:
            self._fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as e:
            raise OutputError(f"{partial}: cannot create ({e.strerror})") from None
        self._partials.append(partial)
        self._vol_used = 0

    def _room(self) -> int:
        if self._fd is None or (self.volume_size is not None and self._vol_used >= self.volume_size):
            self._open_next()
        return self.volume_size - self._vol_used if self.volume_size is not None else 1 << 62

    def _advance(self, n: int) -> None:
        self.pos += n
        self._vol_used += n

    # -- data ------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = min(len(view), self._room())
            assert self._fd is not None
            try:
                written = os.write(self._fd, view[:n])
            except OSError as e:
                raise self._os_error(e) from None
            self._advance(written)
            view = view[written:]

    def copy_extent(self, ext: Extent) -> None:
        """Append ``ext``'s bytes, in the kernel where it can.  A source file that vanished or shrank
        since the scan (a garbage collector running during the export) is a :class:`SourceChanged`."""
        try:
            src = os.open(ext.path, os.O_RDONLY)
        except FileNotFoundError:
            raise SourceChanged(f"{ext.path}: removed from the source while the export ran") from None
        except OSError as e:
            raise SourceUnreadable(ext.path, f"unreadable ({e.strerror})") from None
        try:
            off, left = ext.offset, ext.size
            while left:
                n = min(left, self._room())
                assert self._fd is not None
                got = self._copy(src, off, n)
                if got == 0:
                    raise SourceChanged(
                        f"{ext.path}: shrank to {off - ext.offset} of {ext.size} bytes while the export read it"
                    )
                off += got
                left -= got
                self._advance(got)
        finally:
            os.close(src)

    def _copy(self, src: int, off: int, n: int) -> int:
        assert self._fd is not None
        try:
            return self._kcopy.copy(src, off, self._fd, n)
        except OSError as e:
            raise self._os_error(e) from None

    def _os_error(self, e: OSError) -> OutputError:
        where = self._partials[-1] if self._partials else "stdout"
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFull(f"{where}: no space left on device after {self.pos} bytes")
        if e.errno == errno.EPIPE:
            return OutputError("the reader of stdout went away; nothing complete was written")
        return OutputError(f"{where}: write failed ({e.strerror})")

    # -- end -------------------------------------------------------------------------------------
    def commit(self) -> list[Path]:
        if self.path is None:
            return []
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        finals = self._final_names()
        for partial, final in zip(self._partials, finals):
            os.replace(partial, final)
        self._partials = []
        if self.volume_size is not None:
            # a previous, longer export left higher-numbered volumes: they would join this set, so remove them
            n = len(finals)
            while (stale := volume_name(self.path, n)).exists():
                stale.unlink()
                n += 1
        self.files = finals
        return finals

    def abort(self) -> None:
        """Remove every partial file; unless ``resumable`` and the failure being handled (this is called
        from an ``except`` block) is one that ``--resume`` gets past: a full disk, an interruption.  Then
        the partial files stay, under their ``.partial`` names, and ``kept`` lists them."""
        failure = sys.exc_info()[1]
        if self.resumable and self.path is not None and isinstance(failure, (DiskFull, KeyboardInterrupt)):
            self.kept = self.keep_partial()
            log.warning("kept %s for `ferry export --resume`", ", ".join(map(str, self.kept)))
            return
        if self._fd is not None and self.path is not None:
            os.close(self._fd)
        self._fd = None
        for p in self._partials:
            p.unlink(missing_ok=True)
        self._partials = []


# ---------------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class Volume:
    path: Path
    start: int
    size: int


class VolumeSet(io.RawIOBase):
    """Seekable read-only view of one or more volume files as a single byte stream."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self.volumes: list[Volume] = []
        start = 0
        for p in paths:
            size = p.stat().st_size
            self.volumes.append(Volume(p, start, size))
            start += size
        self.size = start
        self._fds = [os.open(v.path, os.O_RDONLY) for v in self.volumes]
        self._maps: dict[int, memoryview] = {}
        self._mms: list[mmap.mmap] = []
        self._pos = 0

    @property
    def name(self) -> str:
        return str(self.volumes[0].path)

    def close(self) -> None:
        for view in self._maps.values():
            view.release()
        for mm in self._mms:
            mm.close()
        self._maps, self._mms = {}, []
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        super().close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        self._pos = base + offset
        return self._pos

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self.pread_into(memoryview(buf).cast("B"), self._pos)
        self._pos += n
        return n

    def volume_at(self, offset: int) -> Volume:
        for v in self.volumes:
            if offset < v.start + v.size:
                return v
        return self.volumes[-1]

    def extents(self, offset: int, size: int) -> Iterator[tuple[int, Extent]]:
        """(volume index, extent) pieces covering ``size`` bytes from ``offset`` (short at end of data)."""
        for i, v in enumerate(self.volumes):
            if size <= 0:
                return
            if offset >= v.start + v.size:
                continue
            local = offset - v.start
            n = min(size, v.size - local)
            yield i, Extent(str(v.path), local, n)
            offset += n
            size -= n

    def pread_into(self, view: memoryview, offset: int) -> int:
        done = 0
        for i, ext in self.extents(offset, len(view)):
            got = os.preadv(self._fds[i], [view[done : done + ext.size]], ext.offset)
            done += got
            if got < ext.size:
                break
        return done

    def fd(self, volume_index: int) -> int:
        return self._fds[volume_index]

    def read_exact(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer only at the end of the data)."""
        pieces = list(self.extents(offset, size))
        if len(pieces) == 1 and size <= 1 << 16 and pieces[0][0] in self._maps:
            # small reads (tar headers) from a volume already mapped for hashing (verify): no system call,
            # so no GIL hand-off to the hashing threads for each of thousands of headers.  Nothing is
            # mapped just for this: restore and push read headers with pread and keep their memory small
            i, e = pieces[0]
            return bytes(self._maps[i][e.offset : e.offset + e.size])
        buf = bytearray(size)
        n = self.pread_into(memoryview(buf), offset)
        return bytes(buf[:n])

    def read_many(self, spans: list[tuple[int, int]]) -> Iterator[bytes | memoryview]:
        """The bytes of each (offset, size) span, in order; short at the end of the data.

        For thousands of small reads (every tar header): from the mapping when the volume is mapped, else
        one pread each, without the per-call bookkeeping of :meth:`read_exact`."""
        if len(self.volumes) != 1:
            for offset, size in spans:
                yield self.read_exact(offset, size)
            return
        view = self._maps.get(0)
        if view is not None:
            for offset, size in spans:
                yield view[offset : offset + size]
            return
        fd = self._fds[0]
        for offset, size in spans:
            yield os.pread(fd, size, offset)

    def map_all(self) -> None:
        """Map every volume now (a verifier reads all of it): later reads and pieces come from the maps."""
        for i in range(len(self.volumes)):
            if self.volumes[i].size:
                self._map(i)

    def pieces(self, offset: int, size: int) -> list[tuple[memoryview, int, int]]:
        """(mapping, offset, size) pieces for :class:`ferry.shared.hashing.HashJob`, clipped to the data present.

        Each volume is mapped read-only once, on first use; the data below the volume's size at open time
        is what gets mapped, so a member that claims more only reads short."""
        if len(self.volumes) == 1 and 0 in self._maps:
            return [(self._maps[0], offset, max(0, min(size, self.size - offset)))]
        return [(self._map(i), e.offset, e.size) for i, e in self.extents(offset, size)]

    def _map(self, i: int) -> memoryview:
        view = self._maps.get(i)
        if view is None:
            mm = mmap.mmap(self._fds[i], self.volumes[i].size, prot=mmap.PROT_READ)
            view = self._maps[i] = memoryview(mm)
            self._mms.append(mm)
        return view


def iter_members(stream: VolumeSet) -> Generator[tarfile.TarInfo, None, None]:
    """Regular-file members of the tar in order; damage becomes a :class:`BundleFormatError`."""
    import tarfile

    stream.seek(0)
    try:
        with tarfile.open(fileobj=stream, mode="r:") as tf:
            while True:
                try:
                    ti = tf.next()
                except tarfile.ReadError as e:
                    raise BundleFormatError(f"damaged tar header ({e})", offset=tf.offset) from None
                if ti is None:
                    return
                if not ti.isreg():
                    raise BundleFormatError(f"member {ti.name!r} is not a regular file", offset=ti.offset)
                yield ti
    except tarfile.ReadError as e:
        raise BundleFormatError(f"not a tar archive ({e})", offset=0) from None


__all__ = [
    "RECORD",
    "BundleOutput",
    "Volume",
    "VolumeSet",
    "iter_members",
    "padding",
    "tar_header",
]
