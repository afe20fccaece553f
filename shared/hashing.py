"""Hashing many byte ranges on every core.

hashlib and xxhash release the GIL on large updates, so plain threads scale across cores.  What does not
scale is Python bookkeeping per item: a registry tree holds tens of thousands of small blobs.  So jobs are
handed over in batches of about 64 MiB or 256 items, and each thread reuses one read buffer.
"""

from __future__ import annotations

import collections
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional, Union, cast

import xxhash

from .digest import CHUNK, SLOTS
from .errors import FerryError
from .worker import Channel, Worker, WorkerError


@dataclass(frozen=True)
class RangeHashes:
    size: int  # bytes actually read: fewer than asked when the file is short
    digest: str | None  # None when no content digest was asked for
    xxh3: str | None  # None when not asked for
    data: bytes | None = None  # the bytes, when the job asked to keep them


#: (path or a read-only mapping, offset, size).  A path is read with pread (a file that shrinks meanwhile
#: only reads short).  A mapping is faster (no copy, about 1.5x here) but only safe on files nobody
#: truncates while ferry reads them, such as a bundle being verified: reading a page past a file's end is
#: SIGBUS, not an error.  Map a file once: unmapping many small regions costs TLB shootdowns.
Piece = tuple[Union[str, memoryview], int, int]
#: bytes hashed per call on mapped data: hashlib releases the GIL for the whole call
MAP_STEP = 4 << 20


@dataclass(frozen=True, **SLOTS)
class HashJob:
    key: str
    pieces: Sequence[Piece]
    size: int
    #: content digest algorithm ("sha256"), or None for xxh3 only
    algorithm: str | None
    #: also compute xxh3 (the bundle checksum); a verifier checking sha256 against the name can skip it
    xxh3: bool = True
    #: return the bytes read (one file piece): for small content a writer can use instead of reading again
    keep: bool = False


#: called on a worker thread, under the pool's lock: (job, hashes or the OSError that stopped reading)
ResultCallback = Callable[[HashJob, Union[RangeHashes, OSError]], None]


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

    def abort(self) -> None:
        """Drop what has not started; wait for what has."""
        self._pending = []
        self._pool.shutdown(wait=True, cancel_futures=True)

    def finish(self) -> None:
        """Hash what is pending and wait for everything; re-raises an exception of a callback."""
        self._flush()
        try:
            for f in self._futures:
                f.result()
        finally:
            self._pool.shutdown(cancel_futures=True)


