"""Content digests (``sha256:<hex>``) and the hashing of byte ranges.

Digests are the identity of everything ferry moves, so they are parsed strictly: the grammar of the OCI
image spec with the lengths go-digest enforces (a trailing newline or upper-case hex is invalid, exactly as
Docker Distribution treats a link file).  xxh3 is only used for ferry's own bundle integrity; registry
identity is always the sha256/sha512 digest.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys
from dataclasses import dataclass

import xxhash

#: the whole grammar, lengths included; matched with fullmatch, so a trailing newline is invalid too
_VALID_RE = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
#: bytes read per hashing step: large enough that the GIL is released for most of the work
CHUNK = 1 << 20


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    @staticmethod
    def parse(text: str) -> Digest:
        """Parse ``alg:hex``; raises ValueError with the offending text on anything else."""
        d = _parse(text) if isinstance(text, str) else None
        if d is None:
            raise ValueError(f"invalid digest {text!r}")
        return d

    @staticmethod
    def is_valid(text: str) -> bool:
        # one regex and no object: an index of 5000 tags names some 20k digests, each checked on import
        return isinstance(text, str) and _VALID_RE.fullmatch(text) is not None

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


@functools.lru_cache(maxsize=1 << 12)
def _parse(text: str) -> Digest | None:
    # the same digest is parsed once per path it names (blob, links, index entries), one image after
    # another: a few thousand recent answers catch the repeats (65536 held 20 MiB at any scale)
    if _VALID_RE.fullmatch(text) is None:
        return None
    algorithm, _, hexd = text.partition(":")
    return Digest(algorithm, hexd)


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def xxh3_of(data: bytes) -> str:
    return str(xxhash.xxh3_128_hexdigest(data))


#: ``@dataclass(frozen=True, **SLOTS)`` for the records a catalog holds by the hundred thousand: without a
#: per-instance dict each is about half the size.  Python 3.9's dataclass has no ``slots``: there they stay
#: as they were
SLOTS: dict[str, bool] = {"slots": True} if sys.version_info >= (3, 10) else {}


__all__ = ["CHUNK", "SLOTS", "Digest", "digest_of", "sha256_of", "xxh3_of"]
