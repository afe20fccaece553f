"""The window of jobs every per-item sink submits through (shared/jobs.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from ferry.shared.jobs import JobWindow

WAIT = 10.0


def test_at_most_limit_jobs_are_unfinished_and_the_feeder_waits() -> None:
    gate = threading.Event()
    started: list[int] = []
    with ThreadPoolExecutor(8) as pool:
        window = JobWindow(pool, 3)
        fed = threading.Event()

        def feed() -> None:
            for i in range(10):
                window.submit(lambda i=i: (started.append(i), gate.wait(WAIT)))
            fed.set()

        feeder = threading.Thread(target=feed)
        feeder.start()
        assert not fed.wait(0.3), "the feeder went past a full window"
        assert len(window) == 3 and sorted(started) == [0, 1, 2]
        gate.set()
        feeder.join(WAIT)
        window.drain()
        assert fed.is_set() and sorted(started) == list(range(10)) and len(window) == 0


def test_one_slow_job_does_not_hold_back_the_ones_after_it() -> None:
    # the window waits for any job to finish, not for the oldest: one request in back-off must not idle
    # every thread behind it
    slow = threading.Event()
    done: list[int] = []
    with ThreadPoolExecutor(2) as pool:
        window = JobWindow(pool, 2)
        first = window.submit(slow.wait, WAIT)
        for i in range(50):
            window.submit(done.append, i)
        assert not first.done()
        window.submit(lambda: None)
        slow.set()
        window.drain()
    assert done == list(range(50))


def test_a_failed_job_is_raised_once_by_the_next_submit_or_drain() -> None:
    def boom() -> None:
        raise OSError("disk gone")

    with ThreadPoolExecutor(2) as pool:
        window = JobWindow(pool, 4)
        window.submit(boom).exception(WAIT)
        with pytest.raises(OSError, match="disk gone"):
            window.submit(lambda: None)
        window.drain()  # raised once: the next call goes on
        window.submit(boom)
        with pytest.raises(OSError, match="disk gone"):
            window.drain()
        window.drain()


def test_cancel_drops_the_jobs_not_started() -> None:
    gate = threading.Event()
    ran: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        window = JobWindow(pool, 10)
        window.submit(gate.wait, WAIT)
        later = [window.submit(ran.append, i) for i in range(5)]
        window.cancel()
        gate.set()
        window.drain()
    assert ran == [] and all(job.cancelled() for job in later)
