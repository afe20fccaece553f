"""Read-only views of a storage tree: a real directory, or an uncompressed tar of one read in place.

Both answer the same few questions (list a directory, read a small file, where are a file's bytes), so the
tree reader does not care which it walks.  A file's bytes are given as an :class:`Extent` (a path, an offset
and a size) so that writers can hand them to the kernel (``copy_file_range``/``sendfile``) without a Python
loop, whether they sit in ``blobs/.../data`` or in the middle of a tar.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..digest import SLOTS
from ..errors import NotAStorageTree, SourceNotFound, SourceUnreadable
from .paths import V2_SUFFIX


@dataclass(frozen=True, **SLOTS)
class Extent:
    """``size`` bytes of the file at ``path`` starting at ``offset``."""

    path: str
    offset: int
    size: int


class ExtentsReader(io.RawIOBase):
    """Reads the bytes of several extents one after another, as one stream."""

    def __init__(self, extents: tuple[Extent, ...]) -> None:
        super().__init__()
        self._extents = list(extents)
        self._i = 0
        self._done = 0  # bytes read of the current extent
        self._fd: int | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._i < len(self._extents):
            ext = self._extents[self._i]
            left = ext.size - self._done
            if left > 0:
                if self._fd is None:
                    self._fd = os.open(ext.path, os.O_RDONLY)
                view = memoryview(buf).cast("B")[: min(len(buf), left)]
                n = os.preadv(self._fd, [view], ext.offset + self._done)
                if n == 0:
                    raise OSError(f"{ext.path}: file shorter than expected")
                self._done += n
                return n
            self._next()
        return 0

    def _next(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._i += 1
        self._done = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().close()


class TreeFS(Protocol):
    """A read-only tree addressed by relative POSIX path strings below the ``v2`` directory ("" is v2)."""

    description: str

    def list_dir(self, path: str) -> list[tuple[str, bool]]:
        """(name, is_dir) of each entry; empty when ``path`` is missing or not a directory.  Every method
        raises :class:`~ferry.shared.errors.SourceUnreadable` for what exists but cannot be read."""
        ...

    def read(self, path: str, limit: int) -> bytes | None:
        """The file's bytes (at most ``limit``), or None when it is missing or not a regular file."""
        ...

    def read_extent(self, path: str, limit: int) -> tuple[bytes, Extent] | None:
        """Like :meth:`read`, with where the bytes are (for files shorter than ``limit``)."""
        ...

    def extent(self, path: str) -> Extent | None:
        """Where a regular file's bytes are, or None when it is missing."""
        ...

    def close(self) -> None:
        """Release what the view holds open."""
        ...


