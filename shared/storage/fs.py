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
from pathlib import Path, PurePosixPath
from typing import Protocol

from ..errors import NotAStorageTree, SourceNotFound
from .paths import V2_SUFFIX


@dataclass(frozen=True)
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
    """A read-only tree addressed by POSIX paths relative to the ``v2`` directory."""

    description: str

    def list_dir(self, path: PurePosixPath) -> list[tuple[str, bool]]:
        """(name, is_dir) of each entry; empty when ``path`` is missing or not a directory."""
        ...

    def read(self, path: PurePosixPath, limit: int) -> bytes | None:
        """The file's bytes (at most ``limit``), or None when it is missing or not a regular file."""
        ...

    def extent(self, path: PurePosixPath) -> Extent | None:
        """Where a regular file's bytes are, or None when it is missing."""
        ...


class DirFS:
    def __init__(self, v2: Path) -> None:
        self.v2 = v2
        self.description = str(v2)

    def list_dir(self, path: PurePosixPath) -> list[tuple[str, bool]]:
        try:
            with os.scandir(self.v2 / path) as it:
                return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read(self, path: PurePosixPath, limit: int) -> bytes | None:
        try:
            with open(self.v2 / path, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    return None
                return f.read(limit)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def extent(self, path: PurePosixPath) -> Extent | None:
        p = self.v2 / path
        try:
            st = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Extent(str(p), 0, st.st_size) if stat.S_ISREG(st.st_mode) else None


class TarFS:
    """A tar of a storage tree, indexed once by reading its headers (data is skipped with seeks)."""

    def __init__(self, tar_path: Path) -> None:
        self.tar_path = tar_path
        self.description = f"{tar_path} (tar)"
        self._files: dict[PurePosixPath, tuple[int, int]] = {}
        self._dirs: dict[PurePosixPath, dict[str, bool]] = {}
        prefix = None
        try:
            with tarfile.open(tar_path, "r:") as tf:
                for ti in tf:
                    name = PurePosixPath(ti.name.lstrip("/"))
                    if name.parts and name.parts[0] == ".":
                        name = PurePosixPath(*name.parts[1:])
                    if prefix is None:
                        prefix = _find_v2_prefix(name)
                    if prefix is None or not _is_relative_to(name, prefix):
                        continue
                    rel = name.relative_to(prefix)
                    if ti.isreg():
                        self._files[rel] = (ti.offset_data, ti.size)
                        self._add(rel, False)
                    elif ti.isdir():
                        self._add(rel, True)
        except tarfile.TarError as e:
            raise NotAStorageTree(f"{tar_path}: not a readable tar ({e})") from None
        if prefix is None:
            raise NotAStorageTree(f"{tar_path}: the tar holds no docker/registry/v2 storage tree")

    def _add(self, rel: PurePosixPath, is_dir: bool) -> None:
        if rel == PurePosixPath("."):
            return
        parent = rel.parent
        siblings = self._dirs.setdefault(parent, {})
        siblings[rel.name] = is_dir or siblings.get(rel.name, False)
        if is_dir:
            self._dirs.setdefault(rel, {})
        # tars made with --no-recursion or by hand may omit directory members: imply them
        while parent != PurePosixPath("."):
            grand = parent.parent
            self._dirs.setdefault(grand, {})[parent.name] = True
            parent = grand

    def list_dir(self, path: PurePosixPath) -> list[tuple[str, bool]]:
        return list(self._dirs.get(path, {}).items())

    def read(self, path: PurePosixPath, limit: int) -> bytes | None:
        e = self.extent(path)
        if e is None:
            return None
        with open(self.tar_path, "rb") as f:
            return os.pread(f.fileno(), min(limit, e.size), e.offset)

    def extent(self, path: PurePosixPath) -> Extent | None:
        loc = self._files.get(path)
        return Extent(str(self.tar_path), loc[0], loc[1]) if loc else None


def _is_relative_to(p: PurePosixPath, prefix: PurePosixPath) -> bool:
    return prefix == PurePosixPath(".") or p.parts[: len(prefix.parts)] == prefix.parts


def _find_v2_prefix(name: PurePosixPath) -> PurePosixPath | None:
    """The directory inside the tar that plays ``v2``: ``…/docker/registry/v2`` or a top-level tree."""
    parts = name.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == V2_SUFFIX.parts:
            return PurePosixPath(*parts[: i + 3])
    if parts and parts[0] in ("repositories", "blobs"):
        return PurePosixPath(".")
    if len(parts) >= 2 and parts[0] == "v2" and parts[1] in ("repositories", "blobs"):
        return PurePosixPath("v2")
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
