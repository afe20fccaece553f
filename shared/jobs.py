"""A window of jobs in flight on a thread pool: what every sink that submits per item uses.

A sink is fed far faster than its threads can write (a bundle's 340k small blobs arrive in seconds; each
is a request or a file on the other side).  Submitting them all at once queues one future, one closure and
one content record per item: at 100k tags that alone was 550 MiB of a push.  A window keeps at most
``limit`` jobs unfinished and makes the feeder wait until one of them finishes (any one: waiting for the
oldest would let one slow job, a retry with back-off, idle every thread behind it), so memory follows the
window, not the registry's size.

Contract: :meth:`submit`, :meth:`drain` and :meth:`cancel` are called from one thread (the feeder); the
pool's threads never submit.  A job's exception is raised by the first submit or drain after it
finished (the first one only); jobs after it keep running (a sink records per-item failures itself and
raises only for what must stop the run).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, wait
from typing import Any


class JobWindow:
    def __init__(self, pool: Executor, limit: int) -> None:
        self._pool = pool
        self._limit = max(1, limit)
        self._slots = threading.Semaphore(self._limit)
        self._lock = threading.Lock()
        self._running: set[Future[Any]] = set()
        self._error: BaseException | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        self._raise()
        self._slots.acquire()
        try:
            job = self._pool.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._running.add(job)
        # after the add: a job already done runs the callback here, at once
        job.add_done_callback(self._finished)
        return job

    def _finished(self, job: Future[Any]) -> None:
        with self._lock:
            self._running.discard(job)
            if not job.cancelled() and self._error is None:
                self._error = job.exception()
        self._slots.release()

    def _raise(self) -> None:
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def drain(self) -> None:
        """Wait for every job submitted so far."""
        while True:
            with self._lock:
                running = list(self._running)
            if not running:
                break
            wait(running)
        self._raise()

    def cancel(self) -> None:
        """Cancel the jobs not yet started and forget the failures (a sink's abort)."""
        with self._lock:
            running = list(self._running)
        for job in running:
            job.cancel()
        with self._lock:
            self._error = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._running)


__all__ = ["JobWindow"]
