"""Catch a running ferry at a point of its work, without racing it.

A test that polls "has the partial reached 10 MiB?" and then sends a signal races the process: on a busy
machine the test can be off the CPU for longer than the rest of a small export takes, and the signal then
meets a process that already finished.  ``stopped_when`` looks only while the process is frozen
(SIGSTOP), so what it saw is still true when the caller signals it; the caller resumes it with
``resume`` (a pending SIGINT or SIGTERM is delivered then) or kills it where it stands."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def stopped_when(
    p: subprocess.Popen[bytes] | subprocess.Popen[str], reached: Callable[[], bool], timeout: float = 60
) -> None:
    """Return with ``p`` stopped at the first look at which ``reached()`` holds; fail if ``p`` ends or
    ``timeout`` passes first.  Between looks it runs for about half a millisecond."""
    deadline = time.monotonic() + timeout
    while True:
        assert p.poll() is None, "the process ended before it reached the point it was to be caught at"
        assert time.monotonic() < deadline, "the process did not reach the point in time"
        os.kill(p.pid, signal.SIGSTOP)
        while _state(p.pid) not in "Tt":
            time.sleep(0.0001)
        if reached():
            return
        os.kill(p.pid, signal.SIGCONT)
        time.sleep(0.0005)


def resume(p: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    os.kill(p.pid, signal.SIGCONT)
