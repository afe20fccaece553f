"""Hashing many byte ranges on every core.

hashlib and xxhash release the GIL on large updates, so plain threads scale across cores.  What does not
scale is Python bookkeeping per item: a registry tree holds tens of thousands of small blobs.  So jobs are
handed over in batches of about 64 MiB or 256 items, and each thread reuses one read buffer.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import xxhash

from .digest import CHUNK


@dataclass(frozen=True)
class RangeHashes:
    size: int  # bytes actually read: fewer than asked when the file is short
    digest: str | None  # None when no content digest was asked for
    xxh3: str | None  # None when not asked for


#: (path or a read-only mapping, offset, size).  A path is read with pread (a file that shrinks meanwhile
#: only reads short).  A mapping is faster (no copy, about 1.5x here) but only safe on files nobody
#: truncates while ferry reads them, such as a bundle being verified: reading a page past a file's end is
#: SIGBUS, not an error.  Map a file once: unmapping many small regions costs TLB shootdowns.
Piece = tuple[str | memoryview, int, int]
#: bytes hashed per call on mapped data: hashlib releases the GIL for the whole call
MAP_STEP = 4 << 20


@dataclass(frozen=True)
class HashJob:
    key: str
    pieces: tuple[Piece, ...]
    size: int
    #: content digest algorithm ("sha256"), or None for xxh3 only
    algorithm: str | None
    #: also compute xxh3 (the bundle checksum); a verifier checking sha256 against the name can skip it
    xxh3: bool = True


#: called on a worker thread, under the pool's lock: (job, hashes or the OSError that stopped reading)
ResultCallback = Callable[[HashJob, RangeHashes | OSError], None]


class HashPool:
    BATCH_BYTES = 64 << 20
    BATCH_ITEMS = 256

    def __init__(self, jobs: int, on_result: ResultCallback) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="ferry-hash")
        self._futures: list[Future[None]] = []
        self._pending: list[HashJob] = []
        self._pending_bytes = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._on_result = on_result

    def add(self, job: HashJob) -> None:
        self._pending.append(job)
        self._pending_bytes += job.size
        if self._pending_bytes >= self.BATCH_BYTES or len(self._pending) >= self.BATCH_ITEMS:
            self._flush()

    def flush(self) -> None:
        """Hand what is pending to the threads now (``add`` waits for a full batch)."""
        self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._futures.append(self._pool.submit(self._run, self._pending))
            self._pending, self._pending_bytes = [], 0

    def _buffer(self) -> memoryview:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = memoryview(bytearray(CHUNK))
        return buf

    def _run(self, batch: list[HashJob]) -> None:
        view = self._buffer()
        for job in batch:
            result: RangeHashes | OSError
            try:
                result = _hash(job, view)
            except OSError as e:
                result = e
            with self._lock:
                self._on_result(job, result)

    def finish(self) -> None:
        """Hash what is pending and wait for everything; re-raises an exception of a callback."""
        self._flush()
        try:
            for f in self._futures:
                f.result()
        finally:
            self._pool.shutdown(cancel_futures=True)


def _hash(job: HashJob, view: memoryview) -> RangeHashes:
    h: Any = hashlib.new(job.algorithm) if job.algorithm else None
    x: Any = xxhash.xxh3_128() if job.xxh3 or h is None else None
    done = 0
    for where, offset, size in job.pieces:
        if isinstance(where, memoryview):
            _hash_mapped(where, offset, size, h, x)
            done += size
            continue
        fd = os.open(where, os.O_RDONLY)
        try:
            got = 0
            while got < size:
                n = os.preadv(fd, [view[: min(len(view), size - got)]], offset + got)
                if n <= 0:
                    break
                part = view[:n]
                if h is not None:
                    h.update(part)
                if x is not None:
                    x.update(part)
                got += n
        finally:
            os.close(fd)
        done += got
        if got < size:
            break
    return RangeHashes(
        done,
        f"{job.algorithm}:{h.hexdigest()}" if h is not None else None,
        x.hexdigest() if x is not None else None,
    )


def _hash_mapped(view: memoryview, offset: int, size: int, h: Any, x: Any) -> None:
    """Hash straight from a mapping of the page cache: no copy into a buffer."""
    for i in range(offset, offset + size, MAP_STEP):
        with view[i : min(i + MAP_STEP, offset + size)] as part:
            if h is not None:
                h.update(part)
            if x is not None:
                x.update(part)


__all__ = ["HashJob", "HashPool", "Piece", "RangeHashes", "ResultCallback"]
