"""The one worker helper every forked child uses: errors come back whole, children die with their parent
and never hold the caller's stdout."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest

from ferry.shared.errors import DiskFull
from ferry.shared.worker import Channel, Worker, WorkerError


def _echo(channel: Channel) -> int:
    n = 0
    while (msg := channel.recv()) is not None:
        channel.send(msg * 2)
        n += 1
    return n


def _fails_like_a_full_disk(channel: Channel) -> None:
    raise DiskFull("/data/x: no space left on device", hint="free some")


def _crashes(channel: Channel) -> None:
    raise KeyError("bug")


def test_payloads_and_result() -> None:
    w = Worker(_echo, name="echo")
    for i in range(3):
        w.send(i)
        assert w.recv() == 2 * i
    w.send(None)
    assert w.result() == 3


def test_a_ferry_error_keeps_its_class_code_and_hint() -> None:
    w = Worker(_fails_like_a_full_disk, name="full")
    with pytest.raises(DiskFull) as e:
        w.result()
    assert e.value.code == "disk-full" and e.value.hint == "free some" and "no space" in e.value.message


def test_anything_else_is_a_worker_error() -> None:
    with pytest.raises(WorkerError, match="KeyError"):
        Worker(_crashes, name="bug").result()


def test_abort_stops_a_child_that_waits() -> None:
    w = Worker(_echo, name="echo")
    pid = w.pid
    assert pid is not None
    w.abort()
    assert not _running(pid)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


CHILD_PROGRAM = """
import os, sys, time
from ferry.shared.worker import Worker

def wait(channel):
    channel.recv()

w = Worker(wait, name="waiter")
print(w.pid, flush=True)
time.sleep(60)
"""


def test_a_child_dies_with_its_killed_parent_and_releases_stdout() -> None:
    """The parent is killed with SIGKILL: no cleanup of its own runs.  Its child must end anyway (death
    signal, EOF), and the parent's stdout pipe must reach EOF (the child does not hold it)."""
    p = subprocess.Popen([sys.executable, "-c", CHILD_PROGRAM], stdout=subprocess.PIPE, cwd=os.getcwd())
    assert p.stdout is not None
    child = int(p.stdout.readline())
    p.kill()
    p.wait(10)
    # EOF, within a bound: nobody holds the write end any more (the old child did, and a read hung)
    ready, _, _ = select.select([p.stdout], [], [], 10)
    assert ready and p.stdout.read() == b""
    deadline = time.monotonic() + 10
    while _running(child):
        assert time.monotonic() < deadline, "the child outlived its killed parent"
        time.sleep(0.05)
