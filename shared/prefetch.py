"""Small items fetched on threads a little ahead of a consumer that takes them in order: what a source
whose bytes are remote (a registry, an S3 bucket) uses so that thousands of small blobs do not each cost
a round trip while the writer waits, with a bound on the bytes held."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor


class FetchAhead:
    """Over ``order``: each item for which ``size_of`` gives a size up to ``small`` is fetched (``fetch``)
    on one of ``jobs`` threads once the consumer is near, at most ``budget`` bytes held at a time (one item
    always, whatever its size).  :meth:`take` is called for the items in order, from one thread; it returns
    the bytes of an item fetched ahead, or None for one the caller reads itself.  :meth:`close` cancels what
    was not taken."""

    def __init__(
        self,
        order: Sequence[str],
        size_of: Callable[[str], int | None],
        fetch: Callable[[str], bytes],
        *,
        small: int,
        budget: int,
        jobs: int,
        name: str,
    ) -> None:
        self._order, self._size_of, self._fetch = order, size_of, fetch
        self._small, self._budget = small, budget
        self._pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix=name)
        self._ahead: dict[str, tuple[Future[bytes], int]] = {}
        self._held = 0
        self._next = 0

    def take(self, i: int) -> bytes | None:
        self._next = max(self._next, i)
        while self._next < len(self._order) and (self._held < self._budget or not self._ahead):
            x = self._order[self._next]
            self._next += 1
            size = self._size_of(x)
            if size is not None and size <= self._small and x not in self._ahead:
                self._ahead[x] = (self._pool.submit(self._fetch, x), size)
                self._held += size
        job = self._ahead.pop(self._order[i], None)
        if job is None:
            return None
        self._held -= job[1]
        return job[0].result()

    def close(self) -> None:
        for job, _ in self._ahead.values():
            job.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["FetchAhead"]
