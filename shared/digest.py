"""Content digests (``sha256:<hex>``) and the hashing of byte ranges.

Digests are the identity of everything ferry moves, so they are parsed strictly: the grammar of the OCI
image spec with the lengths go-digest enforces (a trailing newline or upper-case hex is invalid, exactly as
Docker Distribution treats a link file).  xxh3 is only used for ferry's own bundle integrity; registry
identity is always the sha256/sha512 digest.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

import xxhash

_HEX_LEN = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(sha256|sha512):([0-9a-f]+)$")
#: bytes read per hashing step: large enough that the GIL is released for most of the work
CHUNK = 1 << 20


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``alg:hex``; raises ValueError with the offending text on anything else."""
        m = _DIGEST_RE.fullmatch(text)
        if not m or len(m.group(2)) != _HEX_LEN[m.group(1)]:
            raise ValueError(f"invalid digest {text!r}")
        return cls(m.group(1), m.group(2))

    @classmethod
    def is_valid(cls, text: str) -> bool:
        try:
            cls.parse(text)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> Any:
        return hashlib.new(self.algorithm)


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def xxh3_of(data: bytes) -> str:
    return str(xxhash.xxh3_128_hexdigest(data))


@dataclass(frozen=True)
class RangeHashes:
    size: int
    digest: str | None  # None when no content digest was asked for
    xxh3: str


def hash_range(fd: int, offset: int, size: int, algorithm: str | None = "sha256") -> RangeHashes:
    """Hash ``size`` bytes of ``fd`` from ``offset`` (see :func:`hash_pieces`)."""
    return hash_pieces([(fd, offset, size)], algorithm)


def hash_pieces(pieces: list[tuple[int, int, int]], algorithm: str | None = "sha256") -> RangeHashes:
    """Hash the (fd, offset, size) pieces in order as one byte string, with pread.

    Reading with pread lets threads share descriptors; hashlib and xxhash release the GIL on large updates,
    so calling this from a thread pool uses every core.  Stops early at a short read: the caller compares
    ``size`` with what it expected.
    """
    h = hashlib.new(algorithm) if algorithm else None
    x = xxhash.xxh3_128()
    done = 0
    total = sum(p[2] for p in pieces)
    view = memoryview(bytearray(min(CHUNK, max(total, 1))))
    for fd, offset, size in pieces:
        got = 0
        while got < size:
            n = os.preadv(fd, [view[: min(CHUNK, size - got)]], offset + got)
            if n <= 0:
                return _result(done + got, h, x, algorithm)
            part = view[:n]
            if h is not None:
                h.update(part)
            x.update(part)
            got += n
        done += got
    return _result(done, h, x, algorithm)


def _result(size: int, h: Any, x: Any, algorithm: str | None) -> RangeHashes:
    return RangeHashes(size, f"{algorithm}:{h.hexdigest()}" if h is not None else None, x.hexdigest())


__all__ = ["CHUNK", "Digest", "RangeHashes", "digest_of", "hash_pieces", "hash_range", "sha256_of", "xxh3_of"]