class HashProcess:
    """Hashes jobs in a forked child process while this process goes on with its own Python work.

    Threads cannot do this: a walk of a storage tree is tens of thousands of tiny system calls, and
    hashing threads beside it took the GIL from it so often that the two together ran slower than one
    after the other (2.7 s against 1.7 s on a 5000-tag tree).  A child has its own interpreter (a
    :class:`~ferry.shared.worker.Worker`).  Jobs go to it in batches; results come back in batches, read by a
    thread here as they arrive (so the child never waits on a full pipe, and results are usable before
    the last one is in).

    Contract: :meth:`add` any number of jobs (one file piece each: the child reads it itself; ``keep``
    returns the bytes too); :meth:`collect` hands the results in so far to ``on_result``, on the calling
    thread; :meth:`finish` waits for the rest and hands them over too, and raises if the child failed;
    :meth:`abort` stops the child.  Create it before this process starts threads: a fork copies only the
    thread that forks.
    """

    BATCH = 256

    def __init__(self, on_result: ResultCallback) -> None:
        self._worker = Worker(_hash_child, name="ferry-hash")
        self._on_result = on_result
        self._jobs: dict[str, HashJob] = {}
        self._batch: list[tuple[str, str, int, int, str | None, bool, bool]] = []
        self._error: BaseException | None = None
        self._arrived: collections.deque[list[Any]] = collections.deque()
        self._reader = threading.Thread(target=self._drain, name="ferry-hash-results", daemon=True)
        self._reader.start()
        self._outbox: queue.SimpleQueue[list[Any] | None] = queue.SimpleQueue()
        self._feeder = threading.Thread(target=self._feed, name="ferry-hash-jobs", daemon=True)
        self._feeder.start()

    def add(self, job: HashJob) -> None:
        (path, offset, size), *rest = job.pieces
        assert isinstance(path, str) and not rest, "a hashing process reads one file piece per job"
        self._jobs[job.key] = job
        self._batch.append((job.key, path, offset, size, job.algorithm, job.xxh3, job.keep))
        if len(self._batch) >= self.BATCH:
            self._send()

    def _send(self) -> None:
        if self._batch:
            self._outbox.put(self._batch)
            self._batch = []

    def _feed(self) -> None:
        # the pipe holds a few batches; the walk finds blobs faster than one core hashes them, and must
        # not wait for it: jobs queue here, and this thread blocks on the pipe instead
        while True:
            batch = self._outbox.get()
            self._worker.send(batch)
            if batch is None:
                return

    def _drain(self) -> None:
        # only receive here: handling results is Python work per blob, which would take the GIL from
        # the walk this process is busy with; :meth:`collect` does it when the caller is ready
        try:
            for got in self._worker.messages():
                self._arrived.append(got)
        except (FerryError, WorkerError) as e:
            self._error = e
        except Exception as e:  # the pipe closed under this thread by abort(): nothing left to report
            self._error = WorkerError(f"hashing process: {type(e).__name__}: {e}")

    def collect(self) -> None:
        """Hand every result that has arrived so far to ``on_result`` (on the calling thread)."""
        while self._arrived:
            for key, size, digest, xxh3, err, why, data in self._arrived.popleft():
                result = OSError(err, why) if why is not None else RangeHashes(size, digest, xxh3, data)
                # a job is let go once answered: a walk of 100k tags sends some 300k of them
                self._on_result(self._jobs.pop(key), result)

    def finish(self) -> None:
        """Return once every result was handed to ``on_result``; raises if the child failed."""
        self._send()
        self._outbox.put(None)
        self._feeder.join()
        self._reader.join()
        if self._error is not None:
            raise self._error
        self.collect()

    def abort(self) -> None:
        self._outbox.put(None)
        self._worker.abort()
        self._feeder.join()
        self._reader.join()


def _hash_child(channel: Channel) -> None:
    view = memoryview(bytearray(CHUNK))
    while (batch := channel.recv()) is not None:
        out: list[tuple[str, int, str | None, str | None, int, str | None, bytes | None]] = []
        for key, path, offset, size, alg, xxh3, keep in batch:
            try:
                r = _hash(HashJob(key, ((path, offset, size),), size, alg, xxh3, keep), view)
                out.append((key, r.size, r.digest, r.xxh3, 0, None, r.data))
            except OSError as e:
                out.append((key, 0, None, None, e.errno or 0, e.strerror or str(e), None))
        channel.send(out)


#: direct constructors: ``hashlib.new`` costs a name lookup per call, and verify makes one per member
_NEW: dict[str, Callable[[], Any]] = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


def _new_hash(alg: str) -> Any:
    return _NEW[alg]() if alg in _NEW else hashlib.new(alg)


def _hash(job: HashJob, view: memoryview) -> RangeHashes:
    alg = job.algorithm
    h: Any = _new_hash(alg) if alg else None
    path, offset, size = job.pieces[0] if job.pieces else ("", 0, 0)
    if job.keep and len(job.pieces) == 1 and isinstance(path, str):
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        if h is not None:
            h.update(data)
        return RangeHashes(
            len(data),
            f"{alg}:{h.hexdigest()}" if h is not None else None,
            xxhash.xxh3_128_hexdigest(data) if job.xxh3 or h is None else None,
            data,
        )
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
    """Hash straight from a mapping of the page cache: no copy into a buffer.  With two hashes, in steps
    that stay in the cache between the first and the second."""
    step = MAP_STEP if h is None or x is None else 1 << 20
    for i in range(offset, offset + size, step):
        with view[i : min(i + step, offset + size)] as part:
            if h is not None:
                h.update(part)
            if x is not None:
                x.update(part)