def _read_file(p: str, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of the regular file ``p``, or None when it is missing or no regular file.

    open + read + close, no stat: on a large tree these few calls per file are the walk's cost.
    O_NONBLOCK: a FIFO planted in the tree must not hang the export."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise _unreadable(p, e) from None
    try:
        return os.read(fd, limit)
    except (IsADirectoryError, BlockingIOError):
        return None
    except OSError as e:
        raise _unreadable(p, e) from None
    finally:
        os.close(fd)


class DirFS:
    def __init__(self, v2: Path) -> None:
        self.v2 = str(v2)
        self.description = self.v2

    def _abs(self, path: str) -> str:
        return f"{self.v2}/{path}" if path else self.v2

    def list_dir(self, path: str) -> list[tuple[str, bool]]:
        p = self._abs(path)
        try:
            with os.scandir(p) as it:
                return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:
            raise _unreadable(p, e) from None

    def read(self, path: str, limit: int) -> bytes | None:
        # the walk's most frequent call (two links per tag): no extent is built for it
        return _read_file(self._abs(path), limit)

    def read_extent(self, path: str, limit: int) -> tuple[bytes, Extent] | None:
        p = self._abs(path)
        data = _read_file(p, limit)
        return (data, Extent(p, 0, len(data))) if data is not None else None

    def extent(self, path: str) -> Extent | None:
        p = self._abs(path)
        try:
            st = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise _unreadable(p, e) from None
        return Extent(p, 0, st.st_size) if stat.S_ISREG(st.st_mode) else None

    def close(self) -> None:
        return None


class TarFS:
    """A tar of a storage tree, indexed once by reading its headers (data is skipped with seeks)."""

    def __init__(self, tar_path: Path) -> None:
        self.tar_path = str(tar_path)
        self.description = f"{tar_path} (tar)"
        self._files: dict[str, tuple[int, int]] = {}
        self._dirs: dict[str, dict[str, bool]] = {}
        prefix: str | None = None
        try:
            with tarfile.open(tar_path, "r:") as tf:
                for ti in tf:
                    parts = [p for p in ti.name.split("/") if p and p != "."]
                    if prefix is None:
                        prefix = _find_v2_prefix(parts)
                    if prefix is None:
                        continue
                    name = "/".join(parts)
                    if prefix:
                        if not name.startswith(prefix + "/"):
                            continue
                        name = name[len(prefix) + 1 :]
                    if not name:
                        continue
                    if ti.isreg():
                        self._files[name] = (ti.offset_data, ti.size)
                        self._add(name, False)
                    elif ti.isdir():
                        self._add(name, True)
        except tarfile.TarError as e:
            raise NotAStorageTree(f"{tar_path}: not a readable tar ({e})") from None
        if prefix is None:
            raise NotAStorageTree(f"{tar_path}: the tar holds no docker/registry/v2 storage tree")
        # one descriptor for every read: a walk reads tens of thousands of link files out of the tar
        self._fd = os.open(tar_path, os.O_RDONLY)

    def close(self) -> None:
        os.close(self._fd)

    def _add(self, rel: str, is_dir: bool) -> None:
        parent, _, name = rel.rpartition("/")
        siblings = self._dirs.setdefault(parent, {})
        siblings[name] = is_dir or siblings.get(name, False)
        if is_dir:
            self._dirs.setdefault(rel, {})
        # tars made with --no-recursion or by hand may omit directory members: imply them
        while parent:
            grand, _, pname = parent.rpartition("/")
            self._dirs.setdefault(grand, {})[pname] = True
            parent = grand

    def list_dir(self, path: str) -> list[tuple[str, bool]]:
        return list(self._dirs.get(path, {}).items())

    def read(self, path: str, limit: int) -> bytes | None:
        got = self.read_extent(path, limit)
        return got[0] if got is not None else None

    def read_extent(self, path: str, limit: int) -> tuple[bytes, Extent] | None:
        e = self.extent(path)
        if e is None:
            return None
        return os.pread(self._fd, min(limit, e.size), e.offset), e

    def extent(self, path: str) -> Extent | None:
        loc = self._files.get(path)
        return Extent(self.tar_path, loc[0], loc[1]) if loc else None


def _unreadable(path: str, e: OSError) -> SourceUnreadable:
    return SourceUnreadable(path, f"unreadable ({e.strerror or e})")


def _find_v2_prefix(parts: list[str]) -> str | None:
    """The directory inside the tar that plays ``v2``: ``…/docker/registry/v2`` or a top-level tree."""
    suffix = V2_SUFFIX.split("/")
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == suffix:
            return "/".join(parts[: i + 3])
    if parts and parts[0] in ("repositories", "blobs"):
        return ""
    if len(parts) >= 2 and parts[0] == "v2" and parts[1] in ("repositories", "blobs"):
        return "v2"
    return None


_COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5": "zstd", b"BZ": "bzip2", b"\xfd7": "xz"}


def open_tree(root: str | os.PathLike[str]) -> TreeFS:
    """Open ``root``: a registry root directory, its ``docker/registry/v2`` directory, or a tar of either."""
    p = Path(root)
    if not p.exists():
        raise SourceNotFound(
            f"{p}: no such file or directory", hint="Check the path to the registry storage."
        )
    if p.is_dir():
        for cand in (p / V2_SUFFIX, p):
            if (cand / "repositories").is_dir() or (cand / "blobs").is_dir():
                return DirFS(cand)
        raise NotAStorageTree(f"{p}: no docker/registry/v2 (repositories/, blobs/) below this directory")
    with open(p, "rb") as f:
        head = f.read(4)
    for magic, kind in _COMPRESSED_MAGIC.items():
        if head.startswith(magic):
            raise NotAStorageTree(
                f"{p}: a {kind}-compressed file; ferry reads plain tars in place",
                hint=f"Decompress it first (it is read without unpacking), e.g. with `{kind} -d`.",
            )
    if not tarfile.is_tarfile(p):
        raise NotAStorageTree(f"{p}: neither a directory nor a tar")
    return TarFS(p)


__all__ = ["DirFS", "Extent", "ExtentsReader", "TarFS", "TreeFS", "open_tree"]