#: (key, pieces of a mapping, content digest algorithm or None, its expected hex or None)
Check = tuple[str, Sequence[tuple[memoryview, int, int]], Optional[str], Optional[str]]
#: key -> (algorithm, actual hex) of every content digest that did not match
Mismatches = dict[str, tuple[str, str]]
#: key -> the xxh3-128 of what was hashed, for every check: compared with the trailer by the caller
Xxh3s = dict[str, str]


def check_mapped(
    checks: Sequence[Check], jobs: int, on_done: Callable[[int, int], None] | None = None
) -> tuple[Mismatches, Xxh3s]:
    """Hash each check's mapped pieces on ``jobs`` threads: always xxh3-128 (every member's bytes are
    compared with the trailer), and the content digest where one is given.  Returns the content digest
    mismatches and every member's xxh3.

    Made for a verifier, where almost everything matches: per item there is no result object, no lock and
    no callback, only a comparison and one dict entry (a bundle of 5000 tags has 15k members, half of them
    under 1 KiB, so more bookkeeping would cost more than the hashing).  ``on_done(bytes, items)`` runs on
    the calling thread as batches complete, in order."""
    total = sum(n for _, pieces, _, _ in checks for _, _, n in pieces)
    # a few batches per thread and percent: small enough that the last one does not leave a core idle
    limit = max(4 << 20, min(64 << 20, total // (max(1, jobs) * 16)))
    batches: list[list[Check]] = [[]]
    size = 0
    for c in checks:
        if size >= limit or len(batches[-1]) >= 2048:
            batches.append([])
            size = 0
        batches[-1].append(c)
        size += sum(n for _, _, n in c[1])
    bad: Mismatches = {}
    xxh3s: Xxh3s = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="ferry-check") as pool:
        futures = [pool.submit(_check_batch, batch) for batch in batches if batch]
        done_bytes = done_items = 0
        for f in futures:
            failed, xs, n_bytes, n_items = f.result()
            bad.update(failed)
            xxh3s.update(xs)
            done_bytes += n_bytes
            done_items += n_items
            if on_done is not None:
                on_done(done_bytes, done_items)
    return bad, xxh3s


#: what a :class:`CheckProcess` child plans: the checks, and a note (picklable) on what they cover
Planner = Callable[[], tuple[Sequence[Check], Any]]


class CheckProcess:
    """:func:`check_mapped` on one core in a forked child (a :class:`~ferry.shared.worker.Worker`), for work that
    must overlap this process's own Python (decoding a bundle index) without sharing its GIL.

    ``plan`` runs in the child, so that planning too is off this process's path; the mappings it points
    the checks into are inherited (map them before).  :meth:`result` waits for the mismatches and the
    plan's note (it raises the child's error if it failed); :meth:`abort` stops the child."""

    def __init__(self, plan: Planner) -> None:
        self._worker = Worker(_check_child, plan, name="ferry-check")

    def result(self) -> tuple[tuple[Mismatches, Xxh3s], Any]:
        return cast(tuple[tuple[Mismatches, Xxh3s], Any], self._worker.result())

    def abort(self) -> None:
        self._worker.abort()


def _check_child(channel: Channel, plan: Planner) -> tuple[tuple[Mismatches, Xxh3s], Any]:
    checks, note = plan()
    return check_mapped(checks, 1), note


def _check_batch(
    batch: list[Check],
) -> tuple[list[tuple[str, tuple[str, str]]], list[tuple[str, str]], int, int]:
    failed: list[tuple[str, tuple[str, str]]] = []
    xs: list[tuple[str, str]] = []
    n_bytes = 0
    for key, pieces, alg, want in batch:
        h = _new_hash(alg) if alg is not None else None
        x = xxhash.xxh3_128()
        for view, offset, size in pieces:
            _hash_mapped(view, offset, size, h, x)
            n_bytes += size
        xs.append((key, x.hexdigest()))
        if h is not None and alg is not None:
            got = h.hexdigest()
            if got != want:
                failed.append((key, (alg, got)))
    return failed, xs, n_bytes, len(batch)


__all__ = [
    "Check",
    "CheckProcess",
    "HashJob",
    "HashPool",
    "HashProcess",
    "Mismatches",
    "Piece",
    "RangeHashes",
    "ResultCallback",
    "Xxh3s",
    "check_mapped",
]
